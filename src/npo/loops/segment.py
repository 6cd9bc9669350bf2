"""Segments: the unit every training loop is built from; the stages a loop commits; the one writer of
intervention events.

A run is a chain of *segments* of TRL training on the run's one trainer (`Context.trainer`, built
once per process). Segments on the final trajectory write `checkpoints/`, `metrics.jsonl` and
`eval.jsonl`; a near-future look-ahead is a segment in its own folder (`RunDir.lookahead`). Every
segment starts from a checkpoint (weights, optimizer, scheduler, RNG states, data position), loaded
into the existing engine in place, and ends with one, so stopping and resuming is invisible in the
metrics (tests/test_rollback.py) and "roll back to t" is simply "start the next segment at t". The
run's first segment starts from the base model; a later segment at step 0 (the bootstrap's restart)
starts from `checkpoint-0`, written when the engine was built.

A segment resumes by itself: it starts from its own latest complete checkpoint if it has one (a run
killed inside it and resumed), and does nothing if that checkpoint is its end. A loop groups its
segments into *stages* (`Context.once`), committed to the run's journal (`npo.rundir.journal`) with their
events, so that a resumed run skips what it finished and redoes only the stage it was in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from npo.algo.accounting import Clock, Cost, Ledger
from npo.algo.controller import Controller
from npo.config.run import RunConfig
from npo.guides.bank import Guidance
from npo.models.share import Share
from npo.rundir.faults import crash_point
from npo.rundir.journal import Journal
from npo.rundir.layout import (
    METRICS,
    RunDir,
    append_jsonl,
    checkpoint_folder,
    checkpoint_state,
    complete_steps,
    read_jsonl,
)
from npo.rundir.retention import apply_retention
from npo.tasks.rewards import TaskScorer
from npo.trl_seam.callbacks import CheckpointMarker, Evaluator, MetricsWriter, Progress, StopAt
from npo.trl_seam.tracking import RunReport
from npo.trl_seam.trainer import GuidedGRPOTrainer
from npo.trl_seam.user_callbacks import StopRequested


@dataclass
class Context:
    """What every segment of a run shares: its config, folder, verifier, data, evaluation and books."""

    cfg: RunConfig
    run: RunDir
    trainer: GuidedGRPOTrainer  # the run's one engine
    scorer: TaskScorer
    style: str
    train_items: list
    evaluator: Evaluator
    progress: Progress
    show_progress: bool
    journal: Journal
    ledger: Ledger = field(default_factory=Ledger)
    clock: Clock = field(default_factory=Clock)
    controller: Controller | None = None  # AutoNPO's: its decisions are part of the books
    model_path: str = ""  # the model folder the run started from (summary.json says which)
    stage_events: list = field(default_factory=list)  # events of the stage under way, committed with it
    keep_whole: set = field(default_factory=set)  # final-trajectory steps a caller will roll back to (npo.rundir.retention)
    report: RunReport | None = None  # the run's TensorBoard log / W&B run (npo.trl_seam.tracking)

    @property
    def share(self) -> Share:
        """The processes, for the collective jobs beside TRL's (guides, their verification)."""
        return Share.of(self.trainer.accelerator)

    @property
    def is_main(self) -> bool:
        """The process that writes the run folder (the others compute the same things)."""
        return self.trainer.accelerator.is_main_process

    def event(self, record: dict) -> None:
        """An event of the stage under way: written to events.jsonl when the stage commits."""
        self.stage_events.append(record)

    def books(self) -> dict:
        """A numbered snapshot of what no rollback undoes (`npo.rundir.journal`)."""
        made = asdict(self.controller.state.made) if self.controller is not None else None
        return {"seq": self.journal.next_seq(), "ledger": asdict(self.ledger), "made": made, "started": True,
                "verify": asdict(self.scorer.stats), "eval_seconds": self.evaluator.seconds, **self.clock.books()}

    def once(self, key: str, stage: Callable[..., Any], *args) -> Any:
        """Run one stage of the loop, `stage(*args)`, and commit its result (JSON) and events; on a
        resumed run that committed it already, return that result without running it."""
        if key in self.journal.done:
            return self.journal.done[key]
        result = stage(*args)
        self.commit(key, result)
        return result

    def commit(self, key: str, result: Any) -> None:
        crash_point("commit")
        events, self.stage_events = self.stage_events, []
        journal = self.journal
        journal.done[key], journal.events, journal.books = result, journal.events + events, self.books()
        journal.pending = None  # a stage's multi-file operation is complete when the stage is
        if self.is_main:
            journal.save()
            for record in events:  # a crash here is repaired on resume: events.jsonl is rewritten from the journal
                append_jsonl(self.run.events, record)


@dataclass
class Segment:
    """What a segment did: whether it trained at all (a resumed segment may find its end already
    checkpointed), and the prompts each step trained on (step -> indices)."""

    trained: bool
    visited: dict[int, list[int]] = field(default_factory=dict)


def resume_point(ctx: Context, start: int, stop: int, out_dir: Path) -> tuple[int, Path | None, dict | None]:
    """Where a segment [start, stop) writing to `out_dir` starts: (step, checkpoint, its marker). Its
    latest complete checkpoint after `start` if a killed run left one, else the checkpoint at
    `start` (the base model at 0 when there is neither a checkpoint-0 nor a built engine)."""
    later = [s for s in complete_steps(out_dir) if start < s <= stop]
    folder = checkpoint_folder(out_dir, later[-1]) if later else ctx.run.checkpoint(start)
    state = checkpoint_state(folder)
    if state is None and not later and start == 0 and not ctx.trainer.engine_built:
        return 0, None, None
    if state is None:
        raise RuntimeError(f"no complete checkpoint at step {start} in {ctx.run.root} to start a segment from")
    if state.get("weights_only"):  # npo.rundir.retention keeps every checkpoint a segment can start from whole
        raise RuntimeError(f"{folder} holds weights only: a segment cannot start there")
    return (later[-1] if later else start), folder, state


def run_segment(ctx: Context, start: int, stop: int, *, out_dir: Path, guidance: Guidance | None = None,
                main: bool = True, watch=None) -> Segment:
    """Train from step `start` (its checkpoint, or the base model at 0) to `stop`, checkpoint there.
    `main`: on the final trajectory (evaluated, metrics in the run's files); else a look-ahead whose
    metrics go to `out_dir`. `watch`: a callback that may stop the segment early (the plateau rule,
    AutoNPO's controller); it receives the trainer's gate outcomes when it has `on_gate`, and is
    restored from the checkpoint the segment starts at. A segment resumed at its end, or at the step
    its watch stopped it, returns without training (the live model is then not its end's)."""
    trainer = ctx.trainer
    at, resume, state = resume_point(ctx, start, stop, out_dir)
    if watch is not None:
        watch.restore(state.get("watch") if state else None, ended=at > start)
    if guidance is not None and at > start:
        guidance.restore(state["guidance"])  # what the window had spent (and found) when it was saved
    trainer.restore_injection(state.get("injection") if state else None)  # the replay buffer as it was there
    if at == stop or (watch is not None and watch.stopped):
        return Segment(trained=False)

    def marker() -> dict:
        return {"step": trainer.state.global_step, "books": ctx.books(),
                "watch": watch.snapshot() if watch is not None else None,
                "guidance": guidance.snapshot() if guidance is not None else None,
                "injection": trainer.injection_state()}

    callbacks = [MetricsWriter(ctx.run.metrics if main else out_dir / METRICS, ctx.scorer.stats), StopAt(stop),
                 CheckpointMarker(marker, after_save=lambda: retain(ctx))]
    bar = ctx.progress if main else Progress(ctx.cfg.train.steps, initial=at, desc=f"look-ahead {start}->{stop}",
                                             enabled=ctx.show_progress and ctx.is_main, leave=False)
    callbacks += [ctx.evaluator, bar] if main else [bar]
    if watch is not None:
        callbacks.append(watch)
    if ctx.is_main:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    if ctx.report is not None:
        ctx.report.segment(main)
    trainer.begin_segment(out_dir, callbacks, guidance=guidance, on_gate=getattr(watch, "on_gate", None))
    trainer.user_callbacks.final = main
    try:
        trainer.train(resume_from_checkpoint=None if resume is None else str(resume))
    finally:
        trainer.end_segment(callbacks)
    if not main:
        bar.close()
    if (step := trainer.user_callbacks.stop_at) is not None:  # a user's callback stopped the run here
        raise StopRequested(step)
    return Segment(trained=True, visited=dict(trainer.visited))


def retain(ctx: Context, finished: bool = False) -> None:
    """Checkpoints kept whole only where a rollback or resume can land (`npo.rundir.retention`); AutoNPO may
    roll back max(Delta) steps from its latest checkpoint."""
    if ctx.is_main:
        horizon = max(ctx.cfg.autonpo.deltas) if ctx.cfg.method == "autonpo" else 0
        apply_retention(ctx.run.segment_folders(), ctx.run.checkpoints, horizon, ctx.cfg.train.keep_checkpoints,
                        finished, protect=set() if finished else ctx.keep_whole)


def segment_cost(ctx: Context, start: int, records: list[dict]) -> Cost:
    """What the steps of `records` (metrics lines of a look-ahead or a discarded segment, from step
    `start`) cost: their steps, TRL step seconds, and on-policy tokens (from the run's cumulative
    count, so the figure is the same whether or not the run was resumed in between)."""
    before = [r for r in read_jsonl(ctx.run.metrics) if r["step"] == start] if start else []
    tokens0 = before[-1]["signal/generated_tokens"] if before else 0
    tokens1 = records[-1]["signal/generated_tokens"] if records else tokens0
    return Cost(len(records), sum(r["train/step_time"] for r in records), int(tokens1 - tokens0))


def record_intervention(ctx: Context, guidance: Guidance, *, index: int, kind: str, trigger: str, delta: int,
                        guide_mode: str, lookahead: Cost, seconds: float, **extra) -> None:
    """The `intervention` line of events.jsonl (docs/run-directory.md "The run directory"), and its look-ahead and
    guides booked: the end of a stage, but for npo.controls' measurement (its books are committed with it)."""
    s = guidance.stats
    ctx.ledger.book_guides(s)
    ctx.ledger.lookahead_steps += lookahead.steps
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
