"""Train ahead, roll back, in place: the run's one trainer resumes from a checkpoint and replays the
first pass exactly (CPU), across epochs; the data order is a pure function of the step; the NPO
loop's look-ahead is the same-seed GRPO run."""

import json

import torch
from safetensors.torch import load_file
from trl.trainer.utils import RepeatSampler

from npo.algo.order import DataOrder
from npo.config.run import load_config
from npo.guides.bank import Guidance, GuideBank
from npo.guides.sources import PolicySource, guide_sampling
from npo.loops.run import open_run, prepare, train
from npo.loops.segment import run_segment
from npo.models.generation import Policy
from npo.models.load import load_policy
from npo.rundir.layout import read_jsonl
from npo.tasks import build_split
from npo.tasks.rewards import TaskScorer

from conftest import ROOT

# keys that legitimately differ between passes: wall time, and run-cumulative token and verification counts
NOT_REPLAYED = {"train/step_time", "signal/generated_tokens", "verify/calls"}
# 40 training prompts, 8 per step: an epoch is 5 steps, so 14 steps span three epochs. A warm start of its
# own (40 items key a new one): 40 steps on them, 4 s, leave groups of mixed rewards (what makes a step
# move the weights); the embedded default's 1000 steps took 200 s of the suite on a fresh clone
EPOCHS = ["task.train_size=40", "model.warmup.steps=40", "train.prompts_per_step=8", "train.steps=14", "train.checkpoint_every=3",
          "eval.every=0", "eval.n=20", "eval.samples=0"]


def context(tmp_path, *sets):
    cfg = load_config(ROOT / "configs" / "tiny-grpo.yaml", list(sets))
    return open_run(prepare(cfg, tmp_path / "run"), show_progress=False)


def replayed(records):
    return [{k: v for k, v in r.items() if k not in NOT_REPLAYED} for r in records]


def test_trl_sampler_replays_epoch_zero_after_a_rollback():
    """Why npo seeds the sampler per epoch: a fresh TRL sampler (what a rollback builds) starts at
    epoch 0's permutation, whatever epoch the run was in."""
    data = list(range(40))
    running = RepeatSampler(data, mini_repeat_count=1, batch_size=8, seed=0)
    epoch0, epoch1 = list(running), list(running)  # one sampler, two passes: two permutations
    assert list(RepeatSampler(data, mini_repeat_count=1, batch_size=8, seed=0)) == epoch0 != epoch1
    order = DataOrder(40, 8, steps_per_generation=1, seed=0)
    assert [x for s in range(5) for x in order.prompts_at(s)] == epoch0  # epoch 0 is TRL's own order
    assert [x for s in range(5, 10) for x in order.prompts_at(s)] != epoch0
    assert sorted(x for s in range(5, 10) for x in order.prompts_at(s)) == data  # each epoch a permutation


def test_in_place_rollbacks_across_epochs_replay_exactly(tmp_path):
    """Three rollbacks (to 6, 9, 12: epochs 1 and 2) of the run's one trainer replay the first pass's
    data order, metrics and final weights bit for bit, and the data order is `prompts_at`."""
    ctx = context(tmp_path, *EPOCHS)
    run, trainer = ctx.run, ctx.trainer
    ctx.keep_whole.update({6, 9, 12})  # the rollback targets below (npo.rundir.retention strips the others)
    first = run_segment(ctx, 0, 14, out_dir=run.checkpoints)
    metrics = read_jsonl(run.metrics)
    assert [r["step"] for r in metrics] == list(range(1, 15))
    assert all(0 < r["reward/mean"] < 1 for r in metrics)  # mixed groups: every step has advantages to train on
    order = trainer.data_order()
    assert first.visited == {s: order.prompts_at(s) for s in range(14)}
    assert first.visited[5] != first.visited[0] and sorted(first.visited[5] + first.visited[6]) != sorted(
        first.visited[0] + first.visited[1])  # epoch 1 is not epoch 0 again
    for t in (6, 9, 12):
        replay = run_segment(ctx, t, 14, out_dir=tmp_path / f"replay-{t}", main=False)
        assert replay.visited == {s: first.visited[s] for s in range(t, 14)}, t
        again = read_jsonl(tmp_path / f"replay-{t}" / "metrics.jsonl")
        assert replayed(again) == replayed(metrics[t:]), t  # loss, grad norm, rewards, entropy: bit for bit
        a = load_file(run.checkpoint(14) / "model.safetensors")
        b = load_file(tmp_path / f"replay-{t}" / "checkpoint-14" / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), t


def test_rollback_test_can_fail(tmp_path):
    """Control: another data seed after the rollback does change the metrics."""
    ctx = context(tmp_path, "train.steps=6", "train.checkpoint_every=3", "eval.every=0", "eval.n=20",
                  "eval.samples=0", "train.prompts_per_step=8")
    run_segment(ctx, 0, 6, out_dir=ctx.run.checkpoints)
    ctx.trainer.args.seed = 1
    run_segment(ctx, 3, 6, out_dir=tmp_path / "other", main=False)
    assert replayed(read_jsonl(tmp_path / "other" / "metrics.jsonl")) != replayed(read_jsonl(ctx.run.metrics)[3:])


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
    # the live engine wrote the same bank a second copy of the look-ahead's checkpoint writes (the old
    # path): same policy, same per-prompt seeds, whatever the order the prompts are asked in
    task, items, _ = build_split(npo)
    copy = Policy(*load_policy(tmp_path / "npo" / event["guide_checkpoint"]), "plain")
    source = PolicySource(copy, name=event["guide_checkpoint"], step=4, **guide_sampling(npo))
    standalone = Guidance(source, TaskScorer(task, "plain"), GuideBank(), 0, 3, seed=npo.seed)
    asked = sorted(bank["tried"], reverse=True)
    standalone.prefill(asked, [items[i] for i in asked], step=0)
    assert standalone.bank.to_json() == {k: bank[k] for k in ("guides", "tried")}
    assert bank["closed"] and bank["stats"]["found"] == event["guides"]["found"]


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
