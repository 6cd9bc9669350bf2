"""NPO config: interventions and gate fields fail with one line naming the field; the plateau rule."""

import pytest

from npo.algo.interventions import AUTO, parse_interventions, plateaued
from npo.config.run import load_config
from npo.errors import UserError

NPO = ["method=npo", "train.steps=100"]


def iv(text):
    return f"npo.interventions={text}"


@pytest.mark.parametrize("sets,where", [
    ([iv("[{kind: warmup, lookahead: 5}]")], "npo.interventions[0].kind"),
    ([iv("[{kind: plateau, at_step: 10, lookahead: 0}]")], "npo.interventions[0].lookahead"),
    ([iv("[{kind: plateau, at_step: 10, lookahead: 5, window: -1}]")], "npo.interventions[0].window"),
    ([iv("[{kind: plateau, at_step: soon, lookahead: 5}]")], "npo.interventions[0].at_step"),
    ([iv("[{kind: plateau, at_step: 10, lookahead: 5, delta: 3}]")], "npo.interventions[0].delta"),
    ([iv("[{kind: plateau, at_step: 10, lookahead: 5}, {kind: bootstrap, lookahead: 5}]")],
     "npo.interventions[1].kind"),
    ([iv("[{kind: bootstrap, at_step: 4, lookahead: 5}]")], "npo.interventions[0].at_step"),
    ([iv("[{kind: plateau, at_step: 10, lookahead: 20}, {kind: plateau, at_step: 25, lookahead: 5}]")],
     "npo.interventions[1].at_step"),
    ([iv("[{kind: plateau, at_step: 90, lookahead: 20}]")], "npo.interventions[0]"),
    ([iv("[5]")], "npo.interventions[0]"),
    ([iv("[]")], "npo.interventions"),
    ([iv("[{kind: bootstrap, lookahead: 5}]"), "npo.replace_slot=8"], "npo.replace_slot"),
    ([iv("[{kind: bootstrap, lookahead: 5}]"), "npo.tau=0"], "npo.tau"),
    ([iv("[{kind: bootstrap, lookahead: 5}]"), "npo.source=teacher"], "npo.source"),
    ([iv("[{kind: bootstrap, lookahead: 5}]"), "npo.guide_loss=ppo"], "npo.guide_loss"),
    ([iv("[{kind: bootstrap, lookahead: 5}]"), "npo.guide_mode=later"], "npo.guide_mode"),
    ([iv("[{kind: bootstrap, lookahead: 5}]"), "npo.k=0"], "npo.k"),
])
def test_bad_npo_settings_name_their_field(sets, where):
    with pytest.raises(UserError) as e:
        load_config(None, NPO + sets)
    msg = str(e.value)
    assert f"{where}:" in msg and "\n" not in msg


def test_only_npo_intervenes():
    with pytest.raises(UserError, match="npo.interventions: only method npo"):
        load_config(None, ["train.steps=100", iv("[{kind: bootstrap, lookahead: 5}]")])


def test_interventions_parse_with_defaults():
    ivs = parse_interventions([{"kind": "bootstrap", "lookahead": 30},
                               {"kind": "plateau", "at_step": 150, "lookahead": 40, "window": 20},
                               {"kind": "plateau", "at_step": AUTO, "lookahead": 10}], steps=300)
    assert [(i.kind, i.at_step, i.lookahead, i.window) for i in ivs] == [
        ("bootstrap", 0, 30, 30), ("plateau", 150, 40, 20), ("plateau", AUTO, 10, 10)]
    assert ivs[2].auto and not ivs[1].auto


def test_plateau_rule():
    assert not plateaued([0.1] * 7, window=4, min_gain=0.01)  # needs 2 windows of history
    assert plateaued([0.1] * 8, window=4, min_gain=0.01)
    assert not plateaued([0.1] * 4 + [0.2] * 4, window=4, min_gain=0.01)  # still climbing
    assert plateaued([0.1] * 4 + [0.105] * 4, window=4, min_gain=0.01)  # gain 0.005 < 0.01
    assert plateaued([0.3] * 4 + [0.2] * 4, window=4, min_gain=0.01)  # falling counts as a plateau
