"""`npo demo`: the main job. GRPO, the `self` control, NPO and AutoNPO from the same warm start with
the same seeds, on the demo regime (configs/demo.yaml), then one report: report.md, curves.png,
summary.json (npo.cli.report) and the issue's targets checked against what was measured.

The four methods are presets over the one config, so they differ only where the method does:
- grpo:    plain GRPO (no interventions)
- self:    NPO's interventions and windows, guides from the current policy (Delta = 0, same k): the
           control that separates "a later checkpoint" from "more tries"
- npo:     early bootstrapping and a plateau breakthrough, guides from the run's own near future
- autonpo: the controller decides when and how far (no manual interventions)
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from npo.cli.compare import run_methods
from npo.cli.report import fmt_se
from npo.config.presets import DEFAULT_CONFIG, METHOD_PRESETS
from npo.rundir.layout import default_out

PRESETS = {name: METHOD_PRESETS[name] for name in ("grpo", "self", "npo", "autonpo")}  # the demo's four

METHODS_NOTE = """## Methods

All four start from the same warm start and see the same prompts in the same order per seed.

- `grpo`: plain GRPO on TRL's GRPOTrainer.
- `self`: NPO's interventions and windows with guides from the current policy (Delta = 0, same k): the
  control that separates a later checkpoint from more tries.
- `npo`: early bootstrapping and a plateau breakthrough, guides from the run's own near future.
- `autonpo`: the controller decides when to intervene and how far to look (no manual interventions).
"""

# --quick: the same four methods at toy size, from a warm start of its own (300 steps: about 35 s to
# build, 9% greedy accuracy against the full one's 35%), so that a first look takes under two minutes
# from an empty cache (BENCHMARKS.md); the tests use it.
QUICK = [
    "model.warmup.steps=300",
    "train.steps=40", "train.prompts_per_step=8", "train.checkpoint_every=5",
    "eval.every=10", "eval.n=100", "eval.samples=2",
    "npo.interventions=[{kind: bootstrap, lookahead: 10, window: 10}, "
    "{kind: plateau, at_step: 20, lookahead: 10, window: 10}]",
    "autonpo.deltas=[5, 10]", "autonpo.window=10", "autonpo.warmup_steps=5", "autonpo.stagnation_window=10",
    "autonpo.cooldown=5",
]


def method_overrides(quick: bool, extra: list[str]) -> dict[str, list[str]]:
    """name -> overrides of the config: the preset, then --quick, then the user's --set."""
    size = QUICK if quick else []  # before the presets: grpo's and autonpo's "no interventions" must win
    return {name: [*size, *preset, *extra] for name, preset in PRESETS.items()}


def targets(result: dict) -> list[dict]:
    """The paper's claims at our scale, each with what was measured and whether it was met (None: not
    measurable, as when GRPO ended no higher than it started, so that its final accuracy is reached
    at step 0)."""
    m = {name: x["mean"] for name, x in result["methods"].items()}
    seeds = {name: x["seeds"] for name, x in result["methods"].items()}

    def reached_all(name):
        return all(s["steps_to_target"] is not None for s in seeds[name])

    half = m["grpo"]["final_steps"] / 2
    npo_steps, self_steps = m["npo"]["steps_to_target"], m["self"]["steps_to_target"]
    out = [{
        "target": f"NPO reaches GRPO's final accuracy in at most half of GRPO's steps (<= {half:.0f})",
        "measured": f"NPO {_steps(npo_steps)} steps ({m['npo']['reached']}/{len(seeds['npo'])} seeds reached), "
                    f"GRPO {_steps(m['grpo']['steps_to_target'])}",
        "met": reached_all("npo") and npo_steps <= half,
    }, {
        "target": "NPO reaches it sooner than the self control",
        "measured": f"NPO {_steps(npo_steps)}, self {_steps(self_steps)} "
                    f"({m['self']['reached']}/{len(seeds['self'])} seeds reached)",
        "met": reached_all("npo") and (self_steps is None or not reached_all("self") or npo_steps < self_steps),
    }]
    start, final = m["grpo"].get("initial_accuracy"), m["grpo"]["final_accuracy"]
    if start is not None and final <= start:  # the target is the start: reaching it says nothing
        for row in out:
            row["measured"] = (f"no gain to reach: GRPO ended at {final:.4f}, not above its start "
                               f"({start:.4f})")
            row["met"] = None
    for other in ("grpo", "self"):
        a, b = m["autonpo"], m[other]
        out.append({
            "target": f"AutoNPO's final accuracy is above {other}'s",
            "measured": f"{a['final_accuracy']:.4f} ± {fmt_se(a['final_accuracy_se'])} vs "
                        f"{b['final_accuracy']:.4f} ± {fmt_se(b['final_accuracy_se'])} (mean ± SE over seeds)",
            "met": a["final_accuracy"] > b["final_accuracy"],
        })
        if a.get("initial_accuracy") is not None and a["final_accuracy"] <= a["initial_accuracy"]:
            out[-1]["measured"] += f"; AutoNPO ended no higher than it started ({a['initial_accuracy']:.4f})"
            out[-1]["met"] = None  # beating a method that lost more is no result
    return out


def _steps(x) -> str:
    return "never" if x is None else f"{x:.0f}"


def targets_markdown(rows: list[dict]) -> str:
    lines = ["## Targets, as measured", "", "| target | measured | met |", "|---|---|---|"]
    verdict = {True: "yes", False: "no", None: "not measurable"}
    lines += [f"| {r['target']} | {r['measured']} | {verdict[r['met']]} |" for r in rows]
    return "\n".join(lines + ["", "A target is met on the means over the seeds above; with one seed it is one "
                              "sample, not evidence (run `--seeds 3`).", ""])


def run_demo(a) -> int:
    config = Path(a.config or DEFAULT_CONFIG)
    out = Path(a.out or default_out(str(config)))  # runs/demo-<time> for the default config
    command = ["npo", "demo", "--seeds", str(a.seeds), "--out", str(out), *(["--quick"] if a.quick else [])]
    if a.config:
        command += ["--config", str(config)]
    for text in a.set:
        command += ["--set", text]
    methods = {name: (config, sets) for name, sets in method_overrides(a.quick, a.set).items()}
    t0 = time.perf_counter()
    run_methods(methods, a.seeds, out, [" ".join(shlex.quote(x) for x in command),
                                        f"# one run alone: npo train {out}/runs/npo-s0/config.yaml"],
                show_progress=not a.quiet, title="npo demo",
                appendix=lambda result: METHODS_NOTE + "\n" + targets_markdown(targets(result)))
    print((out / "report.md").read_text())
    print(f"wrote {out / 'report.md'}, {out / 'curves.png'}, {out / 'summary.json'}; "
          f"wall {time.perf_counter() - t0:.0f} s")
    return 0
