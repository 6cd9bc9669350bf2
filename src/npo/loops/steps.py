"""The steps of one intervention, by the paper's names, shared by the NPO and AutoNPO loops. Each step
handles its own resume: resumed after it ended, it returns what it made without making it again.

    reach(t)                  train the final trajectory on to step t (a checkpoint at t)
    look_ahead(t, t + Delta)  train on, unguided, into a look-ahead folder: steps that are discarded
    near_future_guidance      the live policy, now pi_{t+Delta}, writes the window's bank
    retrain_window            roll back to t in place and retrain [t, t + W) with guides injected
    record_intervention       the events.jsonl line and what it cost (npo.loops.segment)
    measure_effect            npo.controls: the guides' effect on the prompts they were given to

Guides are injected by the trainer during exactly the segment that `retrain_window` runs: it hands the
window's `Guidance` to `run_segment`, which gives it to the trainer for that segment only
(`GuidedGRPOTrainer.begin_segment` / `end_segment`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from npo.algo.accounting import Cost
from npo.algo.controls import arm_summary
from npo.guides.bank import Guidance, GuideBank
from npo.guides.sources import PolicySource, guide_sampling
from npo.loops.segment import Context, Segment, run_segment, segment_cost
from npo.models.generation import prompt_seeds
from npo.rundir.faults import crash_point
from npo.rundir.layout import METRICS, atomic_write_json, read_jsonl
from npo.trl_seam.engine import load_weights


def reach(ctx: Context, pos: int, t: int) -> None:
    """Train the final trajectory from `pos` (its checkpoint) to `t`, which leaves a checkpoint at t."""
    if t > pos:
        run_segment(ctx, pos, t, out_dir=ctx.run.checkpoints)


def look_ahead(ctx: Context, folder: Path, t: int, ahead: int) -> Segment:
    """Train on from t to t + Delta, unguided, into `folder` (evaluated nowhere, its steps discarded):
    at its end the live policy is pi_{t+Delta}, the near future of the policy at t."""
    scout = run_segment(ctx, t, ahead, out_dir=folder, main=False)
    crash_point("lookahead")
    return scout


def look_ahead_cost(ctx: Context, folder: Path, t: int) -> Cost:
    """What a look-ahead into `folder` cost (its steps and tokens), read from its metrics."""
    ctx.trainer.accelerator.wait_for_everyone()  # the main process has written the look-ahead's metrics
    return segment_cost(ctx, t, read_jsonl(folder / METRICS))


def near_future_guidance(ctx: Context, index: int, kind: str, guide: Path, guide_step: int, window: tuple[int, int],
                         ready: Callable[[], list[int]], bank_path: Path | None = None, label: str | None = None
                         ) -> Guidance:
    """The guidance of the window [t, end) from the policy of checkpoint `guide` (step `guide_step`,
    ahead of t): the live policy, which holds that policy, writes the bank before the rollback replaces
    it (no second model). `ready()` makes sure the engine holds it (a run resumed after its look-ahead,
    or AutoNPO's measurement, left another policy there) and returns the prompts to write guides for.
    A resumed run whose bank was saved reads it instead, and never makes it twice."""
    run = ctx.run
    source = PolicySource(ctx.trainer.live_policy(), name=run.relative(guide), step=guide_step, **guide_sampling(ctx.cfg))
    guidance = window_guidance(ctx, source, window, bank_path or run.guide_bank(index, kind), index, label)
    if not guidance.load_saved():
        prompts = ready()
        guidance.prefill(prompts, [ctx.train_items[x] for x in prompts], step=window[0],
                         books=ctx.books if ctx.is_main else None)
    return guidance


def window_guidance(ctx: Context, source, window: tuple[int, int], bank_path: Path | None = None,
                    index: int = 0, label: str | None = None) -> Guidance:
    """The guidance of intervention `index`'s window [t, end) from `source`, with the run's seed, slots,
    processes and controls; its bank saved at `bank_path` (none for a whole guided run); `label`: its arm's
    name in records (npo.arms)."""
    return Guidance(source, ctx.scorer, GuideBank(), *window, seed=ctx.cfg.seed, bank_path=bank_path,
                    slots=ctx.cfg.npo.slots, share=ctx.share, controls=ctx.cfg.npo.controls, index=index, label=label)


def retrain_window(ctx: Context, guidance: Guidance, watch=None) -> Segment:
    """Roll back to the window's start t (its checkpoint loaded into the live trainer, in place) and
    retrain [t, end) on the final trajectory with the window's guides injected into its groups."""
    return run_segment(ctx, guidance.start, guidance.end, out_dir=ctx.run.checkpoints, guidance=guidance, watch=watch)


EFFECT_SEEDS = 7_919_891  # the effect's samples of the policy at step e: base seed * EFFECT_SEEDS + e


def measure_effect(ctx: Context, guidance: Guidance, window: Segment, kind: str) -> None:
    """npo.controls: after the window, every prompt assigned in it (treated or control) is sampled
    `npo.effect_k` times by the live policy through the engine (one seed per prompt) and verified; the
    `effect` line of events.jsonl compares the arms with the controls (`npo.algo.controls`), beside the
    held-out accuracy at the same step. The assignments go beside the bank (`RunDir.controls`; `kind`:
    the intervention's)."""
    if not guidance.controls:
        return
    end, k = guidance.end, ctx.cfg.npo.effect_k
    if not window.trained:  # resumed after the window ended: its last policy back into the engine
        load_weights(ctx.trainer, ctx.run.checkpoint(end))
    indices = sorted(guidance.assigned)
    items = [ctx.train_items[i] for i in indices]
    g = ctx.cfg.resolved_grpo  # sampled as the run samples its groups
    sampling = {"k": k, "temperature": g["temperature"], "max_new_tokens": g["max_completion_length"]}
    groups = ctx.trainer.live_policy().sample(items, seeds=prompt_seeds(ctx.cfg.seed * EFFECT_SEEDS + end, indices),
                                             **sampling)

    def accuracies(part: list) -> list[float]:
        return [sum(ctx.scorer.reward(x.text, item) == 1.0 for x in group) / k for item, group in part]

    after = dict(zip(indices, ctx.share.run(list(zip(items, groups)), accuracies, pad=False)))
    tokens = sum(len(x.token_ids) for group in groups for x in group)
    ctx.ledger.estimation_tokens += tokens  # a measurement's samples, beside AutoNPO's (summary.json)
    crash_point("effect")
    heldout = [r["accuracy"] for r in read_jsonl(ctx.run.evals) if r["step"] == end]
    ctx.event({"event": "effect", "index": guidance.index, "window": [guidance.start, end], "k": k, "tokens": tokens,
               "share": guidance.controls, "arms": arm_summary(list(guidance.assigned.values()), after,
                                                                first=guidance.labels[0], seed=ctx.cfg.seed),
               "heldout_accuracy": heldout[-1] if heldout else None})
    if ctx.is_main:
        atomic_write_json(ctx.run.controls(guidance.index, kind),
                          {"window": [guidance.start, end], "share": guidance.controls,
                           "assigned": [{**vars(a), "after": after[a.index]} for a in guidance.assigned.values()]})
