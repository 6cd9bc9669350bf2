"""`npo signal RUN --step T --deltas 5,10,20,40`: Q, V and S of guide sources on a run's own checkpoints.

Forward (default): the checkpoint at T is the current policy pi_t; sources are the checkpoints T + Delta
(near future), plus Delta = 0 (the policy itself: fresh resampling, always reported so that the gain of
the future over k more tries is visible). `--backward`: T is the source for the policies T - Delta, as
AutoNPO uses it. `--source` adds any other source kind on the same prompts, built by the same
`npo.guides.sources.make_source` training uses: `self` (always measured: the Delta = 0 row), `replay`,
`teacher:PATH`, `teacher:reference`, `teacher_model:PATH`, `checkpoint:PATH`, `pool:PATH`. Sources
without behaviour log-probs (traces, pools, a teacher model with another tokenizer) get V from the stated
proxy. `replay` is the run's replay buffer as saved with checkpoint T (a run trained with source replay);
for any other run it is rebuilt the way training collects it, from n samples of each earlier checkpoint
T - Delta on the probe's prompts (the entropy of a success then estimated by its mean -log p).

F is measured by fresh rollouts of the current policy: n samples (the run's num_generations) for each
of --prompts training prompts drawn with --seed; a prompt is in F when its p_hat < tau (`--tau`,
default the run's npo.tau).
Writes RUN/signal/step-T[-backward].json and .png (atomic), prints a markdown table.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from transformers.utils import logging as hf_logging

from npo.algo.estimators import q_gain
from npo.config.checks import SourceSpec
from npo.errors import UserError
from npo.guides.measure import Probe
from npo.guides.sources import PolicySource, SelfSource, check_source, make_source
from npo.rundir.layout import RunDir, atomic_write_bytes, atomic_write_json


def run_signal(run_root, step: int, deltas: list[int], *, k: int = 8, prompts: int = 256, backward: bool = False,
               sources: list[str] = (), seed: int = 0, boot: int = 500, force: bool = False,
               tau: float | None = None) -> dict:
    for spec in sources:  # validate before any model is loaded
        if (why := SourceSpec().error(spec)) or spec == "near_future" or spec == "pool:":
            raise UserError(f"--source {spec}: {why or 'near_future is measured through --deltas'}")
        check_source(spec)
    if tau is not None and not 0 < tau <= 1:
        raise UserError(f"--tau {tau}: must be in (0, 1]")
    earlier = RunDir(Path(run_root)).signal(step, backward).with_suffix(".json")
    if earlier.exists() and not force:  # nothing a command wrote is replaced silently
        raise UserError(f"{earlier}: exists (an earlier npo signal at this step); --force replaces it")
    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    probe = Probe.from_run(run_root, prompts=prompts, seed=seed, k=k, boot=boot, tau=tau)
    sampling = {"k": k, "temperature": probe.temperature, "max_new_tokens": probe.max_new}

    def checkpoint(ref, kind: str) -> PolicySource:  # a step of the run, or a model folder
        return PolicySource(probe.policy(ref), name=str(ref), step=ref if isinstance(ref, int) else None, kind=kind,
                            **sampling)

    own = SelfSource(**sampling)  # the policy itself (Delta = 0): an independent resample
    rows = [probe.measure(step, own, "self", 0)] if not backward else []
    for d in deltas:
        if backward:  # each policy T - Delta beside its own Delta = 0 reference
            rows += [probe.measure(step - d, own, "self", 0),
                     probe.measure(step - d, checkpoint(step, "near_future"), "near_future", d)]
        else:
            rows.append(probe.measure(step, checkpoint(step + d, "near_future"), "near_future", d))
    for spec in (s for s in sources if s != "self"):  # every kind through the one factory training uses
        buffer = probe.replay_buffer(step, [step - d for d in deltas]) if spec == "replay" else None
        source = make_source(spec, sampling=sampling, task=probe.scorer.task, style=probe.style, load=probe.policy,
                             buffer=buffer, train_items=probe.train_items)
        rows.append(probe.measure(step, source, spec, None))
    probe.scorer.close()
    add_q_gains(rows, probe.boot, seed)
    result = {"run": str(probe.run.root), "step": step, "backward": backward, "k": k, "prompts": len(probe.items),
              "n": probe.n, "tau": probe.tau, "seed": seed, "bootstrap": boot,
              "decision_V": "token-level second moment E[mean_j w_j^2] over all k samples on F, median of 5 means",
              "generated_tokens": probe.generated_tokens, "seconds": round(time.perf_counter() - t0, 2),
              "rows": rows}
    out = probe.run.signal(step, backward)
    atomic_write_json(out.with_suffix(".json"), result)
    plot_signal(result, out.with_suffix(".png"))
    result["files"] = [str(out.with_suffix(".json")), str(out.with_suffix(".png"))]
    return result


def add_q_gains(rows: list[dict], boot: int, seed: int) -> None:
    """Q - Q(0) with a paired CI on every row probed on the same F as a `self` (Delta = 0) row."""
    reference = {}
    for r in rows:
        if r["source"] == "self":
            reference = r
        elif reference and r["current_step"] == reference["current_step"] and len(r["found"]) == len(
                reference["found"]):
            r.update(q_gain(reference["found"], r["found"], boot=boot, seed=seed))


def table(result: dict) -> str:
    def ci(r, key):
        c = r.get(f"{key}_ci")
        return f"{r[key]:.3g} [{c[0]:.3g}, {c[1]:.3g}]" if c else f"{r[key]:.3g}"

    lines = ["| source | Delta | policy step | F | found | Q [95% CI] | Q - Q(0) [paired 95% CI] | V [95% CI] |"
             " S [95% CI] | V correct | V seq |", "|---" * 11 + "|"]
    for r in result["rows"]:
        lines.append(f"| {r['source']} | {'' if r['delta'] is None else r['delta']} | {r['current_step']} |"
                     f" {r['n_failed']} | {r['n_found']} | {ci(r, 'Q')} | {ci(r, 'dQ') if 'dQ' in r else ''} |"
                     f" {ci(r, 'V')} | {ci(r, 'S')} |"
                     f" {r.get('V_correct', float('nan')):.3g} | {r.get('V_seq', float('nan')):.3g} |")
    kinds = sorted({r["V_kind"] for r in result["rows"] if "V_kind" in r})
    return "\n".join(lines + ["", "V: " + "; ".join(kinds) + " (decisions use V; V correct and V seq: the "
                               "source's correct trajectories only)"])


def plot_signal(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    self_rows = [r for r in result["rows"] if r["source"] == "self"][:1]
    for label in dict.fromkeys(r["source"] for r in result["rows"] if r["delta"] and r["source"] != "self"):
        rows = sorted(self_rows + [r for r in result["rows"] if r["source"] == label], key=lambda r: abs(r["delta"]))
        xs = [abs(r["delta"]) for r in rows]
        for ax, key in zip(axes, ("Q", "V", "S")):
            ys = [r[key] for r in rows]
            cis = [r.get(f"{key}_ci") or [y, y] for y, r in zip(ys, rows)]
            err = [[max(y - c[0], 0) for y, c in zip(ys, cis)], [max(c[1] - y, 0) for y, c in zip(ys, cis)]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{label} (Delta = 0: self)")
    fixed = [r for r in result["rows"] if r["delta"] is None]  # checkpoint: and teacher: sources
    for i, r in enumerate(fixed):
        for ax, key in zip(axes, ("Q", "V", "S")):
            ax.axhline(r[key], linestyle="--", linewidth=1, color=f"C{i + 2}", label=r["source"])
    for ax, key in zip(axes, ("Q: failed prompts solved in k tries", "V: token-level E[w^2] (log scale)",
                              "S = Q / V")):
        ax.set(xlabel="|Delta| (steps)", title=key)
    axes[1].set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)

    fig.suptitle(f"{result['run']} step {result['step']}{' (backward)' if result['backward'] else ''}, "
                 f"k = {result['k']}, {result['prompts']} prompts, 95% bootstrap CIs", fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
