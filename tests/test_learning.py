"""(b) A seeded short GRPO run on the embedded default learns the prompts it trains on.

The check: 64 training prompts, 16 a step for 60 steps (each prompt visited 15 times, an epoch every 4
steps), the config's learning rate 3e-4; the mean reward of the last epoch (steps 57-60) against the
first's (steps 1-4), the same 64 prompts x 8 samples each. Measured first on an Intel Xeon's warm start
(`npo train configs/tiny-grpo.yaml --set model.path=WARM --set task.train_size=64 --set train.steps=60`):
    first epoch -> last: seed 0 0.248 -> 0.527 (+0.28), seed 1 0.232 -> 0.539 (+0.31),
                         seed 2 0.236 -> 0.504 (+0.27), seed 3 0.229 -> 0.502 (+0.27),
                         seed 4 0.271 -> 0.539 (+0.27); about 20 s a run
(held-out greedy accuracy fell meanwhile, 0.246 -> 0.16-0.19: 64 prompts are learned, not generalized
from). The test runs seed 1 and asks for +0.15, about half the smallest gain.

Why not held-out accuracy (the check before this one): it depends on the warm start, and the warm start
on the processor (CPU numerics differ between families: tests/golden.py). From an AMD EPYC's warm start,
120 steps on all 20,000 prompts raised held-out mean@4 by +3.8, +5.05 and +8.2 points (seeds 0-2); from
an Intel Xeon's, by +0.8, -2.4 and +0.65, and 600 steps by +0.3 (BENCHMARKS.md, "Learning on the
embedded default, by machine"). Held-out gains are a benchmark, not a test that holds on every machine.
"""

import pytest

from npo.config.run import load_config
from npo.loops.run import prepare, train
from npo.rundir.layout import read_jsonl

from conftest import ROOT


def test_a_short_grpo_run_learns_the_prompts_it_trains_on(tmp_path, tiny_model_path):
    cfg = load_config(ROOT / "configs" / "tiny-grpo.yaml",
                      ["seed=1", f"model.path={tiny_model_path}", "task.train_size=64", "train.steps=60",
                       "eval.every=0", "eval.n=20", "train.checkpoint_every=60"])
    train(prepare(cfg, tmp_path / "run"), show_progress=False)
    rewards = [r["reward/mean"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    epoch = 64 // cfg.train.prompts_per_step  # steps per pass over the 64 prompts
    assert len(rewards) == 60 and epoch == 4
    first, last = sum(rewards[:epoch]) / epoch, sum(rewards[-epoch:]) / epoch
    assert last >= first + 0.15, (first, last)


@pytest.mark.slow
def test_short_npo_run_on_image_prompts_beats_its_warm_start(tmp_path):
    """The same for the vision-language demo (`configs/demo-vl.yaml`: NPO, tiny-vl on vis-arith).
    Measured first with `npo demo --config configs/demo-vl.yaml --seeds 3` (2 CPU cores), held-out
    mean@4 on 300 items from the warm start's 0.1925, step 100:
        npo:  seed 0 0.2767 (+8.4), seed 1 0.2708 (+7.8), seed 2 0.2850 (+9.3)
        greedy from 0.247: +4.7, +5.0, +7.0
    Slow (the warm start takes about 7 minutes, the run about 4): `make test-slow`. It runs the worst
    seed (1) and asks for +5 points of mean@4 and any greedy gain."""
    cfg = load_config(ROOT / "configs" / "demo-vl.yaml", ["seed=1", "eval.every=0", "train.checkpoint_every=25"])
    s = train(prepare(cfg, tmp_path / "run"), show_progress=False)
    assert s["final_mean_at_k"] >= s["initial_mean_at_k"] + 0.05, s
    assert s["final_accuracy"] > s["initial_accuracy"], s
