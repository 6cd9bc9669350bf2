"""Train ahead, roll back: resuming from a checkpoint replays the first pass exactly (CPU), and the NPO
loop's look-ahead is the same-seed GRPO run."""

import json

import torch
from safetensors.torch import load_file

from conftest import ROOT
from npo.callbacks import Evaluator, Progress
from npo.config import load_config
from npo.rewards import TaskScorer
from npo.rundir import RunDir, read_jsonl
from npo.segments import Context, run_segment
from npo.tasks import build_split
from npo.train import prepare, train

# keys that legitimately differ between passes: wall time, and run-cumulative token counts
NOT_REPLAYED = {"train/step_time", "signal/generated_tokens"}


def context(tmp_path, tiny_model_path, *sets) -> Context:
    cfg = load_config(ROOT / "configs" / "tiny-grpo.yaml", list(sets))
    task, train_items, _ = build_split(cfg)
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    evaluator = Evaluator(run, lambda model: {"accuracy": 0.0}, every=0)
    return Context(cfg, run, tiny_model_path, TaskScorer(task, "plain"), "plain", train_items, evaluator,
                   Progress(cfg.train.steps, enabled=False), show_progress=False)


def replayed(records):
    return [{k: v for k, v in r.items() if k not in NOT_REPLAYED} for r in records]


def test_rollback_replays_the_first_pass_exactly(tmp_path, tiny_model_path):
    ctx = context(tmp_path, tiny_model_path, "train.steps=16", "train.checkpoint_every=8")
    run = ctx.run
    run_segment(ctx, 0, 16, out_dir=run.checkpoints)  # the first pass, checkpoints at 8 and 16
    first = read_jsonl(run.metrics)
    assert [r["step"] for r in first] == list(range(1, 17))
    replay_dir = tmp_path / "replay"
    run_segment(ctx, 8, 16, out_dir=replay_dir, main=False)  # roll back to 8, retrain unguided
    again = read_jsonl(replay_dir / "metrics.jsonl")
    assert [r["step"] for r in again] == list(range(9, 17))
    assert replayed(again) == replayed(first[8:])  # loss, grad norm, rewards, entropy: bit for bit
    a = load_file(run.checkpoint(16) / "model.safetensors")
    b = load_file(replay_dir / "checkpoint-16" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_rollback_test_can_fail(tmp_path, tiny_model_path):
    """Control: a different data seed after the rollback does change the metrics."""
    ctx = context(tmp_path, tiny_model_path, "train.steps=12", "train.checkpoint_every=6")
    run_segment(ctx, 0, 12, out_dir=ctx.run.checkpoints)
    ctx.cfg.seed = 1
    run_segment(ctx, 6, 12, out_dir=tmp_path / "other", main=False)
    assert replayed(read_jsonl(tmp_path / "other" / "metrics.jsonl")) != replayed(read_jsonl(ctx.run.metrics)[6:])


def test_bootstrap_run_end_to_end(tmp_path, tiny_model_path):
    """Scout = same-seed GRPO; events and accounting are complete; injected rows are counted."""
    grpo = load_config(ROOT / "configs" / "tiny-grpo.yaml",
                       ["train.steps=8", "train.checkpoint_every=4", "eval.every=4", "eval.n=50", "eval.samples=0"])
    npo = load_config(ROOT / "configs" / "tiny-npo-bootstrap.yaml",
                      ["train.steps=8", "train.checkpoint_every=4", "eval.every=4", "eval.n=50", "eval.samples=0",
                       "npo.interventions=[{kind: bootstrap, lookahead: 4, window: 3}]"])
    g = train(prepare(grpo, tmp_path / "grpo"), show_progress=False)
    s = train(prepare(npo, tmp_path / "npo"), show_progress=False)
    scout = read_jsonl(tmp_path / "npo" / "lookahead" / "0-bootstrap" / "metrics.jsonl")
    plain = [{k: v for k, v in r.items() if not k.startswith("npo/")} for r in scout]
    assert replayed(plain) == replayed(read_jsonl(tmp_path / "grpo" / "metrics.jsonl")[:4])
    (event,) = read_jsonl(tmp_path / "npo" / "events.jsonl")
    assert event["kind"] == "bootstrap" and event["step"] == 0 and event["window"] == [0, 3]
    assert event["guide_checkpoint"] == "lookahead/0-bootstrap/checkpoint-4" and event["guide_step"] == 4
    assert 0 < event["guides"]["found"] <= event["guides"]["requested"]
    assert event["compute"]["lookahead_steps"] == 4 and event["compute"]["guide_samples"] > 0
    metrics = read_jsonl(tmp_path / "npo" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 9))
    assert sum(m["npo/replaced_groups"] for m in metrics) == event["guides"]["injected"] > 0
    assert all(m["npo/replaced_groups"] == 0 for m in metrics[3:])  # the window is [0, 3)
    assert s["final_steps"] == g["final_steps"] == 8 and s["total_steps"] == 12 and g["total_steps"] == 8
    tokens = s["generated_tokens_by_kind"]
    assert tokens["guide"] == event["compute"]["guide_tokens"] > 0
    assert s["generated_tokens"] == tokens["on_policy"] + tokens["guide"]
    assert tokens["on_policy"] > g["generated_tokens"]  # the discarded scout counts
    bank = json.loads((tmp_path / "npo" / "guides" / "0-bootstrap.json").read_text())
    assert len(bank["guides"]) == event["guides"]["found"]


def test_ahead_mode_and_auto_plateau(tmp_path, tiny_model_path):
    """Guides made ahead of time for the window's prompts (the look-ahead saw them); a plateau found
    by the rule (min_gain 1.0: any two windows are a plateau) at the first step it can fire."""
    cfg = load_config(ROOT / "configs" / "tiny-npo-plateau.yaml", [
        "train.steps=10", "train.checkpoint_every=5", "eval.every=0", "eval.n=50", "eval.samples=0",
        "npo.interventions=[{kind: plateau, at_step: auto-plateau, lookahead: 2}]", "npo.guide_mode=ahead",
        "npo.plateau_window=3", "npo.plateau_min_gain=1.0", "npo.plateau_min_step=0"])
    summary = train(prepare(cfg, tmp_path / "run"), show_progress=False)
    detected, event = read_jsonl(tmp_path / "run" / "events.jsonl")
    assert detected["event"] == "plateau_detected" and detected["step"] == 6  # 2 windows of 3 steps
    assert event["trigger"] == "auto-plateau" and event["step"] == 6 and event["window"] == [6, 8]
    assert event["guide_mode"] == "ahead" and event["guide_step"] == 8
    scout = read_jsonl(tmp_path / "run" / "lookahead" / "0-plateau" / "metrics.jsonl")
    assert [m["step"] for m in scout] == [7, 8]
    # every guide was made before the window: 2 steps x 16 prompts asked once, none on demand
    assert event["guides"]["requested"] == 32 and event["guides"]["injected"] > 0
    assert summary["total_steps"] == 12 and summary["interventions"] == 1
