"""(b) A seeded short GRPO run on the embedded default raises held-out accuracy over its warm start.

Measured first with `npo train configs/tiny-grpo.yaml --set seed=S` (2 CPU cores), held-out
mean@4 at T=1 on 500 items (2000 samples), warm start 0.2785 (greedy 0.352):
    step 200: seed 0 0.372 (+9.4), seed 1 0.328 (+5.0), seed 2 0.3355 (+5.7)
              greedy seed 0 0.454 (+10.2), seed 1 0.370 (+1.8), seed 2 0.390 (+3.8)
    step 120: seed 0 0.3165 (+3.8), seed 1 0.329 (+5.05), seed 2 0.3605 (+8.2)
              greedy seed 0 0.370 (+1.8), seed 1 0.366 (+1.4), seed 2 0.428 (+7.6)
The test runs seed 1 for 120 steps (issue 29: 200 steps took 72 s of the suite), whose margins are
those the 200-step test had: it asks for +3 points of mean@4 (it has +5.05) and any greedy gain (+1.4).
"""

import pytest

from npo.config.run import load_config
from npo.loops.run import prepare, train

from conftest import ROOT


def test_short_grpo_run_beats_its_warm_start(tmp_path, tiny_model_path):
    cfg = load_config(ROOT / "configs" / "tiny-grpo.yaml",
                      ["seed=1", "train.steps=120", "eval.every=0", "train.checkpoint_every=120"])
    s = train(prepare(cfg, tmp_path / "run"), show_progress=False)
    assert s["final_mean_at_k"] >= s["initial_mean_at_k"] + 0.03, s
    assert s["final_accuracy"] > s["initial_accuracy"], s


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
