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

import json
from pathlib import Path
from typing import Callable

from npo.algo.accounting import Cost
from npo.algo.controls import Assignment, arm_summary
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
    the intervention's), where `measure_effect_at_end` reads them again."""
    if not guidance.controls:
        return
    end = guidance.end
    if not window.trained:  # resumed after the window ended: its last policy back into the engine
        load_weights(ctx.trainer, ctx.run.checkpoint(end))
    assigned = list(guidance.assigned.values())
    after, tokens = accuracies_after(ctx, sorted(guidance.assigned), end)
    crash_point("effect")
    effect_event(ctx, guidance.index, [guidance.start, end], end, assigned, after, tokens, guidance.labels)
    if ctx.is_main:
        atomic_write_json(ctx.run.controls(guidance.index, kind),
                          {"window": [guidance.start, end], "share": guidance.controls, "arms": guidance.labels,
                           "assigned": [{**vars(a), "after": after[a.index]} for a in assigned]})


def measure_effect_at_end(ctx: Context, last: int) -> None:
    """npo.effect_at_end: the prompts of every window that ended before the run did, sampled again by
    the final policy (in the engine) as `measure_effect` sampled them after their window: whether what
    a guide did to its prompt lasts. One `effect` line per window, `at` the run's last step."""
    ctx.trainer.accelerator.wait_for_everyone()  # the main process has written every window's assignments
    windows = [json.loads(path.read_text()) | {"index": index} for index, path in ctx.run.controls_files()]
    windows = [w for w in windows if w["window"][1] < last]
    after, tokens = accuracies_after(ctx, sorted({a["index"] for w in windows for a in w["assigned"]}), last)
    crash_point("effect_at_end")
    for w in windows:  # the tokens of the one batch of samples on the first window's line
        assigned = [Assignment(**{f: a[f] for f in ("index", "arm", "treated", "p_hat", "step")}) for a in w["assigned"]]
        effect_event(ctx, w["index"], w["window"], last, assigned, after, tokens if w is windows[0] else 0, w["arms"])


def accuracies_after(ctx: Context, indices: list[int], step: int) -> tuple[dict[int, float], int]:
    """Each training item's accuracy in `npo.effect_k` samples of the live policy at `step`, sampled as
    the run samples its groups, with a seed per prompt (so batching and process count change nothing),
    and the samples' tokens, booked as estimation (summary.json)."""
    k, g = ctx.cfg.npo.effect_k, ctx.cfg.resolved_grpo
    items = [ctx.train_items[i] for i in indices]
    groups = ctx.trainer.live_policy().sample(items, seeds=prompt_seeds(ctx.cfg.seed * EFFECT_SEEDS + step, indices),
                                             k=k, temperature=g["temperature"], max_new_tokens=g["max_completion_length"])

    def accuracy(part: list) -> list[float]:
        return [sum(ctx.scorer.reward(x.text, item) == 1.0 for x in group) / k for item, group in part]

    tokens = sum(len(x.token_ids) for group in groups for x in group)
    ctx.ledger.estimation_tokens += tokens
    return dict(zip(indices, ctx.share.run(list(zip(items, groups)), accuracy, pad=False))), tokens


def effect_event(ctx: Context, index: int, window: list[int], at: int, assigned: list[Assignment],
                 after: dict[int, float], tokens: int, arms: list[str]) -> None:
    """The `effect` line of window `index` measured at step `at`, beside the held-out accuracy there."""
    heldout = [r["accuracy"] for r in read_jsonl(ctx.run.evals) if r["step"] == at]
    ctx.event({"event": "effect", "index": index, "window": window, "at": at, "k": ctx.cfg.npo.effect_k,
               "tokens": tokens,
               "share": ctx.cfg.npo.controls, "arms": arm_summary(assigned, after, first=arms[0], seed=ctx.cfg.seed),
               "heldout_accuracy": heldout[-1] if heldout else None})
