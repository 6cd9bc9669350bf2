"""Kill NPO and AutoNPO runs of configs/demo.yaml with SIGKILL at random moments, resume each, and
check that the resumed runs equal the same runs left alone (issue 13).

    .venv/bin/python benchmarks/kill_resume.py --kills 20 --out runs/kill-resume [--methods npo autonpo]
    .venv/bin/python benchmarks/kill_resume.py --early --quick --kills 20 --out runs/kill-early

`--early` (issue 27): every chain is one fresh run killed once in its start-up or first checkpoint
interval (uniform from 1 s to the reference's first checkpoint plus the ~6 s of imports), then resumed
to its end: the window a step-0 evaluation, a first snapshot and a first checkpoint share. `--quick`
runs the demo's toy sizes (`npo demo --quick`). Kills alternate SIGKILL and SIGTERM (a scheduler's
preemption: npo exits with one line, code 143).

Per method: one uninterrupted reference run, then chains: a run is started, killed (SIGKILL from
outside, at a uniformly random moment of what is left of it), resumed with `npo train --resume`,
killed again, ... until `--kills` kills are made; each chain then resumes to its end and is compared
with the reference (metrics.jsonl, eval.jsonl, events.jsonl with timing fields aside, and the final
weights). After every kill, before resuming, the run folder is inspected:
- steps lost: metrics lines (final trajectory and look-aheads) beyond the last complete checkpoint of
  their folder, i.e. the optimizer steps the resume does again;
- repaired: checkpoints without a complete marker and torn last log lines (a resume removes them);
- corrupt: a JSON file that does not parse, a checkpoint whose marker says complete but whose files
  differ from it, a JSONL line other than the last that does not parse: must be 0.
Writes OUT/kill_resume.json and prints a markdown table (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from npo.cli.demo import PRESETS
from npo.rundir.layout import CHECKPOINT_STATE, checkpoint_folders, checkpoint_state, complete_steps, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from golden import normalized  # noqa: E402  (the timing-free view the resume tests compare)

NPO = [sys.executable, "-m", "npo.cli.main"]


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*NPO, *argv, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def inspect(run: Path) -> dict:
    """What a kill left: steps to redo, pieces a resume repairs, and corrupt files (must be none)."""
    lost = repaired = corrupt = 0
    folders = [(run / "checkpoints", run), *((p, p) for p in sorted((run / "lookahead").glob("*")))]
    for checkpoints, logs in folders:
        for path in checkpoint_folders(checkpoints).values():
            if checkpoint_state(path) is None:
                corrupt += (path / CHECKPOINT_STATE).exists()  # a marker that lies
                repaired += not (path / CHECKPOINT_STATE).exists()
        last = max(complete_steps(checkpoints), default=0 if logs == run else -1)
        lost += sum(r["step"] > last for r in read_jsonl(logs / "metrics.jsonl"))
    for path in run.rglob("*.json"):
        try:
            json.loads(path.read_text())
        except ValueError:
            corrupt += 1
    for path in run.rglob("*.jsonl"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            try:
                json.loads(line)
            except ValueError:
                repaired += i == len(lines) - 1
                corrupt += i < len(lines) - 1
    return {"steps_lost": lost, "repaired": repaired, "corrupt": corrupt}


def final_weights(run: Path, steps: int) -> str:
    return hashlib.sha256((run / "checkpoints" / f"checkpoint-{steps}" / "model.safetensors").read_bytes()).hexdigest()


def resume(run: Path, train: list[str]) -> list[str]:
    """`npo train --resume RUN`, or the first start if the last kill came before it wrote anything."""
    return ["train", "--resume", str(run)] if (run / "config.yaml").exists() else [*train, "--out", str(run)]


def progress(run: Path, steps: int) -> float:
    return max(complete_steps(run / "checkpoints"), default=0) / steps


def first_checkpoint_seconds(reference: Path) -> float:
    """Seconds from the reference's first write to its first complete checkpoint of the final trajectory."""
    first = min(complete_steps(reference / "checkpoints"))
    marker = reference / "checkpoints" / f"checkpoint-{first}" / CHECKPOINT_STATE
    return marker.stat().st_mtime - (reference / "config.yaml").stat().st_mtime


def bench(method: str, kills: int, out: Path, seconds: float, steps: int, rng: random.Random, sizes: list[str],
          early: bool) -> dict:
    presets = [*sizes, *PRESETS[method]]
    train = ["train", str(ROOT / "configs" / "demo.yaml"), *(x for s in presets for x in ("--set", s))]
    reference = out / f"{method}-reference"
    if not (reference / "summary.json").exists():
        t0 = time.perf_counter()
        assert start([*train, "--out", str(reference)]).wait() == 0
        seconds = time.perf_counter() - t0
    window = first_checkpoint_seconds(reference) + 8.0  # imports, warm start found, step-0 evaluation, first steps
    chains, records = [], []
    while len(records) < kills:
        run, done = out / f"{method}-chain{len(chains)}", False
        while len(records) < kills and not done:
            left = seconds * (1 - progress(run, steps))
            fresh = not (run / "config.yaml").exists()
            if early and not fresh:
                break  # one early kill per chain; it resumes to its end below
            # from after the ~6 s of imports to past the run's end; --early: within its first checkpoint
            delay = rng.uniform(1.0, window) if early else rng.uniform(6.0, left + 8.0)
            process = start(resume(run, train))
            try:
                code = process.wait(timeout=delay)  # finished before its kill came
                assert code == 0, f"{run}: exit code {code}"
                done = True
            except subprocess.TimeoutExpired:
                how = signal.SIGTERM if len(records) % 2 else signal.SIGKILL
                process.send_signal(how)
                code = process.wait()
                assert code in (-how, 128 + how), f"{run}: exit code {code} after {how.name}"
                records.append({"chain": len(chains), "after_seconds": round(delay, 1), "signal": how.name,
                                "exit_code": code, **inspect(run)})
                print(f"{method}: kill {len(records)} at {delay:.1f} s: {records[-1]}", flush=True)
        if not done:
            assert start(resume(run, train)).wait() == 0
        summary = json.loads((run / "summary.json").read_text())
        chains.append({"run": str(run), "kills": sum(r["chain"] == len(chains) for r in records),
                       "matched": normalized(run) == normalized(reference)
                       and final_weights(run, steps) == final_weights(reference, steps),
                       "resumes": summary["resumes"], "lost_seconds": summary["lost_seconds"],
                       "wall_seconds": summary["wall_seconds"]})
        print(f"{method}: chain {len(chains) - 1}: {chains[-1]}", flush=True)
    return {"method": method, "reference_seconds": round(seconds, 1), "kills": records, "chains": chains}


def table(results: list[dict], every: int) -> str:
    lines = ["| method | kills | resumed runs equal to the uninterrupted run | steps lost per kill: mean / max "
             f"(checkpoint every {every}) | repaired on resume | corrupt files | seconds lost (all kills) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        k, c = r["kills"], r["chains"]
        lost = [x["steps_lost"] for x in k]
        lines.append(f"| {r['method']} | {len(k)} | {sum(x['matched'] for x in c)} of {len(c)} chains "
                     f"({sum(x['kills'] for x in c if x['matched'])} of {len(k)} kills) | "
                     f"{sum(lost) / len(lost):.1f} / {max(lost)} | {sum(x['repaired'] for x in k)} | "
                     f"{sum(x['corrupt'] for x in k)} | {sum(x['lost_seconds'] for x in c):.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20, help="kills per method")
    p.add_argument("--methods", nargs="+", default=["npo", "autonpo"], choices=sorted(PRESETS))
    p.add_argument("--out", default="runs/kill-resume")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    p.add_argument("--early", action="store_true", help="one kill per chain, in start-up or the first checkpoint interval")
    p.add_argument("--quick", action="store_true", help="the demo's toy sizes (npo demo --quick)")
    a = p.parse_args()
    from npo.cli.demo import QUICK
    from npo.config.run import load_config

    sizes = QUICK if a.quick else []
    cfg = load_config(ROOT / "configs" / "demo.yaml", sizes)
    out, rng = Path(a.out), random.Random(a.seed)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NPO_CACHE", str(ROOT / ".npo-cache"))
    results = [bench(m, a.kills, out, 120.0, cfg.train.steps, rng, sizes, a.early) for m in a.methods]
    (out / "kill_resume.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, cfg.train.checkpoint_every))


if __name__ == "__main__":
    main()
