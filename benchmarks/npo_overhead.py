"""What NPO's own work costs per optimizer step with the paper's `on_policy` guides (gate, bank look-up,
injection, flags; the guide rows' log-prob metric read from TRL's own loss forward), against a plain
GRPO step on the same setup. Guide *generation* is excluded here (the bank is pre-filled with the
reference answers) and is reported by every run in events.jsonl.

    .venv/bin/python benchmarks/npo_overhead.py [--steps 60] [--repeats 3]

Two measurements, per repeat: (1) the time spent inside NPO's code (`GuidedGRPOTrainer._inject`,
`_score_guides` (a no-op for on_policy), and the guide rows' bookkeeping in the loss forward,
`_book_guides` / `_log_guides`, timed around the calls) divided by the mean plain step; (2) the mean
end-to-end step time of the guided run against the plain run (noisier: guided groups change what is
learned).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import NeverAsked, answer_bank, tiny_trainer  # noqa: E402

from npo.guides.bank import Guidance  # noqa: E402

PARTS = ("_inject", "_score_guides", "_book_guides", "_log_guides")


def step_times(trainer) -> list[float]:
    return [x["step_time"] for x in trainer.state.log_history if "step_time" in x][5:]  # skip warm-up steps


def plain(steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        _, trainer = tiny_trainer(Path(tmp), f"train.steps={steps}", "train.checkpoint_every=100000")
        trainer.train()
        return statistics.mean(step_times(trainer))


def guided(steps: int) -> tuple[float, dict, float]:
    with tempfile.TemporaryDirectory() as tmp:
        _, trainer = tiny_trainer(Path(tmp), "method=npo", f"train.steps={steps}", "train.checkpoint_every=100000",
                                  f"npo.interventions=[{{kind: bootstrap, lookahead: {steps}}}]")
        trainer.guidance = Guidance(NeverAsked(), trainer.scorer, answer_bank(trainer), 0, steps, seed=0)
        spent = {}
        for name in PARTS:
            inner = getattr(trainer, name)

            def timed(*a, _inner=inner, _name=name, **k):
                t0 = time.perf_counter()
                try:
                    return _inner(*a, **k)
                finally:
                    spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - t0

            setattr(trainer, name, timed)
        trainer.train()
        replaced = sum(x.get("npo/replaced_groups", 0) for x in trainer.state.log_history) / steps
        return statistics.mean(step_times(trainer)), {k: spent.get(k, 0.0) / steps for k in PARTS}, replaced


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print("| repeat | plain step ms | guided step ms | gate + look-up + inject + flags ms | guide rows' metric ms |"
          " NPO code / plain step | end-to-end ratio | groups replaced/step |")
    print("|---|---|---|---|---|---|---|---|")
    shares = []
    for r in range(a.repeats):
        p = plain(a.steps)
        g, parts, replaced = guided(a.steps)
        npo = sum(parts.values())
        shares.append(npo / p)
        metric = parts["_score_guides"] + parts["_book_guides"] + parts["_log_guides"]
        print(f"| {r} | {1e3 * p:.1f} | {1e3 * g:.1f} | {1e3 * parts['_inject']:.2f} | {1e3 * metric:.3f} |"
              f" {100 * npo / p:.1f}% | {g / p:.3f} | {replaced:.1f} |", flush=True)
    print(f"\nNPO code per step: mean {100 * statistics.mean(shares):.1f}% of a plain GRPO step "
          f"(max {100 * max(shares):.1f}%) over {a.repeats} repeats of {a.steps} steps")


if __name__ == "__main__":
    main()
