"""The paper's comparison (issue 15): GRPO, `self`, NPO, AutoNPO, LUFFY, ExGRPO and RLEP on one regime
with paired seeds, then S = Q / V of each method's guide source on one failed set.

    .venv/bin/python benchmarks/paper_table.py --config configs/demo.yaml --seeds 3 --out runs/paper-arith
    .venv/bin/python benchmarks/paper_table.py --config configs/scratch.yaml --seeds 3 --out runs/paper-scratch

1. `npo compare grpo self npo autonpo luffy exgrpo rlep --config CONFIG --seeds N --out OUT`: the seven
   methods (docs/baselines.md); RLEP's pool comes from a GRPO run of seed 1000 (OUT/pool).
2. `npo signal OUT/runs/grpo-s0 --step T --deltas D1,D2 --source ...`: on the failed set F of GRPO
   seed 0 at step T, Q, V and S of each method's source: `self` (Delta = 0), the near future
   (Delta = D: NPO's and AutoNPO's), `teacher:reference` (LUFFY's perfect teacher), `replay` (ExGRPO's
   buffer, rebuilt from the checkpoints T - D), `pool:OUT/pool/pool.jsonl` (RLEP's).
3. OUT/paper_table.md: the extra columns (entropy at the end, generated tokens by kind, compute to
   GRPO's final accuracy) beside the compare report, and the signal table. Resumable: a re-run into
   the same OUT continues the comparison and keeps a finished signal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from npo.cli.main import main as npo
from npo.cli.signal import table
from npo.rundir.layout import RunDir, read_jsonl

METHODS = ["grpo", "self", "npo", "autonpo", "luffy", "exgrpo", "rlep"]
SOURCES = ("Where each method's guides come from here: NPO and AutoNPO, the run's own checkpoint Delta steps "
           "ahead; `self`, the current policy (Delta = 0, same k); LUFFY, the task's reference answers "
           "(`teacher:reference`: a perfect teacher, in one fixed style); ExGRPO, the run's own replay buffer; "
           "RLEP, the verified successes of a finished GRPO run of another seed (1000), 4 samples per "
           "training prompt (`pool/`), whose cost is not booked to RLEP. docs/baselines.md lists every "
           "departure from each paper's settings.")


def final_entropy(run: Path, last: int = 10) -> float:
    """Mean policy entropy (TRL's, per completion token) over the run's last `last` steps."""
    rows = [r["signal/entropy"] for r in read_jsonl(RunDir(run).metrics) if "signal/entropy" in r][-last:]
    return sum(rows) / len(rows)


def extra_table(out: Path) -> str:
    summary = json.loads((out / "summary.json").read_text())
    lines = ["| method | final mean@k (± SE) | best | steps to GRPO final (reached) | tokens to GRPO final |"
             " entropy, last 10 steps (TRL's, over the loss's rows) | generated tokens: on-policy / guide /"
             " estimation | total steps |",
             "|---|---|---|---|---|---|---|---|"]
    for name in summary["order"]:
        mean, runs = summary["methods"][name]["mean"], sorted((out / "runs").glob(f"{name}-s*"))
        ent = sum(final_entropy(r) for r in runs) / len(runs)
        kinds = [json.loads(RunDir(r).summary.read_text())["generated_tokens_by_kind"] for r in runs]
        tok = {k: sum(x[k] for x in kinds) / len(kinds) for k in ("on_policy", "guide", "estimation")}
        reach = "never" if mean["steps_to_target"] is None else f"{mean['steps_to_target']:.0f}"
        to_tok = "never" if mean["tokens_to_target"] is None else f"{mean['tokens_to_target']:.0f}"
        se = mean["final_accuracy_se"]
        lines.append(f"| {name} | {mean['final_accuracy']:.4f} ± {'n/a' if se is None else f'{se:.4f}'} |"
                     f" {mean['best_accuracy']:.4f} | {reach} ({mean['reached']}/{len(runs)}) | {to_tok} | {ent:.4f} |"
                     f" {tok['on_policy']:.0f} / {tok['guide']:.0f} / {tok['estimation']:.0f} |"
                     f" {mean['total_steps']:.0f} |")
    return "\n".join(lines)


def run(a) -> int:
    out = Path(a.out)
    compare = ["compare", *METHODS, "--config", a.config, "--seeds", str(a.seeds), "--out", str(out), "--quiet"]
    if npo(compare) != 0:
        return 1
    signal_json = RunDir(out / "runs" / "grpo-s0").signal(a.step, False).with_suffix(".json")
    if not signal_json.exists():
        sources = ["teacher:reference", "replay", f"pool:{out / 'pool' / 'pool.jsonl'}"]
        args = ["signal", str(out / "runs" / "grpo-s0"), "--step", str(a.step), "--deltas", a.deltas, "--k", str(a.k),
                "--prompts", str(a.prompts), *(x for s in sources for x in ("--source", s))]
        if npo(args) != 0:
            return 1
    result = json.loads(signal_json.read_text())
    text = "\n\n".join([f"# The paper's comparison on `{a.config}` ({a.seeds} seeds)", SOURCES,
                        (out / "report.md").read_text(), "## More columns", extra_table(out),
                        f"## S = Q / V of each source on F of grpo-s0 at step {a.step}", table(result)])
    (out / "paper_table.md").write_text(text + "\n")
    print(f"wrote {out / 'paper_table.md'}")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", required=True)
    p.add_argument("--step", type=int, default=100, help="T of the signal measurement (a checkpoint of grpo-s0)")
    p.add_argument("--deltas", default="25,50", help="near-future look-aheads; replay is rebuilt from T - Delta")
    p.add_argument("--k", type=int, default=2, help="tries per failed prompt (the demo's npo.k)")
    p.add_argument("--prompts", type=int, default=512)
    sys.exit(run(p.parse_args()))
