"""NPO's two manual interventions and AutoNPO beside plain GRPO and the `self` control, same seeds.

    .venv/bin/python benchmarks/npo_interventions.py --seeds 0 1 2 --out runs/npo-bench

Runs each variant with `npo train CONFIG --set seed=S` (evaluation every 50 steps for all), keeps the
run directories under --out, and prints markdown tables: held-out accuracy (greedy and mean@K) per
evaluation step, mean over seeds; final numbers per seed; and the compute each run spent. Writes
`--out/curves.png`: mean@K against final-trajectory step and against total generated tokens.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs"
VARIANTS = {
    "grpo": [CFG / "tiny-grpo.yaml"],
    "npo-bootstrap": [CFG / "tiny-npo-bootstrap.yaml"],
    "self-bootstrap": [CFG / "tiny-npo-bootstrap.yaml", "npo.source=self"],
    "npo-plateau": [CFG / "tiny-npo-plateau.yaml"],
    "self-plateau": [CFG / "tiny-npo-plateau.yaml", "npo.source=self"],
    "autonpo": [CFG / "tiny-autonpo.yaml"],
}


def run(variant: str, seed: int, out: Path) -> Path:
    folder = out / f"{variant}-s{seed}"
    if (folder / "summary.json").exists():
        return folder
    config, *sets = VARIANTS[variant]
    cmd = [str(Path(sys.executable).with_name("npo")), "train", str(config), "--out", str(folder), "--quiet",
           "--set", f"seed={seed}", "--set", "eval.every=50"]
    for s in sets:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return folder


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def plot(curves_by_variant: dict, tokens_at: dict, path: Path) -> None:
    """mean@K per variant (mean over seeds, min-max shaded) against step and against generated tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for v, by_step in curves_by_variant.items():
        steps = sorted(by_step)
        ys = [[y for _, y in by_step[s]] for s in steps]
        mean = [sum(y) / len(y) for y in ys]
        line, = axes[0].plot(steps, mean, marker=".", label=v)
        axes[0].fill_between(steps, [min(y) for y in ys], [max(y) for y in ys], alpha=0.12, color=line.get_color())
        axes[1].plot([tokens_at[v].get(s, float("nan")) for s in steps], mean, marker=".", label=v)
    axes[0].set(xlabel="optimizer step on the final trajectory", ylabel="held-out mean@K", title="per step")
    axes[1].set(xlabel="generated tokens so far (on-policy + look-ahead + guide), mean over seeds",
                title="per compute")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def tokens_by_step(folder: Path) -> dict[int, float]:
    """Generated tokens of the whole run (look-aheads and guides included) when each step was done."""
    metrics = read_jsonl(folder / "metrics.jsonl")
    events = read_jsonl(folder / "events.jsonl")
    out = {0: 0.0}
    for m in metrics:
        guide = sum(e["compute"]["guide_tokens"] for e in events
                    if e.get("event") == "intervention" and e["window"][0] < m["step"])
        out[m["step"]] = m["signal/generated_tokens"] + guide
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "npo-bench")
    a = ap.parse_args()
    folders = {(v, s): run(v, s, a.out) for s in a.seeds for v in a.variants}
    curves = defaultdict(lambda: defaultdict(list))  # variant -> step -> [(greedy, mean@K)]
    for (v, _), f in folders.items():
        for e in read_jsonl(f / "eval.jsonl"):
            curves[v][e["step"]].append((e["accuracy"], e.get("mean_at_k", float("nan"))))
    tokens = defaultdict(lambda: defaultdict(list))
    for (v, _), f in folders.items():
        for st, tok in tokens_by_step(f).items():
            tokens[v][st].append(tok)
    plot(curves, {v: {st: sum(x) / len(x) for st, x in by.items()} for v, by in tokens.items()}, a.out / "curves.png")
    steps = sorted({st for v in curves for st in curves[v]})
    print("Held-out accuracy, greedy / mean@K, mean over seeds", a.seeds, "\n")
    print("| step | " + " | ".join(a.variants) + " |")
    print("|---" * (len(a.variants) + 1) + "|")
    for st in steps:
        cells = []
        for v in a.variants:
            xs = curves[v].get(st, [])
            cells.append(f"{sum(x for x, _ in xs) / len(xs):.3f} / {sum(y for _, y in xs) / len(xs):.3f}" if xs else "")
        print(f"| {st} | " + " | ".join(cells) + " |")
    print("\n| variant | seed | final greedy | best greedy | final mean@K | final steps | total steps |"
          " on-policy tokens | guide tokens | guides found/requested | injected | train s |")
    print("|---" * 12 + "|")
    for (v, seed), f in folders.items():
        s = json.loads((f / "summary.json").read_text())
        ev = read_jsonl(f / "events.jsonl")
        found = sum(e.get("guides", {}).get("found", 0) for e in ev)
        req = sum(e.get("guides", {}).get("requested", 0) for e in ev)
        inj = sum(e.get("guides", {}).get("injected", 0) for e in ev)
        tok = s["generated_tokens_by_kind"]
        print(f"| {v} | {seed} | {s['final_accuracy']:.3f} | {s['best_accuracy']:.3f} | {s['final_mean_at_k']:.4f} |"
              f" {s['final_steps']} | {s['total_steps']} | {tok['on_policy']} | {tok.get('guide', 0)} |"
              f" {found}/{req} | {inj} | {s['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
