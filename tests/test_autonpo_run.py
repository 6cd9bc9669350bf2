"""AutoNPO end to end on the embedded default: a trigger, a decision with its Q/V/S table, the rollback
(the discarded steps leave the final trajectory), guided retraining, and the accounting."""

from conftest import ROOT
from npo.config import load_config
from npo.rundir import read_jsonl
from npo.train import prepare, train

SHORT = ["train.steps=30", "train.checkpoint_every=5", "eval.every=10", "eval.n=50", "eval.samples=0",
         "autonpo.warmup_steps=10", "autonpo.r_low=0.9", "autonpo.deltas=[5]", "autonpo.window=5",
         "autonpo.cooldown=100", "autonpo.signal_prompts=16", "autonpo.signal_k=2"]


def test_autonpo_intervenes_and_records_it(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny-autonpo.yaml", SHORT)
    summary = train(prepare(cfg, tmp_path / "run"), show_progress=False)
    run = tmp_path / "run"
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
    assert [m["step"] for m in read_jsonl(run / "lookahead" / "0-auto" / "metrics.jsonl")] == list(range(6, 11))
    assert [e["step"] for e in read_jsonl(run / "eval.jsonl")] == [0, 10, 20, 30]
    assert [e["step"] for e in read_jsonl(run / "lookahead" / "0-auto" / "eval.jsonl")] == [10]
    replaced = [m["npo/replaced_groups"] for m in read_jsonl(run / "metrics.jsonl")]
    assert sum(replaced[5:10]) == intervention["guides"]["injected"] and sum(replaced[10:]) == 0
    assert summary["total_steps"] == 35 and summary["interventions"] == 1
    assert summary["generated_tokens_by_kind"]["estimation"] > 0 and summary["generated_tokens_by_kind"]["guide"] > 0


def test_autonpo_declines_when_s_is_too_small(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny-autonpo.yaml", SHORT + ["autonpo.min_s=1000"])
    summary = train(prepare(cfg, tmp_path / "run"), show_progress=False)
    (decision,) = read_jsonl(tmp_path / "run" / "events.jsonl")
    assert decision["delta"] is None and "min_s" in decision["reason"]
    assert summary["total_steps"] == 30 and summary["interventions"] == 0
    assert not (tmp_path / "run" / "lookahead").exists()
