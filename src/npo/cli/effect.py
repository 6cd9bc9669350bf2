"""`npo effect RUN...`: what the guides of a run's windows did to the prompts they were given to.

A run trained with `npo.controls` writes one `effect` line per guided window to events.jsonl
(`npo.loops.steps.measure_effect`, `npo.algo.controls`): per arm (the window's guide source) and for
the controls, how many prompts, their mean p_hat when assigned (the balance check), their accuracy
after the window, and the arm's effect against the controls with its bootstrap CI (with
`npo.effect_at_end`, one more line per window measured `at` the run's last step). This command puts
them in one table over the runs' windows, beside the arm's S = Q/V where `npo signal` measured it at
the window's start (RUN/signals/), and draws effect.png: the effect with its CI per window and arm,
and S per arm.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from npo.errors import UserError
from npo.rundir.layout import RunDir, atomic_write_bytes, read_jsonl


def effect_rows(root: Path) -> list[dict]:
    """One row per (window, step measured at, arm) of the run at `root`, with S = Q/V of that arm at the
    window's start when `npo signal` measured it there."""
    run = RunDir(root)
    events = read_jsonl(run.events) if run.events.is_file() else []
    deltas = {e.get("index"): e.get("lookahead") for e in events if e.get("event") == "intervention"}
    rows = []
    for e in (e for e in events if e.get("event") == "effect"):
        start, end = e["window"]
        signal = signal_rows(run, start)
        for arm, a in e["arms"].items():
            control = a["control"]
            rows.append({"run": str(root), "index": e["index"], "window": [start, end], "at": e.get("at", end),
                         "arm": arm, "n": a["n"],
                         "p_hat": a["p_hat"], "after": a["after"], "control_n": control["n"],
                         "control_p_hat": control["p_hat"], "control_after": control["after"],
                         "effect": a["effect"], "ci": a["ci"], "versus_first": a.get("versus_first"),
                         "heldout_accuracy": e.get("heldout_accuracy"),
                         "S": signal_at(signal, arm, deltas.get(e["index"]))})
    return rows


def signal_rows(run: RunDir, step: int) -> list[dict]:
    """The rows of `npo signal`'s result at `step` (none if it was not measured there)."""
    path = run.signal(step, False).with_suffix(".json")
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def signal_at(rows: list[dict], arm: str, delta: int | None) -> float | None:
    """S of `arm` (near_future[:DELTA]: at its Delta, else the intervention's) among `npo signal`'s `rows`,
    if measured. An arm label is its source spec (`npo.arms`; a repeated one ends in #2, #3...)."""
    spec = arm.split("#")[0]
    kind, _, d = spec.partition(":")
    want = int(d) if kind == "near_future" and d else delta
    for r in rows:
        if (kind == "near_future" and r["source"] == kind and r["delta"] == want) or (
                kind != "near_future" and r["source"] in (kind, spec)):
            return r["S"]
    return None


def table(rows: list[dict]) -> str:
    def num(x, spec=".3f"):
        return "" if x is None else format(x, spec)

    lines = ["| run | window | at | arm | n | p_hat | after | controls | p_hat | after | effect [95% CI] | S | held-out |",
             "|---" * 13 + "|"]
    for r in rows:
        ci = f" [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]" if r["ci"] else ""
        lines.append(f"| {Path(r['run']).name} | {r['window'][0]}-{r['window'][1]} | {r['at']} | {r['arm']} | {r['n']} |"
                     f" {num(r['p_hat'])} | {num(r['after'])} | {r['control_n']} | {num(r['control_p_hat'])} |"
                     f" {num(r['control_after'])} | {num(r['effect'], '+.3f')}{ci} | {num(r['S'], '.3g')} |"
                     f" {num(r['heldout_accuracy'])} |")
    return "\n".join(lines + ["", "effect: the arm's mean gain (accuracy at step `at` - p_hat when assigned) "
                              "minus the controls'; CI: a stratified bootstrap over prompts"])


def plot_effect(rows: list[dict], path: Path) -> None:
    """Left: each arm's effect with its CI, grouped by (run, window, step measured at); right: each arm's S there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((Path(r["run"]).name, *r["window"], r["at"]) for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    width = 0.8 / len(arms)
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(10, 1.2 * len(groups) + 4), 4.5))
    for j, arm in enumerate(arms):
        mine = [r for r in rows if r["arm"] == arm]
        x = [groups.index((Path(r["run"]).name, *r["window"], r["at"])) + (j - (len(arms) - 1) / 2) * width
             for r in mine]
        shown = [(xi, r) for xi, r in zip(x, mine) if r["effect"] is not None]
        left.errorbar([xi for xi, _ in shown], [r["effect"] for _, r in shown], fmt="o", capsize=3, color=f"C{j}",
                      label=arm, yerr=[[r["effect"] - r["ci"][0] for _, r in shown],
                                       [r["ci"][1] - r["effect"] for _, r in shown]])
        with_s = [(xi, r["S"]) for xi, r in zip(x, mine) if r["S"] is not None]
        right.bar([xi for xi, _ in with_s], [v for _, v in with_s], width=width, color=f"C{j}", label=arm)
    left.axhline(0, color="grey", linewidth=1)
    for ax in (left, right):
        ax.set_xticks(range(len(groups)), [f"{g[0]}\n{g[1]}-{g[2]}" + (f" @{g[3]}" if g[3] != g[2] else "")
                                           for g in groups], fontsize=7,
                      rotation=45 if len(groups) > 6 else 0)
    left.set(title="effect on the prompts given a guide (95% CI)", ylabel="gain treated - gain controls")
    right.set(title="S = Q/V at the window's start (npo signal)" + ("" if any(r["S"] is not None for r in rows) else
                                                                    "\nnot measured"))
    left.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def run_effect(runs: list[str], out: str | None = None) -> tuple[list[dict], Path]:
    """The rows of every run (checked, all of them, before anything is written) and the PNG's path."""
    rows = []
    for root in runs:
        if not (Path(root) / "config.yaml").is_file():
            raise UserError(f"{root}: not a run folder (no config.yaml)")
        found = effect_rows(Path(root))
        if not found:
            raise UserError(f"{root}: no effect events in events.jsonl (train with npo.controls > 0)")
        rows += found
    path = Path(out) if out else (Path(runs[0]) / "effect.png" if len(runs) == 1 else Path("effect.png"))
    if not path.parent.is_dir():
        raise UserError(f"--out {path}: no such folder {path.parent}")
    plot_effect(rows, path)
    return rows, path
