"""The comparison report of `npo compare` (and the demo): methods x seeds of finished runs -> a markdown
table, a PNG of the curves, and summary.json. Pure over the run directories' files.

- Target accuracy: the baseline method's (the first one's) mean final held-out accuracy.
- Steps to target: per seed, the first evaluated final-trajectory step whose accuracy reaches the
  target (None if never); tokens to target: the run's generated tokens (on-policy including
  look-aheads, guide, estimation) at that step.
- Speed-up per step / per compute: the baseline's mean steps (tokens) to target over the method's,
  over the seeds that reached it; None when either never does.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from npo.cli.effect import effect_rows, plot_effect
from npo.cli.effect import table as effect_table
from npo.rundir.layout import RunDir, atomic_write_bytes, atomic_write_json, atomic_write_text, read_jsonl

FIELDS = ("initial_accuracy", "final_accuracy", "best_accuracy", "steps_to_target", "final_steps", "total_steps",
          "generated_tokens", "wall_seconds", "interventions")


def load_run(folder: Path, metric: str) -> dict:
    """What the report needs from one run directory."""
    run = RunDir(folder)
    summary = json.loads(run.summary.read_text())
    evals = [(e["step"], e[metric]) for e in read_jsonl(run.evals) if e.get(metric) is not None]
    tokens = {m["step"]: m.get("signal/generated_tokens", 0.0) for m in read_jsonl(run.metrics)}
    events = read_jsonl(run.events)
    extra = []  # (step from which they count, tokens): guides per window, estimation per decision
    for e in events:
        if e.get("event") == "intervention":
            extra.append((e["window"][0], e["compute"].get("guide_tokens", 0)))
        if e.get("event") == "autonpo_decision":  # spent before the retrain from the rollback target
            extra.append((e["step"] - (e["delta"] or 0), e.get("estimation_tokens", 0)))
    made = [e for e in events if e.get("event") == "intervention"]
    return {"summary": summary, "evals": evals, "tokens": tokens, "extra": extra,
            "interventions": sorted(e["window"][0] for e in made), "made": [describe(e) for e in made]}


def describe(e: dict) -> str:
    """One intervention of events.jsonl in a line: kind, step, Delta, W, prompts with a guide, rows injected."""
    g = e.get("guides", {})
    what = (f"{g.get('found', 0)} of {g.get('requested', 0)} prompts asked had a guide, {g.get('injected', 0)} "
            f"guide rows injected")
    if e.get("kind") == "always":  # a baseline's whole run (npo.inject_when: always)
        return f"every step {e['window'][0]}-{e['window'][1]} ({e.get('source', '?')}): {what}"
    return (f"{e.get('kind', '?')} at {e['window'][0]} (Delta {e.get('lookahead')}, window "
            f"{e['window'][0]}-{e['window'][1]}, {e.get('source', '?')}): {what}")


NO_INTERVENTION = "no intervention (the run was plain GRPO: for AutoNPO, no trigger fired)"


def identical_curves(result: dict) -> dict[str, str]:
    """method -> the earlier method whose mean curve it equals at every evaluated step."""
    names, out = list(result["curves"]), {}
    for i, name in enumerate(names):
        twin = next((b for b in names[:i] if result["curves"][b] == result["curves"][name]), None)
        if twin is not None:
            out[name] = twin
    return out


def tokens_at(run: dict, step: int) -> float:
    """Generated tokens of the whole run when the final trajectory reached `step`."""
    base = run["tokens"].get(step, 0.0)
    return base + sum(t for s, t in run["extra"] if s < step)


def steps_to(evals: list[tuple[int, float]], target: float) -> int | None:
    return next((s for s, acc in evals if acc >= target - 1e-12), None)


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _se(xs):
    if len(xs) < 2:
        return None  # unknown from one seed, printed n/a: never 0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def build(runs: dict[str, list[dict]]) -> dict:
    """runs: method -> one loaded run per seed (baseline first). Returns summary.json's content."""
    baseline = next(iter(runs))
    finals = {m: [r["evals"][-1][1] for r in rs] for m, rs in runs.items()}
    target = sum(finals[baseline]) / len(finals[baseline])
    methods = {}
    for m, rs in runs.items():
        seeds = []
        for r in rs:
            s = r["summary"]
            reach = steps_to(r["evals"], target)
            seeds.append({
                "initial_accuracy": r["evals"][0][1],
                "final_accuracy": r["evals"][-1][1], "best_accuracy": max(a for _, a in r["evals"]),
                "steps_to_target": reach, "tokens_to_target": None if reach is None else tokens_at(r, reach),
                "final_steps": s["final_steps"], "total_steps": s["total_steps"],
                "generated_tokens": s["generated_tokens"], "wall_seconds": s["wall_seconds"],
                "interventions": s.get("interventions", 0), "interventions_made": r["made"],
            })
        mean = {k: _mean([x[k] for x in seeds]) for k in (*FIELDS, "tokens_to_target")}
        mean["reached"] = sum(x["steps_to_target"] is not None for x in seeds)
        mean["final_accuracy_se"] = _se([x["final_accuracy"] for x in seeds])
        mean["final_accuracy_range"] = [min(finals[m]), max(finals[m])]
        mean["best_accuracy_se"] = _se([x["best_accuracy"] for x in seeds])
        mean["best_accuracy_range"] = [min(x["best_accuracy"] for x in seeds), max(x["best_accuracy"] for x in seeds)]
        methods[m] = {"mean": mean, "seeds": seeds}
    curves = {m: mean_curve(rs) for m, rs in runs.items()}
    base = methods[baseline]["mean"]
    for m in methods.values():
        mm = m["mean"]
        mm["speedup_per_step"] = _ratio(base["steps_to_target"], mm["steps_to_target"])
        mm["speedup_per_compute"] = _ratio(base["tokens_to_target"], mm["tokens_to_target"])
    return {"target_accuracy": target, "baseline": baseline, "order": list(runs), "methods": methods,
            "curves": curves}


def mean_curve(rs: list[dict]) -> dict[int, float]:
    """Evaluated step -> held-out accuracy averaged over the seeds evaluated at that step."""
    per: dict[int, list[float]] = {}
    for r in rs:
        for step, acc in r["evals"]:
            per.setdefault(step, []).append(acc)
    return {step: sum(v) / len(v) for step, v in sorted(per.items())}


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _fmt(x, spec=".3f"):
    return "never" if x is None else format(x, spec)


def _speed(x):
    return "never" if x is None else f"{x:.2f}x"


def _count(x: float) -> str:
    """A count averaged over seeds: an integer when it is one (2, not 2.0)."""
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def fmt_se(se: float | None) -> str:
    return "n/a" if se is None else f"{se:.4f}"


def markdown(result: dict, metric: str, commands: list[str], title: str = "npo compare") -> str:
    n = max(len(m["seeds"]) for m in result["methods"].values())
    lines = [f"# {title}: {', '.join(result['methods'])}", "",
             f"Held-out metric: `{metric}`; {n} seed(s) per method. Target = the baseline "
             f"(`{result['baseline']}`) mean final accuracy = {result['target_accuracy']:.4f}.", "",
             "| method | final (mean ± SE) | final range | best (mean ± SE) | best range | steps to target (reached) |"
             " speed-up per step |"
             " speed-up per compute | final steps | total steps | generated tokens | wall s | interventions |",
             "|---" * 13 + "|"]
    for name, m in result["methods"].items():
        a = m["mean"]
        lines.append(
            f"| {name} | {a['final_accuracy']:.4f} ± {fmt_se(a['final_accuracy_se'])} | "
            f"{a['final_accuracy_range'][0]:.4f}-{a['final_accuracy_range'][1]:.4f} | "
            f"{a['best_accuracy']:.4f} ± {fmt_se(a['best_accuracy_se'])} | "
            f"{a['best_accuracy_range'][0]:.4f}-{a['best_accuracy_range'][1]:.4f} | "
            f"{_fmt(a['steps_to_target'], '.0f')} ({a['reached']}/{len(m['seeds'])}) | "
            f"{_speed(a['speedup_per_step'])} | {_speed(a['speedup_per_compute'])} | "
            f"{a['final_steps']:.0f} | {a['total_steps']:.0f} | {a['generated_tokens']:.0f} | "
            f"{a['wall_seconds']:.0f} | {_count(a['interventions'])} |")
    lines += ["", "Steps (tokens) to target average the seeds that reached it; a speed-up is the baseline's over "
              "the method's. Total steps count discarded look-ahead steps; generated tokens count on-policy, "
              "look-ahead, guide and estimation tokens.", ""]
    names = list(result["methods"])
    lines += [f"Held-out `{metric}` per evaluated step (mean over seeds):", "",
              "| step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for step in sorted({st for c in result["curves"].values() for st in c}, key=int):
        accs = [result["curves"][n].get(step) for n in names]
        lines.append(f"| {step} | " + " | ".join("" if a is None else f"{a:.4f}" for a in accs) + " |")
    lines.append("")
    made = [(name, i, line) for name, m in result["methods"].items() for i, x in enumerate(m["seeds"])
            for line in x["interventions_made"] or ([] if name == result["baseline"] else [NO_INTERVENTION])]
    if made:
        lines += ["Interventions made:", "", *[f"- {name} seed {i}: {line}" for name, i, line in made], ""]
    same = identical_curves(result)
    if same:
        lines += [*[f"`{a}` evaluated exactly as `{b}` at every step: the same run, as far as the held-out set "
                    f"can tell." for a, b in same.items()], ""]
    lines += ["Reproduce:", "", "```bash", *commands, "```", ""]
    return "\n".join(lines)


LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "x", "D", "v", "+")


def plot(runs: dict[str, list[dict]], result: dict, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    same = identical_curves(result)
    for i, (name, rs) in enumerate(runs.items()):
        curve = result["curves"][name]
        steps, mean = list(curve), list(curve.values())
        per = [[a for r in rs for s2, a in r["evals"] if s2 == s] for s in steps]
        color = f"C{i}"
        # each method its own line style and marker, later ones thinner: a line that equals another's
        # (a run that never intervened) still shows both
        style = {"color": color, "label": name + (f" (= {same[name]})" if name in same else ""),
                 "linestyle": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)],
                 "linewidth": max(0.8, 2.6 - 0.5 * i), "markersize": max(3, 8 - 1.5 * i)}
        axes[0].plot(steps, mean, **style)
        axes[0].fill_between(steps, [min(p) for p in per], [max(p) for p in per], color=color, alpha=0.12)
        toks = [sum(tokens_at(r, s) for r in rs) / len(rs) for s in steps]
        axes[1].plot(toks, mean, **style)
        for s in sorted({s for r in rs for s in r["interventions"]}):
            axes[0].axvline(s, color=color, linestyle=":", linewidth=1)
    for ax in axes:
        ax.axhline(result["target_accuracy"], color="gray", linestyle="--", linewidth=1, label="target")
    axes[0].set(xlabel="optimizer step on the final trajectory", ylabel=f"held-out {metric}",
                title="per step (dotted: interventions)")
    axes[1].set(xlabel="generated tokens (on-policy + look-ahead + guide + estimation)", title="per compute")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_report(folders: dict[str, list[Path]], out: Path, commands: list[str], metric: str | None = None,
                 title: str = "npo compare", appendix=None) -> dict:
    """Load the runs, write out/report.md, out/curves.png, out/summary.json; return the summary.
    appendix: result -> markdown added at the end of report.md (the demo's methods and targets)."""
    if metric is None:  # mean@K is steadier than greedy when every run has it
        evs = [read_jsonl(RunDir(f).evals) for fs in folders.values() for f in fs]
        metric = "mean_at_k" if all(e and e[0].get("mean_at_k") is not None for e in evs) else "accuracy"
    runs = {m: [load_run(f, metric) for f in fs] for m, fs in folders.items()}
    result = build(runs)
    result["metric"] = metric
    atomic_write_json(out / "summary.json", result)
    text = markdown(result, metric, commands, title) + effects(folders, out)
    atomic_write_text(out / "report.md", text + ("\n" + appendix(result) if appendix else ""))
    plot(runs, result, metric, out / "curves.png")
    return result


def effects(folders: dict[str, list[Path]], out: Path) -> str:
    """The runs trained with npo.controls: `npo effect`'s table for report.md, and out/effect.png."""
    rows = [r for fs in folders.values() for f in fs for r in effect_rows(f)]
    if not rows:
        return ""
    plot_effect(rows, out / "effect.png")
    return ("\n## What the guides did to the prompts they were given to (npo.controls, effect.png)\n\n"
            + effect_table(rows) + "\n")
