"""npo.controls end to end on the embedded default: controls receive no guide rows (a spy on what
reaches TRL's loss), a guided run writes its `effect` line, a kill anywhere in the window or its
measurement resumes to the same line, and `npo effect` tables and plots it."""

import json

import pytest
from helpers import NeverAsked, answer_bank, tiny_trainer

from npo.algo.controls import CONTROL, is_control
from npo.cli.main import main
from npo.guides.bank import Guidance
from npo.rundir.layout import read_jsonl

from conftest import ROOT, built_once
from killing import kill_chain, resume

NPO = ["method=npo", "npo.interventions=[{kind: bootstrap, lookahead: 2}]"]
# The whole run one window guided by the task's reference answers, half the guided prompts controls
# (npo.loops.npo._guide_whole_run)
CONTROLLED = ["method=npo", "npo.source=teacher:reference", "npo.inject_when=always", "npo.interventions=[]",
              "npo.controls=0.5", "train.steps=20", "train.checkpoint_every=5", "eval.every=20", "eval.n=100",
              "eval.samples=0"]


def test_controls_receive_no_guide_rows_in_the_loss(tmp_path):
    cfg, trainer = tiny_trainer(tmp_path, *NPO, "train.steps=2", "train.prompts_per_step=16",
                                "train.grpo.steps_per_generation=2")
    g = Guidance(NeverAsked(), trainer.scorer, answer_bank(trainer), 0, 5, seed=0, controls=0.5, index=0)
    trainer.guidance = g
    guided_prompts = []
    original = trainer._compute_loss

    def spy(model, inputs):  # the prompts whose rows carry the guide flag into the loss
        flags = inputs["npo_guide"]
        tok = trainer.processing_class
        for row in flags.nonzero().flatten().tolist():
            ids = inputs["prompt_ids"][row][inputs["prompt_mask"][row].bool()].tolist()
            guided_prompts.append(tok.decode(ids, skip_special_tokens=True))
        return original(model, inputs)

    trainer._compute_loss = spy
    trainer.train()
    arms = {a.arm for a in g.assigned.values()}
    assert arms == {CONTROL, "near_future"}  # both drawn among this step's gated prompts
    controls = {trainer.items[i].question for i, a in g.assigned.items() if a.arm == CONTROL}
    treated = {trainer.items[i].question for i, a in g.assigned.items() if a.arm != CONTROL}
    seen = {p for p in guided_prompts}
    assert seen and not any(c in p for p in seen for c in controls)  # no control's row was a guide
    assert all(any(t in p for p in seen) for t in treated)  # every treated prompt's was
    assert all((a.arm == CONTROL) == is_control(0.5, cfg.seed, 0, trainer.items[i].key) for i, a in g.assigned.items())
    logged = [x for x in trainer.state.log_history if "npo/control_groups" in x]
    assert sum(x["npo/control_groups"] for x in logged) == len(controls)


@pytest.fixture(scope="module")
def controlled(tmp_path_factory, tiny_model_path):
    from npo.config.run import load_config
    from npo.loops.run import prepare, train

    def build(folder):
        train(prepare(load_config(ROOT / "configs" / "tiny-npo-bootstrap.yaml", CONTROLLED), folder / "run"),
              show_progress=False)

    return built_once(tmp_path_factory, "controlled", build) / "run"


def effect_line(run):
    (line,) = [e for e in read_jsonl(run / "events.jsonl") if e["event"] == "effect"]
    return line


def test_a_controlled_window_writes_its_effect(controlled):
    line = effect_line(controlled)
    arms = line["arms"]
    assert set(arms) == {"teacher", CONTROL} and line["window"] == [0, 20] and line["k"] == 8
    assigned = json.loads((controlled / "guides" / "0-always.controls.json").read_text())["assigned"]
    assert arms["teacher"]["n"] + arms[CONTROL]["n"] == len(assigned) > 50
    assert abs(arms["teacher"]["n"] - arms[CONTROL]["n"]) < 4 * (len(assigned) * 0.25) ** 0.5  # the coin, 4 sigma
    assert all(0 <= a["after"] <= 1 and a["p_hat"] < 0.6 for a in assigned)  # gated when assigned
    t = arms["teacher"]
    assert t["ci"][0] <= t["effect"] <= t["ci"][1]
    assert line["heldout_accuracy"] == read_jsonl(controlled / "eval.jsonl")[-1]["accuracy"]


def test_a_controlled_run_killed_in_its_window_or_its_measurement_resumes_to_the_same_effect(tmp_path, controlled):
    out = tmp_path / "run"
    kill_chain(["train", str(controlled / "config.yaml")], out, ["step:7", "effect:1"])
    assert resume(out) == 0
    assert effect_line(out) == effect_line(controlled)
    rewards = [[r["reward/mean"] for r in read_jsonl(run / "metrics.jsonl")] for run in (out, controlled)]
    assert rewards[0] == rewards[1] and len(rewards[0]) == 20


def test_npo_effect_prints_the_table_and_writes_the_plot(controlled, tmp_path, capsys):
    png = tmp_path / "effect.png"
    assert main(["effect", str(controlled), "--out", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "| run | window | arm |" in printed and "| 0-20 | teacher |" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["effect", str(controlled), "--json", "--out", str(png)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["effect"] == effect_line(controlled)["arms"]["teacher"]["effect"] and row["S"] is None
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.yaml").write_text("seed: 0\n")
    assert main(["effect", str(controlled), str(plain), "--out", str(tmp_path / "two.png")]) == 2  # no effect lines
    assert not (tmp_path / "two.png").exists()
