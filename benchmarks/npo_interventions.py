"""NPO's two manual interventions and AutoNPO beside plain GRPO and the `self` control, paired seeds.

    .venv/bin/python benchmarks/npo_interventions.py --seeds 3 --out runs/npo-bench [--variants grpo npo-plateau]
        [--set train.steps=200]

The variants are presets (a config and its overrides), trained and reported by `npo compare`'s own
`run_methods`: every run under --out/runs/NAME-sS, then --out/report.md (final and best held-out
accuracy, steps and tokens to GRPO's final accuracy, total steps, generated tokens by kind including
look-ahead, guide and estimation tokens), --out/curves.png and --out/summary.json. Evaluation every
50 steps for all.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from npo.cli.compare import run_methods

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs"
VARIANTS = {  # name -> (config, overrides); the first is the baseline
    "grpo": (CFG / "tiny-grpo.yaml", []),
    "npo-bootstrap": (CFG / "tiny-npo-bootstrap.yaml", []),
    "self-bootstrap": (CFG / "tiny-npo-bootstrap.yaml", ["npo.source=self"]),
    "npo-plateau": (CFG / "tiny-npo-plateau.yaml", []),
    "self-plateau": (CFG / "tiny-npo-plateau.yaml", ["npo.source=self"]),
    "autonpo": (CFG / "tiny-autonpo.yaml", []),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3, help="paired seeds 0..N-1")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "npo-bench")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override in every variant")
    a = ap.parse_args()
    methods = {v: (VARIANTS[v][0], [*VARIANTS[v][1], "eval.every=50", *a.set]) for v in a.variants}
    command = " ".join(shlex.quote(x) for x in ["python", *sys.argv])
    run_methods(methods, a.seeds, a.out, [command], title="NPO interventions beside GRPO and self")
    print((a.out / "report.md").read_text())


if __name__ == "__main__":
    main()
