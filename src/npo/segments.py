"""Segments: the unit every training loop is built from, and the one writer of intervention events.

A run is a chain of *segments* of TRL training on the run's one trainer (`Context.trainer`, built
once per process). Segments on the final trajectory write `checkpoints/`, `metrics.jsonl` and
`eval.jsonl`; a near-future look-ahead is a segment in its own folder (`RunDir.lookahead`). Every
segment starts from a checkpoint (weights, optimizer, scheduler, RNG states, data position), loaded
into the existing engine in place, and ends with one, so stopping and resuming is invisible in the
metrics (tests/test_rollback.py) and "roll back to t" is simply "start the next segment at t". The
run's first segment starts from the base model; a later segment at step 0 (the bootstrap's restart)
starts from `checkpoint-0`, written when the engine was built.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from npo.accounting import Cost, Ledger
from npo.callbacks import Evaluator, MetricsWriter, Progress, StopAt
from npo.config import RunConfig
from npo.guides import Guidance
from npo.rewards import TaskScorer
from npo.rundir import METRICS, RunDir, append_jsonl
from npo.trainer import NPOTrainer


@dataclass
class Context:
    """What every segment of a run shares: its config, folder, verifier, data, evaluation and books."""

    cfg: RunConfig
    run: RunDir
    trainer: NPOTrainer  # the run's one engine
    scorer: TaskScorer
    style: str
    train_items: list
    evaluator: Evaluator
    progress: Progress
    show_progress: bool
    ledger: Ledger = field(default_factory=Ledger)
    timings: dict = field(default_factory=dict)  # when the run started, its warm start's seconds, ...

    @property
    def is_main(self) -> bool:
        """The process that writes the run folder (the others compute the same things)."""
        return self.trainer.accelerator.is_main_process

    def event(self, record: dict) -> None:
        if self.is_main:
            append_jsonl(self.run.events, record)


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
    t0, tokens0, trainer = time.perf_counter(), ctx.ledger.on_policy_tokens, ctx.trainer
    callbacks = [MetricsWriter(ctx.run.metrics if main else out_dir / METRICS, ctx.scorer.stats), StopAt(stop)]
    bar = ctx.progress if main else Progress(ctx.cfg.train.steps, initial=start, desc=f"look-ahead {start}->{stop}",
                                             enabled=ctx.show_progress and ctx.is_main, leave=False)
    callbacks += [ctx.evaluator, bar] if main else [bar]
    if watch is not None:
        callbacks.append(watch)
    resume = None if start == 0 and not trainer.engine_built else ctx.run.checkpoint(start)
    if ctx.is_main:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    trainer.begin_segment(out_dir, callbacks, guidance=guidance, on_gate=getattr(watch, "on_gate", None))
    try:
        trainer.train(resume_from_checkpoint=None if resume is None else str(resume))
    finally:
        trainer.end_segment(callbacks)
    if not main:
        bar.close()
    cost = Cost(trainer.state.global_step - start, time.perf_counter() - t0, ctx.ledger.on_policy_tokens - tokens0)
    return Segment(dict(trainer.visited), cost)


def record_intervention(ctx: Context, guidance: Guidance, *, index: int, kind: str, trigger: str, delta: int,
                        guide_mode: str, lookahead: Cost, seconds: float, **extra) -> None:
    """The `intervention` line of events.jsonl (README "The run directory"), and its guides booked."""
    s = guidance.stats
    ctx.ledger.book_guides(s)
    ctx.event({
        "event": "intervention", "index": index, "kind": kind, "step": guidance.start, "trigger": trigger,
        "lookahead": delta, "window": [guidance.start, guidance.end], "source": guidance.source.kind,
        "guide_checkpoint": guidance.source.name, "guide_step": guidance.source.step, "guide_mode": guide_mode,
        "guides": {"requested": s.requested, "found": s.found, "injected": s.injected},
        "compute": {"lookahead_steps": lookahead.steps, "lookahead_seconds": round(lookahead.seconds, 2),
                    "lookahead_tokens": lookahead.tokens, "guide_samples": s.samples, "guide_tokens": s.tokens,
                    "guide_seconds": round(s.seconds, 2), "seconds": round(seconds, 2)},
        **extra,
    })
