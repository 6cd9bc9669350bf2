"""Peak host memory of an NPO bootstrap run against plain GRPO on the same config, on a ~30M-parameter
model (the embedded default's architecture at hidden 512, 8 layers; no warm start), plain and under
DeepSpeed ZeRO-2 on CPU; for this checkout and, with --before REV, for an earlier commit of npo run
from the same virtual environment (its `src` first on PYTHONPATH).

    .venv/bin/python benchmarks/memory.py [--before 7565fa3] [--steps 12] [--out runs/memory]

Each run is its own process; its peak resident set comes from GNU time (`%M`). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIG = ["model.tiny.hidden_size=512", "model.tiny.num_hidden_layers=8", "model.tiny.num_attention_heads=8",
       "model.tiny.num_key_value_heads=4", "model.tiny.intermediate_size=2048", "model.warmup.steps=0"]
DS = {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto",
      "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "zero_allow_untested_optimizer": True,
      "bf16": {"enabled": False}, "fp16": {"enabled": False}}


def run(src: Path, method: str, engine: str, steps: int, out: Path) -> dict:
    delta = steps // 3
    config = ROOT / "configs" / ("tiny-grpo.yaml" if method == "grpo" else "tiny-npo-bootstrap.yaml")
    sets = BIG + [f"train.steps={steps}", f"train.checkpoint_every={delta}", "train.prompts_per_step=8",
                  "eval.every=0", "eval.n=50", "eval.samples=0"]
    if method == "npo":
        sets.append(f"npo.interventions=[{{kind: bootstrap, lookahead: {delta}, window: {delta}}}]")
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "2", "DS_ACCELERATOR": "cpu"}
    if engine == "zero2":
        ds = out.with_suffix(".ds.json")
        ds.write_text(json.dumps(DS))
        sets += [f"train.grpo.deepspeed={ds}", "train.grpo.optim=adamw_torch"]
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29591")
    cmd = ["/usr/bin/time", "-f", "%M %e", sys.executable, "-m", "npo.cli.main", "train", str(config), "--out", str(out),
           "--quiet", *[x for s in sets for x in ("--set", s)]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)}\n{proc.stderr[-2000:]}")
    peak_kb, seconds = proc.stderr.strip().splitlines()[-1].split()
    summary = json.loads((out / "summary.json").read_text())
    return {"peak_mb": int(peak_kb) / 1024, "seconds": float(seconds), "total_steps": summary["total_steps"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", help="an earlier commit to measure the same way (e.g. 7565fa3)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--engines", nargs="+", default=["plain", "zero2"], choices=["plain", "zero2"])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "memory")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    sources = {"this checkout": ROOT / "src"}
    if a.before:
        tmp = Path(tempfile.mkdtemp())
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "old"), a.before], check=True,
                       capture_output=True)
        sources[f"before ({a.before})"] = tmp / "old" / "src"
    print("| code | engine | GRPO peak MB | NPO bootstrap peak MB | NPO / GRPO | NPO total steps | seconds (GRPO / NPO) |")
    print("|---|---|---|---|---|---|---|")
    for label, src in sources.items():
        for engine in a.engines:
            tag = label.split()[0]
            g = run(src, "grpo", engine, a.steps, a.out / f"{tag}-{engine}-grpo")
            n = run(src, "npo", engine, a.steps, a.out / f"{tag}-{engine}-npo")
            print(f"| {label} | {engine} | {g['peak_mb']:.0f} | {n['peak_mb']:.0f} | {n['peak_mb'] / g['peak_mb']:.3f} |"
                  f" {n['total_steps']} | {g['seconds']:.0f} / {n['seconds']:.0f} |", flush=True)
    if a.before:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "old")], capture_output=True)


if __name__ == "__main__":
    main()
