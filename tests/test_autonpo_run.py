"""AutoNPO end to end on the embedded default: a trigger, a decision with its Q/V/S table, the rollback
(the discarded steps leave the final trajectory), guided retraining, the accounting, and the
controller's state saved with each checkpoint and restored on rollback."""

from npo.algo.controller import Controller, ControllerState, Made, Seen, StepRecord
from npo.config.run import load_config
from npo.loops.run import prepare, train
from npo.rundir.layout import checkpoint_state, read_jsonl

from conftest import ROOT
from golden import AUTONPO_SHORT


def test_autonpo_intervenes_and_records_it(autonpo_short):
    run, summary = autonpo_short
    decision, intervention = read_jsonl(run / "events.jsonl")
    assert decision["event"] == "autonpo_decision" and decision["trigger"] == "bootstrap" and decision["step"] == 10
    assert decision["signals"]["reward_ema"] < 0.9 and decision["delta"] == 5
    (row,) = decision["table"]
    assert row["delta"] == 5 and 0 <= row["Q"] <= 1 and row["V"] > 0
    assert abs(row["S"] - row["Q"] / row["V"]) < 1e-9
    assert intervention["step"] == 5 and intervention["window"] == [5, 10] and intervention["trigger_step"] == 10
    assert intervention["guide_checkpoint"] == "lookahead/0-auto/checkpoint-10"
    assert intervention["guides"]["injected"] > 0
    # the discarded steps (5, 10] left the final trajectory, which is complete and in order
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == list(range(1, 31))
    discarded = read_jsonl(run / "lookahead" / "0-auto" / "metrics.jsonl")
    assert [m["step"] for m in discarded] == list(range(6, 11))
    assert [e["step"] for e in read_jsonl(run / "eval.jsonl")] == [0, 10, 20, 30]
    assert [e["step"] for e in read_jsonl(run / "lookahead" / "0-auto" / "eval.jsonl")] == [10]
    replaced = [m["npo/replaced_groups"] for m in read_jsonl(run / "metrics.jsonl")]
    assert sum(replaced[5:10]) == intervention["guides"]["injected"] and sum(replaced[10:]) == 0
    assert summary["total_steps"] == 35 and summary["interventions"] == 1
    assert summary["generated_tokens_by_kind"]["estimation"] > 0 and summary["generated_tokens_by_kind"]["guide"] > 0
    # the look-ahead's cost, as the manual interventions record it: the discarded steps' on-policy tokens
    step5 = read_jsonl(run / "metrics.jsonl")[4]["signal/generated_tokens"]
    compute = intervention["compute"]
    assert compute["lookahead_steps"] == 5 and compute["lookahead_seconds"] > 0
    assert compute["lookahead_tokens"] == discarded[-1]["signal/generated_tokens"] - step5 > 0


def replay_signals(metrics: list[dict], rules) -> dict:
    """The controller's EMAs from scratch over a trajectory's metrics (the mistake pool aside)."""
    ctrl = Controller(rules, total_steps=10**6)
    for m in metrics:
        ctrl.observe(StepRecord(m["step"], m["signal/group_accuracy"], m["signal/entropy"]))
    seen = ctrl.state.seen
    return {"reward_ema": seen.reward_ema, "entropy_ema": seen.entropy_ema, "entropy_peak": seen.entropy_peak,
            "reward_history": seen.reward_history}


def saved(checkpoint) -> ControllerState:
    """What a checkpoint's marker holds of the controller: what it had seen, and the run's decisions."""
    state = checkpoint_state(checkpoint)
    return ControllerState(Seen(**state["watch"]["seen"]), Made(**state["books"]["made"]))


def test_controller_state_is_saved_and_a_rollback_restores_what_it_had_seen(autonpo_short):
    """After the rollback from 10 to 5, the controller's EMAs describe the final trajectory (steps
    1-10 as retrained), not the discarded pass: replaying the final metrics from scratch gives the
    checkpoint's saved state bit for bit, and the discarded pass's state differs. Its decisions stand."""
    run, _ = autonpo_short
    rules = load_config(run / "config.yaml").autonpo
    final = read_jsonl(run / "metrics.jsonl")
    discarded_pass = final[:5] + read_jsonl(run / "lookahead" / "0-auto" / "metrics.jsonl")
    for step in (5, 10, 20, 30):
        state = saved(run / "checkpoints" / f"checkpoint-{step}")
        got = {k: getattr(state.seen, k) for k in ("reward_ema", "entropy_ema", "entropy_peak", "reward_history")}
        assert got == replay_signals(final[:step], rules), step
        assert state.made.interventions == (0 if step == 5 else 1)
    before = saved(run / "lookahead" / "0-auto" / "checkpoint-10")  # what it had seen when it triggered
    assert before.seen.reward_ema == replay_signals(discarded_pass, rules)["reward_ema"]
    after = saved(run / "checkpoints" / "checkpoint-10")
    assert after.seen.reward_ema != before.seen.reward_ema
    assert after.made.floor == 10 and after.made.bootstrapped and after.made.extra_steps == 5
    # the mistake pool holds, per step, the groups that step gated on its own trajectory
    for state, trajectory in ((after, final[:10]), (before, discarded_pass)):
        per_step = [sum(1 for _, s in state.seen.pool if s == m["step"]) for m in trajectory]
        assert per_step == [m["npo/gated_groups"] for m in trajectory]


def test_autonpo_declines_when_s_is_too_small(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny-autonpo.yaml", AUTONPO_SHORT + ["autonpo.min_s=1000"])
    summary = train(prepare(cfg, tmp_path / "run"), show_progress=False)
    (decision,) = read_jsonl(tmp_path / "run" / "events.jsonl")
    assert decision["delta"] is None and "min_s" in decision["reason"]
    assert summary["total_steps"] == 30 and summary["interventions"] == 0
    assert not (tmp_path / "run" / "lookahead").exists()
