"""`npo demo`: the main job on the embedded default.

Until the NPO comparison lands (issue 6), the demo warms up the embedded default (cached after the
first run), trains it with plain GRPO using `configs/tiny-grpo.yaml`, and prints held-out greedy
accuracy before and after.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny-grpo.yaml"


def run_demo(a) -> int:
    from npo.cli import default_out
    from npo.config import load_config
    from npo.train import prepare, train

    config = a.config or str(DEFAULT_CONFIG)
    cfg = load_config(config)
    prep = prepare(cfg, a.out or default_out(config, prefix="demo-"))
    t0 = time.perf_counter()
    s = train(prep)
    print()
    print(f"GRPO on the embedded default ({cfg.task.spec}, {s['eval_items']} held-out items, greedy):")
    print(f"  before: {s['initial_accuracy']:.3f}   after {s['final_steps']} steps: {s['final_accuracy']:.3f}"
          f"   (best {s['best_accuracy']:.3f})")
    print(f"  mean@{cfg.eval.samples} at T={cfg.eval.temperature}: {s['initial_mean_at_k']:.3f} -> "
          f"{s['final_mean_at_k']:.3f}" if cfg.eval.samples else "")
    print(f"  wall {time.perf_counter() - t0:.0f}s (warm-up {s['warmup_seconds']:.0f}s, "
          f"training {s['train_seconds']:.0f}s, evaluation {s['eval_seconds']:.0f}s); run directory: {prep.out}")
    print(json.dumps({k: s[k] for k in ("initial_accuracy", "final_accuracy", "final_steps", "wall_seconds")}))
    return 0
