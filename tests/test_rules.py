"""The baselines' mechanisms as pure functions, on constructed data with hand-computed answers:
the injection rules (npo.algo.injection), the replay buffer (npo.algo.replay), the presets (npo.config.presets), the
sources' spec check, and the scratchpad task."""

import math
import random

import pytest
import torch

from npo.algo.injection import guide_token_weights, guided_groups, shaped_importance_weights, shaping_weights, slot_rows
from npo.algo.replay import Entry, ReplayBuffer, collection_plan, replayed_groups, solve_rate
from npo.config.presets import PRESETS, apply_preset
from npo.config.run import load_config
from npo.errors import UserError
from npo.tasks import build_task

# ----------------------------------------------------------------------------- which groups, which rows


def test_gated_rule_takes_groups_below_tau_and_the_gate_free_rule_takes_all():
    p_hat = torch.tensor([0.0, 0.5, 0.6, 1.0])
    assert guided_groups(p_hat, 0.6, gated=True).tolist() == [True, True, False, False]  # NPO: p_hat < tau
    assert guided_groups(p_hat, 0.6, gated=False).tolist() == [True] * 4  # LUFFY, RLEP: every group
    replayed = torch.tensor([False, True, False, True])
    assert guided_groups(p_hat, 0.6, gated=False, eligible=replayed).tolist() == [False, True, False, True]  # ExGRPO


def test_replace_overwrites_the_last_slots_and_add_fills_the_rows_past_G():
    assert slot_rows(2, 1, 8, 8, "replace") == [23]  # group 2's 8th row: the paper's n-th slot
    assert slot_rows(0, 2, 8, 8, "replace") == [7, 6]
    assert slot_rows(1, 1, 8, 8, "replace", slot=0) == [8]
    # RLEP's G + M = 8 + 2: TRL's group is 10 rows, the guides the two after the 8 kept on-policy ones
    assert slot_rows(0, 2, 10, 8, "add") == [8, 9]
    assert slot_rows(3, 1, 10, 8, "add") == [38]
    with pytest.raises(ValueError):
        slot_rows(0, 3, 10, 8, "add")  # more guides than added rows
    with pytest.raises(ValueError):
        slot_rows(0, 8, 8, 8, "replace")  # replace keeps an on-policy sample


# ----------------------------------------------------------------------------- the losses, by hand


def test_luffy_shaping_weight_is_gamma_p_over_p_plus_gamma_squared():
    logp = torch.log(torch.tensor([0.1, 0.5, 1.0]))
    # d f(p) / d log p for f(p) = p / (p + 0.1): 0.1 p / (p + 0.1)^2
    expected = [0.1 * 0.1 / 0.2 ** 2, 0.1 * 0.5 / 0.6 ** 2, 0.1 * 1.0 / 1.1 ** 2]
    assert shaping_weights(logp, 0.1).tolist() == pytest.approx(expected, rel=1e-6)
    assert expected[0] == pytest.approx(0.25)  # the peak, at p = gamma


def test_exgrpo_weight_shapes_the_importance_ratio_to_the_recorded_logps():
    now, then = torch.log(torch.tensor([0.4, 0.05])), torch.log(torch.tensor([0.2, 0.5]))
    w = [2.0, 0.1]  # pi_theta / pi_behaviour per token
    expected = [0.1 * x / (x + 0.1) ** 2 for x in w]
    assert shaped_importance_weights(now, then, 0.1).tolist() == pytest.approx(expected, rel=1e-6)
    assert guide_token_weights("shaped_importance", now, then, 2.0, 0.1).tolist() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        guide_token_weights("shaped_importance", now, None, 2.0, 0.1)  # no behaviour log-probs, no ratio


def test_shaped_weights_stay_finite_at_extreme_ratios():
    far = shaped_importance_weights(torch.tensor([0.0, -800.0]), torch.tensor([-800.0, 0.0]), 0.1)
    assert torch.isfinite(far).all() and 0 <= far.min() and far.max() < 1e-30  # e^800, e^-800: no overflow, no NaN


def test_importance_and_on_policy_weights():
    now, guide = torch.log(torch.tensor([0.9, 0.1])), torch.log(torch.tensor([0.3, 0.2]))
    assert guide_token_weights("importance", now, guide, 2.0, 0.1).tolist() == pytest.approx([2.0, 0.5])  # capped at c
    assert guide_token_weights("on_policy", now, guide, 2.0, 0.1).tolist() == [1.0, 1.0]


# ----------------------------------------------------------------------------- the replay buffer


def entry(text, entropy, step=0):
    return Entry([1, 2], text, [-0.1, -0.2], step, entropy)


def test_replay_collects_partly_solved_groups_and_retires_solved_questions():
    buf = ReplayBuffer()
    buf.observe(7, 0, 8, [])  # all wrong: nothing to keep
    assert len(buf) == 0 and buf.acc[7] == 0.0
    buf.observe(7, 3, 8, [entry("a", 0.5), entry("b", 0.2)])
    assert [e.text for e in buf.entries[7]] == ["a", "b"] and buf.acc[7] == 3 / 8
    buf.observe(7, 8, 8, [entry("c", 0.1)])  # fully solved: retired with everything it had
    assert 7 not in buf.entries and buf.acc[7] == 1.0
    kept = ReplayBuffer(retire_solved=False)
    kept.observe(7, 3, 8, [entry("a", 0.5)])
    kept.observe(7, 8, 8, [entry("c", 0.1)])
    assert [e.text for e in kept.entries[7]] == ["a"]  # kept, but an all-correct group adds nothing


def test_replay_keeps_the_newest_per_question_once_per_text():
    buf = ReplayBuffer(per_question=2)
    buf.observe(1, 2, 8, [entry("a", 0.9, 0), entry("a", 0.9, 0)])
    buf.observe(1, 2, 8, [entry("b", 0.5, 1)])
    buf.observe(1, 2, 8, [entry("c", 0.4, 2), entry("a", 0.3, 2)])
    assert [(e.text, e.step) for e in buf.entries[1]] == [("c", 2), ("a", 2)]


def test_replay_picks_the_lowest_entropy_success():
    buf = ReplayBuffer()
    buf.observe(1, 4, 8, [entry("hot", 0.9, 1), entry("cold", 0.1, 0), entry("warm", 0.5, 2)])
    rng = random.Random(0)
    assert [e.text for e in buf.pick(1, 2, rng)] == ["cold", "warm"]
    buf.select = "latest"
    assert [e.text for e in buf.pick(1, 1, rng)] == ["warm"]


def test_replay_draws_medium_questions_first():
    buf = ReplayBuffer(sigma=0.2)
    for q, correct in ((1, 1), (2, 4), (3, 7)):  # acc 1/8, 1/2, 7/8
        buf.observe(q, correct, 8, [entry(f"q{q}", 0.1)])
    assert buf.weight(2) == 1.0 and buf.weight(1) == pytest.approx(math.exp(-(0.375 ** 2) / 0.08))
    firsts = [buf.draw(1, random.Random(s))[0] for s in range(400)]
    share = firsts.count(2) / len(firsts)
    # u^(1/w) keys draw question i first with probability w_i / sum(w) = 1 / (1 + 2 * 0.1724) = 0.743
    assert 0.69 < share < 0.80  # (400 draws: sd 0.022), where uniform gives 1/3
    buf.prefer = "uniform"
    uniform = [buf.draw(1, random.Random(s))[0] for s in range(400)]
    assert 0.26 < uniform.count(2) / 400 < 0.41
    assert sorted(buf.draw(5, random.Random(0), exclude={3})) == [1, 2]  # without replacement, never an excluded one


def test_replay_state_round_trips_through_json():
    buf = ReplayBuffer()
    buf.observe(4, 2, 8, [entry("x", 0.3, 5)])
    other = ReplayBuffer()
    other.load_json(buf.to_json())
    assert other.entries == buf.entries and other.acc == buf.acc
    other.load_json(None)
    assert len(other) == 0 and not other.acc


def test_collection_plan_keeps_correct_rows_of_partly_solved_groups_this_process_holds():
    rewards = [[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]]  # three groups of n = G = 4
    plan = collection_plan(rewards, [10, 11, 12], n=4, kept=4, lo=0, rows=12, overwritten={2})
    assert plan == [(0, 10, 2, 0), (0, 10, 2, -1), (1, 11, 4, -1), (2, 12, 0, -1)]  # row 2 was overwritten
    # process 1 of 2 holds the global rows 6..11: group 0's rows are not its own
    assert collection_plan(rewards, [10, 11, 12], n=4, kept=4, lo=6, rows=6, overwritten=set()) == [
        (0, 10, 2, -1), (1, 11, 4, -1), (2, 12, 0, -1)]


def test_replayed_groups_take_the_batch_share_from_the_buffer():
    buf = ReplayBuffer()
    for q in range(10):
        buf.observe(q, 4, 8, [entry(str(q), 0.1)])
    chosen = replayed_groups(buf, groups=8, share=0.5, rng=random.Random(1), exclude={0, 1})
    assert len(chosen) == 4 and set(chosen) <= set(range(8)) and not {0, 1} & set(chosen.values())
    small = ReplayBuffer()
    small.observe(5, 4, 8, [entry("5", 0.1)])
    assert list(replayed_groups(small, 8, 0.5, random.Random(1), set()).values()) == [5]  # fewer questions, fewer groups
    assert solve_rate(torch.tensor([[1.0, 0.0], [1.0, 1.0]])) == 0.75


# ----------------------------------------------------------------------------- presets and config rules


def test_presets_fill_in_under_the_users_values():
    data = apply_preset({"method": "luffy", "npo": {"shaping_gamma": 0.5}})
    assert data["npo"]["source"] == "teacher:reference" and data["npo"]["shaping_gamma"] == 0.5
    assert apply_preset({"method": "npo"}) == {"method": "npo"}
    cfg = load_config(None, ["method=exgrpo"])
    assert (cfg.npo.source, cfg.npo.targets, cfg.npo.start_solve_rate, cfg.replay.share, cfg.npo.guide_loss) == (
        "replay", "replayed", 0.35, 0.5, "shaped_importance")
    rlep = load_config(None, ["method=rlep", "npo.source=pool:/x.jsonl"])
    assert (rlep.npo.fill, rlep.npo.slots, rlep.npo.gated) == ("add", 2, False)
    assert set(PRESETS) == {"luffy", "exgrpo", "rlep"}


@pytest.mark.parametrize("sets, field", [
    (["npo.source=teacher"], "npo.source"),
    (["npo.source=bogus:x"], "npo.source"),
    (["method=luffy", "npo.source=near_future"], "npo.inject_when"),
    (["method=npo", "npo.interventions=[{kind: bootstrap, lookahead: 20}]", "npo.inject_when=always",
      "npo.source=self"], "npo.inject_when"),
    (["method=luffy", "npo.guide_loss=importance"], "npo.guide_loss"),
    (["method=luffy", "npo.source=teacher_model:/m", "npo.guide_loss=shaped_importance"], "npo.guide_loss"),
    (["method=luffy", "npo.slots=8"], "npo.slots"),
    (["method=luffy", "npo.targets=replayed"], "npo.targets"),
    (["method=luffy", "replay.share=0.5"], "replay.share"),
    (["method=autonpo", "npo.source=self"], "npo.source"),
])
def test_contradicting_injection_rules_are_refused(sets, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        load_config(None, sets)


# ----------------------------------------------------------------------------- the scratchpad task


def test_scratch_accepts_every_order_and_verifies_the_final_answer():
    task = build_task("scratch", {})
    train, held_out = task.splits(200, 20, 3)
    assert not {it.question for it in train} & {it.question for it in held_out}
    item = next(it for it in train if len(set(it.meta["terms"])) == 3)
    orders = task.orders(item)
    assert len(orders) == 6 and all(task.score(o, item) == 1.0 for o in orders)
    assert task.reference_completion(item) == orders[0]  # the teacher's one style: left to right
    assert task.score(orders[0].rpartition("#")[0] + "#0", item) == 0.0
    assert {task.demonstration(item, random.Random(s)) for s in range(60)} == set(orders)  # the warm start's mix


# ----------------------------------------------------------------------------- the source registry


def test_every_declared_source_kind_has_one_class_and_specs_build_through_it(tmp_path):
    from npo.config.checks import SOURCE_KINDS
    from npo.guides.sources import (
        SOURCES,
        PoolSource,
        ReferenceSource,
        SelfSource,
        TraceSource,
        check_source,
        make_source,
    )

    assert set(SOURCES) == set(SOURCE_KINDS)  # declared there, implemented here: neither without the other
    assert all(cls.kind == kind for kind, cls in SOURCES.items())
    traces = tmp_path / "t.jsonl"
    traces.write_text('{"question": "1+1=", "completion": "2"}\n')
    needs = dict(sampling={"k": 3, "temperature": 1.0, "max_new_tokens": 4}, task=None, style="plain")
    built = {spec: make_source(spec, **needs) for spec in ("self", "teacher:reference", f"teacher:{traces}",
                                                           f"pool:{traces}")}
    assert [type(s) for s in built.values()] == [SelfSource, ReferenceSource, TraceSource, PoolSource]
    assert built["self"].k == 3 and built[f"pool:{traces}"].name == f"pool:{traces}"
    assert [s.kind for s in built.values()] == ["self", "teacher", "teacher", "pool"]
    with pytest.raises(UserError, match="rlep"):
        check_source("pool:")  # the preset's placeholder, with its own message
    with pytest.raises(UserError, match="no such file"):
        check_source(f"teacher:{tmp_path / 'missing.jsonl'}")
    with pytest.raises(ValueError, match="look-ahead"):
        make_source("near_future", **needs)
