"""The NPO loop, top to bottom. Plain GRPO is the same loop with no interventions.

A run is a chain of *segments* of TRL training. Segments on the final trajectory write
`checkpoints/`, `metrics.jsonl` and `eval.jsonl`; each near-future intervention adds one discarded
look-ahead segment under `lookahead/<i>-<kind>/`. Every segment starts from a checkpoint (weights,
optimizer, scheduler, RNG states, data position) or from the base model at step 0, and ends with a
checkpoint, so stopping and resuming is invisible in the metrics (tests/test_rollback.py) and
"roll back to t" is simply "resume from the checkpoint at t again".

One intervention (NPO_METHOD.md section 3), with Delta = lookahead and W = window:
    1. reach step t on the final trajectory (t = 0 for bootstrap; a fixed step, or the first
       plateau for `auto-plateau`), leaving a checkpoint at t;
    2. near_future: train on, unguided, from t to t + Delta in a look-ahead folder; its checkpoint
       at t + Delta is the guide. (self: the guide is the policy being trained, no look-ahead.)
    3. roll back to t and retrain the window [t, t + W) with the guide injected into gated groups;
    4. record the intervention in events.jsonl with what it cost.
Then plain GRPO to the next intervention or to the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from npo.config import RunConfig, grpo_overrides
from npo.guides import GuideBank, Guidance, PolicySource
from npo.interventions import Intervention, parse_interventions
from npo.rundir import RunDir, append_jsonl, read_jsonl


@dataclass
class Ledger:
    """Honest accounting (NPO_METHOD.md section 5): a discarded look-ahead is real compute."""

    lookahead_steps: int = 0
    on_policy_tokens: int = 0  # final trajectory and look-aheads
    guide_tokens: int = 0
    estimation_tokens: int = 0  # AutoNPO's Q/V/S measurements
    guide_samples: int = 0
    interventions: int = 0

    def book(self, guides) -> None:
        """An intervention's guide generation (`npo.guides.GuideStats`)."""
        self.guide_tokens += guides.tokens
        self.guide_samples += guides.samples
        self.interventions += 1


@dataclass
class Context:
    cfg: RunConfig
    run: RunDir
    model_path: Path
    scorer: object
    style: str
    train_items: list
    evaluator: object
    progress: object
    show_progress: bool
    ledger: Ledger = field(default_factory=Ledger)


def run_segment(ctx: Context, start: int, stop: int, *, out_dir: Path, guidance: Guidance | None = None,
                main: bool = True, watch=None, on_trainer=None):
    """Train from step `start` (its checkpoint, or the base model at 0) to `stop`, checkpoint there."""
    from npo.callbacks import MetricsWriter, Progress, StopAt
    from npo.models.load import load_policy
    from npo.train import build_trainer

    cfg, run = ctx.cfg, ctx.run
    model, tokenizer = load_policy(ctx.model_path)
    box = []
    metrics_path = run.metrics if main else out_dir / "metrics.jsonl"
    callbacks = [MetricsWriter(metrics_path, lambda: box[0]), StopAt(stop)]
    bar = ctx.progress if main else Progress(cfg.train.steps, initial=start, desc=f"look-ahead {start}->{stop}",
                                             enabled=ctx.show_progress, leave=False)
    callbacks += [ctx.evaluator, bar] if main else [bar]
    if watch is not None:
        callbacks.append(watch)
    if guidance is not None and guidance.source.model is None:  # the `self` source: the policy itself
        guidance.source.model, guidance.source.tokenizer = model, tokenizer
    trainer = build_trainer(cfg, out_dir, model, tokenizer, ctx.scorer, ctx.style, ctx.train_items, callbacks,
                            npo=cfg.npo if cfg.method in ("npo", "autonpo") else None, guidance=guidance)
    box.append(trainer)
    if on_trainer is not None:
        on_trainer(trainer)
    trainer.generated_tokens = ctx.ledger.on_policy_tokens  # `signal/generated_tokens` counts the whole run
    # look-aheads branch off the final trajectory too: every segment starts from its checkpoints
    trainer.train(resume_from_checkpoint=str(run.checkpoint(start)) if start > 0 else None)
    ctx.ledger.on_policy_tokens = trainer.generated_tokens
    if not main:
        bar.close()
    return trainer


def train_loop(ctx: Context) -> None:
    cfg, run, steps = ctx.cfg, ctx.run, ctx.cfg.train.steps
    if cfg.method == "autonpo":
        from npo.autoloop import train_autonpo

        return train_autonpo(ctx)
    interventions = parse_interventions(cfg.npo.interventions, steps) if cfg.method == "npo" else []
    pos = 0  # the final trajectory has a checkpoint at `pos` (or is the base model at 0)
    for i, iv in enumerate(interventions):
        # 1. reach the rollback target t
        if iv.auto:
            t = _run_to_plateau(ctx, pos, iv)
            if t is None:
                append_jsonl(run.events, {"event": "plateau_not_found", "index": i, "kind": iv.kind,
                                          "searched": [pos, steps]})
                return
        else:
            t = iv.at_step
            if t > pos:
                run_segment(ctx, pos, t, out_dir=run.checkpoints)
        # 2. the guide;  3. roll back to t and retrain the window with it
        t0 = time.perf_counter()
        guidance, lookahead = _make_guidance(ctx, i, iv, t)
        window_end = min(t + iv.window, steps)
        run_segment(ctx, t, window_end, out_dir=run.checkpoints, guidance=guidance)
        pos = window_end
        # 4. the record
        _record(ctx, i, iv, t, window_end, guidance, lookahead, time.perf_counter() - t0)
        guidance.source.model = None  # free the guide
    if pos < steps:
        run_segment(ctx, pos, steps, out_dir=run.checkpoints)


def _run_to_plateau(ctx: Context, pos: int, iv: Intervention) -> int | None:
    from npo.callbacks import PlateauWatch

    p, steps = ctx.cfg.npo, ctx.cfg.train.steps
    history = [r["signal/group_accuracy"] for r in read_jsonl(ctx.run.metrics) if "signal/group_accuracy" in r]
    watch = PlateauWatch(history, p.plateau_window, p.plateau_min_gain,
                         earliest=max(p.plateau_min_step, pos + p.plateau_window),
                         latest=steps - max(iv.lookahead, iv.window))
    run_segment(ctx, pos, steps, out_dir=ctx.run.checkpoints, watch=watch)
    if watch.fired_at is not None:
        append_jsonl(ctx.run.events, {"event": "plateau_detected", "step": watch.fired_at, **watch.evidence})
    return watch.fired_at


def _make_guidance(ctx: Context, i: int, iv: Intervention, t: int) -> tuple[Guidance, dict]:
    """The guide of intervention i at step t, and the look-ahead it cost (none for `self`)."""
    from npo.models.load import load_policy

    cfg, run, p = ctx.cfg, ctx.run, ctx.cfg.npo
    lookahead = {"steps": 0, "seconds": 0.0, "tokens": 0}
    window_prompts: list[int] = []
    if p.source == "near_future":
        folder = run.root / "lookahead" / f"{i}-{iv.kind}"
        t0, before = time.perf_counter(), ctx.ledger.on_policy_tokens
        scout = run_segment(ctx, t, t + iv.lookahead, out_dir=folder, main=False)
        lookahead = {"steps": iv.lookahead, "seconds": round(time.perf_counter() - t0, 2),
                     "tokens": scout.generated_tokens - before}
        ctx.ledger.lookahead_steps += iv.lookahead
        guide_path = folder / f"checkpoint-{t + iv.lookahead}"
        model, tokenizer = load_policy(guide_path)
        name, step = str(guide_path.relative_to(run.root)), t + iv.lookahead
        # the rollback replays the same data order, so the look-ahead saw the window's prompts
        window_prompts = [x for s, idx in scout.visited if t <= s < t + iv.window for x in idx]
    else:  # set to the policy being trained by run_segment
        model, tokenizer, name, step = None, None, "self", None
    guidance = Guidance(guide_source(ctx, model, tokenizer, name, step), GuideBank(), t, t + iv.window,
                        seed=cfg.seed, bank_path=run.root / "guides" / f"{i}-{iv.kind}.json", cache=p.source != "self")
    if p.guide_mode == "ahead" and window_prompts:
        guidance.prefill(window_prompts, [ctx.train_items[x] for x in window_prompts], step=t)
    return guidance, lookahead


def guide_source(ctx: Context, model, tokenizer, name: str, step: int | None) -> PolicySource:
    """A guide policy with the run's npo.* settings (k tries at the guide temperature)."""
    p = ctx.cfg.npo
    return PolicySource(model, tokenizer, ctx.scorer, ctx.style, k=p.k, temperature=p.guide_temperature,
                        max_new_tokens=grpo_overrides(ctx.cfg)["max_completion_length"], name=name, step=step)


def _record(ctx: Context, i, iv: Intervention, t, end, guidance: Guidance, lookahead: dict, seconds) -> None:
    s = guidance.stats
    ctx.ledger.book(s)
    append_jsonl(ctx.run.events, {
        "event": "intervention", "index": i, "kind": iv.kind, "step": t,
        "trigger": "auto-plateau" if iv.auto else ("start" if iv.kind == "bootstrap" else "at_step"),
        "lookahead": iv.lookahead, "window": [t, end], "source": ctx.cfg.npo.source,
        "guide_checkpoint": guidance.source.name, "guide_step": guidance.source.step,
        "guide_mode": ctx.cfg.npo.guide_mode if ctx.cfg.npo.source == "near_future" else "on_demand",
        "guides": {"requested": s.requested, "found": s.found, "injected": s.injected},
        "compute": {"lookahead_steps": lookahead["steps"], "lookahead_seconds": lookahead["seconds"],
                    "lookahead_tokens": lookahead["tokens"], "guide_samples": s.samples,
                    "guide_tokens": s.tokens, "guide_seconds": round(s.seconds, 2),
                    "seconds": round(seconds, 2)},
    })


def ledger_summary(ledger: Ledger, final_steps: int) -> dict:
    tokens = {"on_policy": ledger.on_policy_tokens, "guide": ledger.guide_tokens,
              "estimation": ledger.estimation_tokens}
    return {"final_steps": final_steps, "total_steps": final_steps + ledger.lookahead_steps,
            "lookahead_steps": ledger.lookahead_steps, "generated_tokens": sum(tokens.values()),
            "generated_tokens_by_kind": tokens, "guide_samples": ledger.guide_samples,
            "interventions": ledger.interventions}
