"""The AutoNPO loop (method: autonpo), top to bottom; the decisions are `npo.algo.controller.Controller`'s.

    1. Train the final trajectory with the controller fed one record per step, until it triggers at T
       (a checkpoint step: every candidate T - Delta is then a checkpoint too) or the run ends.
    2. For each candidate Delta (within the compute cap), measure Q, V and S with the present policy
       pi_T as the source and pi_{T-Delta} as the policy, on the mistake-pool prompts that failed around
       T - Delta: pi_T, the live engine, is sampled once; each pi_{T-Delta} is loaded into it in place
       to score those samples (`npo.guides.measure.measure_lookbacks`). Delta* = argmax S, or decline.
    3. Roll back to T - Delta*: the steps (T - Delta*, T] become a discarded segment (their checkpoints,
       metrics and evaluations move to lookahead/I-auto/). pi_T, loaded back in place, writes the
       guides for the pool prompts and the window's prompts; the controller goes back to what it had
       seen at T - Delta* (its decisions stand: see `npo.algo.controller`), then the window
       [T - Delta*, T - Delta* + W) is retrained in place with injection, the controller watching;
       then back to 1.
Every decision (with the signals that triggered it and the Q/V/S table) and every intervention goes
to events.jsonl; the discarded steps and the estimation rollouts are counted in summary.json. Steps 1-2
(up to a decision) and step 3 are stages (`Context.once`): a resumed run skips those it committed.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from npo.algo.controller import Decision, Seen, Trigger
from npo.guides.measure import measure_lookbacks
from npo.loops.segment import Context, record_intervention, run_segment, segment_cost
from npo.loops.steps import measure_effect, near_future_guidance, retrain_window
from npo.rundir.faults import crash_point
from npo.rundir.layout import METRICS, checkpoint_folder, checkpoint_state, move_steps, read_jsonl
from npo.trl_seam.callbacks import AutoWatch
from npo.trl_seam.engine import load_weights


def train_autonpo(ctx: Context) -> None:
    steps = ctx.cfg.train.steps
    pos, interventions, triggers = 0, 0, 0
    while pos < steps:
        # 1.-2. the final trajectory, watched, until a trigger at T; the decision on it
        decision = ctx.once(f"decision/{triggers}", _watch_and_decide, ctx, pos)
        triggers += 1
        if decision is None:
            return  # the run ended without a trigger
        decision = Decision.from_json(decision)
        if decision.delta is None:
            pos = decision.trigger.step
            continue
        # 3. roll back to T - Delta* and retrain the window guided by pi_T
        pos = ctx.once(f"intervention/{interventions}", _intervene, ctx, interventions, decision)
        interventions += 1


def _watch_and_decide(ctx: Context, pos: int) -> dict | None:
    cfg, ctrl = ctx.cfg, ctx.controller
    watch = AutoWatch(ctrl)
    segment = run_segment(ctx, pos, cfg.train.steps, out_dir=ctx.run.checkpoints, watch=watch)
    if watch.trigger is None:
        return None
    T = watch.trigger.step
    if not segment.trained:  # resumed at the trigger: pi_T back into the engine
        load_weights(ctx.trainer, ctx.run.checkpoint(T))
    decision = _decide(ctx, watch.trigger)
    ctx.event({"event": "autonpo_decision", "step": T, "trigger": watch.trigger.kind,
               "signals": watch.trigger.signals, "table": decision.table, "delta": decision.delta,
               "reason": decision.reason, "estimation_tokens": decision.estimation_tokens})
    if decision.delta is not None:
        ctrl.record(decision, window_end=min(T - decision.delta + cfg.autonpo.window, cfg.train.steps))
    return asdict(decision)


def _decide(ctx: Context, trigger: Trigger) -> Decision:
    a, T, run, trainer, ctrl = ctx.cfg.autonpo, trigger.step, ctx.run, ctx.trainer, ctx.controller
    t0 = time.perf_counter()
    pools = {d: pool for d in ctrl.candidates(T, a.deltas, run.checkpoint_steps())
             if (pool := ctrl.pool_prompts(around=T - d, width=a.pool_width)[:a.signal_prompts])}  # F: the pool

    def load(step: int) -> None:
        load_weights(trainer, run.checkpoint(step))
        crash_point("measure")

    g = ctx.cfg.resolved_grpo
    table, tokens = measure_lookbacks(
        trainer.live_policy(), load, T, pools, ctx.train_items, ctx.scorer, k=a.signal_k,
        temperature=g["temperature"], max_new_tokens=g["max_completion_length"], seed=ctx.cfg.seed,
        boot=200) if pools else ([], 0)
    ctx.ledger.estimation_tokens += tokens
    decision = ctrl.decide(trigger, table)
    decision.reason += f" (measured in {time.perf_counter() - t0:.1f} s)"
    decision.estimation_tokens = tokens
    return decision


def _intervene(ctx: Context, index: int, decision: Decision) -> int:
    """Roll back from the trigger at T to t0 = T - Delta*, retrain the window guided by pi_T; returns
    the window's end. The steps (t0, T] were the look-ahead: they leave the final trajectory."""
    cfg, run, a, ctrl = ctx.cfg, ctx.run, ctx.cfg.autonpo, ctx.controller
    T, t0 = decision.trigger.step, decision.trigger.step - decision.delta
    started, end = time.perf_counter(), min(t0 + a.window, cfg.train.steps)
    folder = run.lookahead(index, "auto")
    cost = segment_cost(ctx, t0, _discard(ctx, index, t0, T, folder))
    guide = checkpoint_folder(folder, T)

    def pool_and_window_prompts() -> list[int]:
        load_weights(ctx.trainer, guide)  # pi_T back into the engine (the measurement left a candidate there)
        ctrl.rollback(Seen(**checkpoint_state(guide)["watch"]["seen"]))  # the pool as seen at T
        window = ctx.trainer.data_order().prompts_between(t0, end)
        return list(dict.fromkeys(ctrl.pool_prompts(around=t0, width=a.pool_width) + window))

    guidance = near_future_guidance(ctx, index, "auto", guide, T, (t0, end), pool_and_window_prompts)
    window = retrain_window(ctx, guidance, watch=AutoWatch(ctrl))  # back to what it had seen at t0; no trigger before the end
    record_intervention(ctx, guidance, index=index, kind=f"auto-{decision.trigger.kind}", trigger="autonpo",
                        delta=T - t0, guide_mode="ahead", lookahead=cost, seconds=time.perf_counter() - started,
                        trigger_step=T)
    measure_effect(ctx, guidance, window, "auto")  # npo.controls: what the window's guides did
    return end


def _discard(ctx: Context, index: int, t0: int, T: int, folder) -> list[dict]:
    """Move the final trajectory's steps (t0, T] out of it, into `folder`: checkpoints, metrics and
    evaluations. Several files change: the journal records the move as pending before it starts, a
    resume completes it (`npo.rundir.layout.move_steps` is idempotent), and it is a stage of its own, done once
    (the window retrained after it writes new checkpoints at those steps). Returns the moved steps' metrics."""
    acc = ctx.trainer.accelerator

    def move() -> None:
        acc.wait_for_everyone()
        if ctx.is_main:
            ctx.journal.pending = {"move_steps": {"after": t0, "upto": T, "folder": ctx.run.relative(folder)}}
            ctx.journal.save()
            move_steps(ctx.run, t0, T, folder)
        acc.wait_for_everyone()

    ctx.once(f"discard/{index}", move)  # the commit clears `pending`
    return read_jsonl(folder / METRICS)
