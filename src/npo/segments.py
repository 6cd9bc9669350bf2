"""Segments: the unit every training loop is built from, and the one writer of intervention events.

A run is a chain of *segments* of TRL training. Segments on the final trajectory write
`checkpoints/`, `metrics.jsonl` and `eval.jsonl`; a near-future look-ahead is a segment in its own
folder (`RunDir.lookahead`). Every segment starts from a checkpoint (weights, optimizer, scheduler,
RNG states, data position) or from the base model at step 0, and ends with a checkpoint, so
stopping and resuming is invisible in the metrics (tests/test_rollback.py) and "roll back to t" is
simply "start the next segment from the checkpoint at t".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from npo.accounting import Cost, Ledger
from npo.callbacks import Evaluator, MetricsWriter, Progress, StopAt
from npo.config import RunConfig
from npo.guides import Guidance
from npo.models.load import load_policy
from npo.rewards import TaskScorer
from npo.rundir import METRICS, RunDir, append_jsonl
from npo.trainer import build_trainer


@dataclass
class Context:
    """What every segment of a run shares: its config, folder, verifier, data, evaluation and books."""

    cfg: RunConfig
    run: RunDir
    model_path: Path  # the model the run starts from
    scorer: TaskScorer
    style: str
    train_items: list
    evaluator: Evaluator
    progress: Progress
    show_progress: bool
    ledger: Ledger = field(default_factory=Ledger)


@dataclass
class Segment:
    """What a segment did: the prompts each step trained on (step -> item indices), and its cost."""

    visited: dict[int, list[int]]
    cost: Cost


def run_segment(ctx: Context, start: int, stop: int, *, out_dir: Path, guidance: Guidance | None = None,
                main: bool = True, watch=None) -> Segment:
    """Train from step `start` (its checkpoint, or the base model at 0) to `stop`, checkpoint there.
    `main`: on the final trajectory (evaluated, metrics in the run's files); else a look-ahead whose
    metrics go to `out_dir`. `watch`: a callback that may stop the segment early (the plateau rule,
    AutoNPO's controller); it receives the trainer's gate outcomes when it has `on_gate`."""
    t0, tokens0 = time.perf_counter(), ctx.ledger.on_policy_tokens
    model, tokenizer = load_policy(ctx.model_path)
    callbacks = [MetricsWriter(ctx.run.metrics if main else out_dir / METRICS, ctx.scorer.stats), StopAt(stop)]
    bar = ctx.progress if main else Progress(ctx.cfg.train.steps, initial=start, desc=f"look-ahead {start}->{stop}",
                                             enabled=ctx.show_progress, leave=False)
    callbacks += [ctx.evaluator, bar] if main else [bar]
    if watch is not None:
        callbacks.append(watch)
    trainer = build_trainer(ctx.cfg, out_dir, model, tokenizer, ctx.scorer, ctx.style, ctx.train_items, callbacks,
                            guidance=guidance, ledger=ctx.ledger, on_gate=getattr(watch, "on_gate", None))
    # look-aheads branch off the final trajectory too: every segment starts from its checkpoints
    trainer.train(resume_from_checkpoint=str(ctx.run.checkpoint(start)) if start > 0 else None)
    if not main:
        bar.close()
    cost = Cost(trainer.state.global_step - start, time.perf_counter() - t0, ctx.ledger.on_policy_tokens - tokens0)
    return Segment(dict(trainer.visited), cost)


def record_intervention(ctx: Context, guidance: Guidance, *, index: int, kind: str, trigger: str, delta: int,
                        guide_mode: str, lookahead: Cost, seconds: float, **extra) -> None:
    """The `intervention` line of events.jsonl (README "The run directory"), and its guides booked."""
    s = guidance.stats
    ctx.ledger.book_guides(s)
    append_jsonl(ctx.run.events, {
        "event": "intervention", "index": index, "kind": kind, "step": guidance.start, "trigger": trigger,
        "lookahead": delta, "window": [guidance.start, guidance.end], "source": guidance.source.kind,
        "guide_checkpoint": guidance.source.name, "guide_step": guidance.source.step, "guide_mode": guide_mode,
        "guides": {"requested": s.requested, "found": s.found, "injected": s.injected},
        "compute": {"lookahead_steps": lookahead.steps, "lookahead_seconds": round(lookahead.seconds, 2),
                    "lookahead_tokens": lookahead.tokens, "guide_samples": s.samples, "guide_tokens": s.tokens,
                    "guide_seconds": round(s.seconds, 2), "seconds": round(seconds, 2)},
        **extra,
    })
