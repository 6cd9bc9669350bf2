"""Plain GRPO on the embedded default over several seeds: held-out accuracy before/after and wall time.

    .venv/bin/python benchmarks/tiny_grpo_seeds.py --seeds 0 1 2 [--config configs/tiny-grpo.yaml]

Runs `npo train CONFIG --set seed=S` one after another (the warm start is built once and cached) and
prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config", default=str(ROOT / "configs" / "tiny-grpo.yaml"))
    a = ap.parse_args()
    npo = Path(sys.executable).with_name("npo")
    print("| seed | greedy before | greedy after | best | mean@K before | mean@K after | train+eval s | process wall s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            out = Path(tmp) / f"seed{seed}"
            t0 = time.perf_counter()
            subprocess.run([str(npo), "train", a.config, "--set", f"seed={seed}", "--out", str(out), "--quiet"],
                           check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            s = json.loads((out / "summary.json").read_text())
            print(f"| {seed} | {s['initial_accuracy']:.3f} | {s['final_accuracy']:.3f} | {s['best_accuracy']:.3f} | "
                  f"{s['initial_mean_at_k']:.4f} | {s['final_mean_at_k']:.4f} | "
                  f"{s['train_seconds'] + s['eval_seconds']:.0f} | {wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
