"""What the verifier guard costs, on math-verify (a jsonl task): a worker's start-up (paid before any
verification is timed), one verification inline against through the worker's pipe, and a hang cut at
the limit with the spare answering the next one; then the same scoring with 1 s limits while every core is busy.

    .venv/bin/python benchmarks/verifier_guard.py [--pairs 400] [--out benchmarks/results/verifier_guard.json]

Prints (and writes) one JSON object; BENCHMARKS.md has the table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from verifiers import Flaky, burn  # noqa: E402

from npo.tasks import build_task  # noqa: E402
from npo.tasks.verify import GuardedScorer  # noqa: E402


def pairs(task, n: int, seed: int = 0) -> list:
    """Distinct (answer, item) pairs, half right (the reference, or an equal form) and half wrong."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        item = task.items[i % len(task.items)]
        value = int(item.answer)
        answer = rng.choice([str(value), f"\\boxed{{{value}}}", f"{value}.0", str(value + 1 + i)])
        out.append((answer + " " * (i // len(task.items)), item))  # distinct strings: no cache hits
    return out


def timed(scorer, work) -> tuple[list[float], list[float]]:
    values, seconds = [], []
    for answer, item in work:
        t0 = time.perf_counter()
        values.append(scorer.score(answer, item))
        seconds.append(time.perf_counter() - t0)
    return values, seconds


def guarded(task, timeout: float, work) -> tuple[float, list[float], list[float]]:
    """(seconds to start and warm the worker, verdicts, seconds per verification) through the guard."""
    guard = GuardedScorer(task, timeout)
    t0 = time.perf_counter()
    guard.start(task.items[0])
    startup = time.perf_counter() - t0
    values, seconds = timed(guard, work)
    guard.close()
    return startup, values, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=400)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "verifier_guard.json"))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sums.jsonl"
        rng = random.Random(0)
        data.write_text("".join(json.dumps({"question": f"{x}+{y}=", "answer": str(x + y)}) + "\n"
                                for x, y in ((rng.randint(0, 99), rng.randint(0, 99)) for _ in range(200))))
        task = build_task(f"jsonl:{data}", {})
        work = pairs(task, a.pairs)
        inline_values, inline_s = timed(GuardedScorer(task, 60.0, isolate=False), work)
        startup, values, isolated_s = guarded(task, 5.0, work)
        hanging = GuardedScorer(Flaky(), 1.0, isolate=True)  # 'hang' sleeps 600 s in the verifier
        hanging.start(task.items[0])
        t0 = time.perf_counter()
        hanging.score("hang", task.items[0])
        cut = time.perf_counter() - t0
        t0 = time.perf_counter()
        after = hanging.score(task.items[0].answer, task.items[0])  # the spare answers
        next_s = time.perf_counter() - t0
        hanging.close()
        load = [mp.get_context("spawn").Process(target=burn, args=(600.0,), daemon=True) for _ in range(os.cpu_count())]
        for proc in load:
            proc.start()
        try:
            loaded_startup, loaded_values, loaded_s = guarded(task, 1.0, work)
        finally:
            for proc in load:
                proc.kill()

    def ms(xs):
        return {"median_ms": round(1000 * statistics.median(xs), 3), "p99_ms": round(1000 * sorted(xs)[int(0.99 * len(xs))], 3),
                "max_ms": round(1000 * max(xs), 3)}

    result = {
        "machine": f"{os.cpu_count()} CPU cores", "pairs": len(work), "right": sum(inline_values),
        "worker_startup_s": round(startup, 2), "inline": ms(inline_s), "isolated": ms(isolated_s),
        "isolated_equals_inline": values == inline_values, "hang_cut_s": round(cut, 3),
        "after_hang_s": round(next_s, 3), "after_hang_score": after,
        "loaded": {"busy_processes": os.cpu_count(), "worker_startup_s": round(loaded_startup, 2), **ms(loaded_s),
                   "equals_inline": loaded_values == inline_values, "limit_s": 1.0},
    }
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
