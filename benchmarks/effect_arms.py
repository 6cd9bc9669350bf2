"""Issue 30's measurement: what each guide source did to the prompts it was given to, beside its S = Q/V.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/effect_arms.py --regimes demo scratch scratch5 --seeds 2 \
        --out runs/effect-arms [--jobs 2]

Each regime is one NPO config trained with `npo.controls: 0.5` and the arms near_future:25, near_future:50,
self and teacher:reference (one look-ahead of 50 steps per intervention holds both Deltas), under
`--seeds` seeds; then `npo signal` at every window's start (the policy the window starts from, Deltas 25
and 50 and the sources self and teacher:reference) so that `npo effect` can put each arm's S beside its
effect. Writes --out/effect.json (every row of `npo effect` over all runs), --out/effect.png and
--out/effect.md. Nothing is tuned toward an outcome: the regimes are the repository's configs
(`scratch5`: configs/scratch.yaml with 5-term chains, where a whole answer needs every step right).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NPO = [str(Path(sys.executable).with_name("npo"))]
ARMS = ["npo.controls=0.5", "npo.arms=[near_future:25, near_future:50, self, teacher:reference]"]
REGIMES = {  # name -> (config, overrides): interventions whose look-ahead reaches Delta 50
    "demo": ("demo.yaml", []),
    "scratch": ("scratch.yaml", ["train.checkpoint_every=25", "eval.every=25",
                                 "npo.interventions=[{kind: bootstrap, lookahead: 50, window: 25}]"]),
    "scratch5": ("scratch.yaml", ["task.options={terms: 5, digits: 2}", "train.checkpoint_every=25", "eval.every=25",
                                  "npo.interventions=[{kind: bootstrap, lookahead: 50, window: 25}]"]),
}


def sh(argv: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return done.stdout


def one(out: Path, regime: str, seed: int) -> Path:
    config, sets = REGIMES[regime]
    run = out / "runs" / f"{regime}-s{seed}"
    if not (run / "summary.json").is_file():
        overrides = [x for s in [*sets, *ARMS, f"seed={seed}"] for x in ("--set", s)]
        sh([*NPO, "train", str(ROOT / "configs" / config), *overrides, "--out", str(run), "--quiet"])
    for e in (json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()):
        if e.get("event") == "effect" and not (run / "signal" / f"step-{e['window'][0]}.json").is_file():
            sh([*NPO, "signal", str(run), "--step", str(e["window"][0]), "--deltas", "25,50", "--k", "4",
                "--prompts", "128", "--source", "self", "--source", "teacher:reference", "--seed", str(seed)])
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "effect-arms")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (one torch thread each)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    jobs = [(r, s) for r in a.regimes for s in range(a.seeds)]
    with ThreadPoolExecutor(a.jobs) as pool:
        runs = list(pool.map(lambda job: one(a.out, *job), jobs))
    rows = json.loads(sh([*NPO, "effect", *map(str, runs), "--json", "--out", str(a.out / "effect.png")]))
    (a.out / "effect.json").write_text(json.dumps(rows, indent=2))
    (a.out / "effect.md").write_text(sh([*NPO, "effect", *map(str, runs), "--out", str(a.out / "effect.png")]))
    print((a.out / "effect.md").read_text())


if __name__ == "__main__":
    main()
