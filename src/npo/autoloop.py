"""The AutoNPO loop (method: autonpo), top to bottom; the decisions are `npo.autonpo.Controller`'s.

    1. Train the final trajectory with the controller fed one record per step, until it triggers at T
       (a checkpoint step: every candidate T - Delta is then a checkpoint too) or the run ends.
    2. For each candidate Delta (within the compute cap), measure Q, V and S with the present policy
       pi_T as the source and pi_{T-Delta} as the policy, on the mistake-pool prompts that failed around
       T - Delta: pi_T, the live engine, is sampled once; each pi_{T-Delta} is loaded into it in place
       to score those samples (`npo.probe.measure_lookbacks`). Delta* = argmax S, or decline.
    3. Roll back to T - Delta*: the steps (T - Delta*, T] become a discarded segment (their checkpoints,
       metrics and evaluations move to lookahead/I-auto/). pi_T, loaded back in place, writes the
       guides for the pool prompts and the window's prompts; the controller goes back to what it had
       seen at T - Delta* (its decisions stand: see `npo.autonpo`), then the window
       [T - Delta*, T - Delta* + W) is retrained in place with injection, the controller watching;
       then back to 1.
Every decision (with the signals that triggered it and the Q/V/S table) and every intervention goes
to events.jsonl; the discarded steps and the estimation rollouts are counted in summary.json.
"""

from __future__ import annotations

import json
import shutil
import time

from npo.accounting import Cost
from npo.autonpo import Controller, ControllerState, Decision, Seen, Trigger
from npo.callbacks import AutoWatch
from npo.engine import load_weights
from npo.grpo_args import grpo_overrides
from npo.guides import GuideBank, Guidance
from npo.probe import measure_lookbacks
from npo.rundir import CONTROLLER_STATE, EVALS, METRICS, RunDir, atomic_write_text, checkpoint_folder, read_jsonl
from npo.segments import Context, record_intervention, run_segment
from npo.sources import PolicySource, guide_sampling


def train_autonpo(ctx: Context) -> None:
    cfg, run, steps = ctx.cfg, ctx.run, ctx.cfg.train.steps
    ctrl = Controller(cfg.autonpo, steps, every=cfg.train.checkpoint_every)
    pos, index = 0, 0
    while pos < steps:
        # 1. the final trajectory, watched, until a trigger at T
        watch = AutoWatch(ctrl)
        run_segment(ctx, pos, steps, out_dir=run.checkpoints, watch=watch)
        if watch.trigger is None:
            return
        T = watch.trigger.step
        # 2. estimate S = Q / V per candidate look-ahead; Delta* = argmax S, or decline
        decision = _decide(ctx, ctrl, watch.trigger)
        ctx.event({"event": "autonpo_decision", "step": T, "trigger": watch.trigger.kind,
                   "signals": watch.trigger.signals, "table": decision.table, "delta": decision.delta,
                   "reason": decision.reason, "estimation_tokens": decision.estimation_tokens})
        if decision.delta is None:
            pos = T
            continue
        # 3. roll back to T - Delta* and retrain the window guided by pi_T
        t0 = T - decision.delta
        ctrl.record(decision, window_end=min(t0 + cfg.autonpo.window, steps))
        pos = _intervene(ctx, ctrl, index, decision.trigger, t0)
        index += 1


def _decide(ctx: Context, ctrl: Controller, trigger: Trigger) -> Decision:
    a, T, run, trainer = ctx.cfg.autonpo, trigger.step, ctx.run, ctx.trainer
    t0 = time.perf_counter()
    pools = {d: pool for d in ctrl.candidates(T, a.deltas, run.checkpoint_steps())
             if (pool := ctrl.pool_prompts(around=T - d, width=a.pool_width)[:a.signal_prompts])}  # F: the pool
    g = grpo_overrides(ctx.cfg)
    table, tokens = measure_lookbacks(
        trainer.live_policy(), lambda step: load_weights(trainer, run.checkpoint(step)), T, pools, ctx.train_items,
        ctx.scorer, k=a.signal_k, temperature=g["temperature"], max_new_tokens=g["max_completion_length"],
        seed=ctx.cfg.seed, boot=200) if pools else ([], 0)
    ctx.ledger.estimation_tokens += tokens
    decision = ctrl.decide(trigger, table)
    decision.reason += f" (measured in {time.perf_counter() - t0:.1f} s)"
    decision.estimation_tokens = tokens
    return decision


def _intervene(ctx: Context, ctrl: Controller, index: int, trigger: Trigger, t0: int) -> int:
    """Roll back from the trigger at T to t0, retrain the window guided by pi_T; returns the window's end."""
    cfg, run, a, T, trainer = ctx.cfg, ctx.run, ctx.cfg.autonpo, trigger.step, ctx.trainer
    start = time.perf_counter()
    folder = run.lookahead(index, "auto")
    lookahead = _discard(ctx, t0, T, folder)
    ctx.ledger.lookahead_steps += lookahead.steps
    guide_path = checkpoint_folder(folder, T)
    load_weights(trainer, guide_path)  # pi_T back into the engine (the measurement left a candidate there)
    source = PolicySource(trainer.live_policy(), name=run.relative(guide_path), step=T, **guide_sampling(cfg))
    end = min(t0 + a.window, cfg.train.steps)
    guidance = Guidance(source, ctx.scorer, GuideBank(), t0, end, seed=cfg.seed,
                        bank_path=run.guide_bank(index, "auto"))
    window = trainer.data_order().prompts_between(t0, end)
    ahead = list(dict.fromkeys(ctrl.pool_prompts(around=t0, width=a.pool_width) + window))
    guidance.prefill(ahead, [ctx.train_items[x] for x in ahead], step=t0, save=ctx.is_main)
    ctrl.rollback(seen_at(run, t0))
    watch = AutoWatch(ctrl)  # sees the window; no trigger before its end (the controller's floor)
    run_segment(ctx, t0, end, out_dir=run.checkpoints, guidance=guidance, watch=watch)
    record_intervention(ctx, guidance, index=index, kind=f"auto-{trigger.kind}", trigger="autonpo", delta=T - t0,
                        guide_mode="ahead", lookahead=lookahead, seconds=time.perf_counter() - start, trigger_step=T)
    return end


def seen_at(run: RunDir, step: int) -> Seen:
    """What the controller had seen at `step` of the final trajectory (nothing at step 0)."""
    if step == 0:
        return Seen()
    return ControllerState.from_json(json.loads((run.checkpoint(step) / CONTROLLER_STATE).read_text())).seen


def _discard(ctx: Context, t0: int, T: int, folder) -> Cost:
    """Move the final trajectory's steps (t0, T] out of it: checkpoints, metrics and evaluations (the
    main process moves them). Returns what those steps cost (their TRL step times and tokens)."""
    run, acc = ctx.run, ctx.trainer.accelerator
    kept, gone = _split(read_jsonl(run.metrics), t0)
    acc.wait_for_everyone()  # every process has read the metrics before they move
    if ctx.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        for step in run.checkpoint_steps():
            if t0 < step <= T:
                shutil.move(str(run.checkpoint(step)), str(checkpoint_folder(folder, step)))
        for path, name in ((run.metrics, METRICS), (run.evals, EVALS)):
            keep, move = _split(read_jsonl(path), t0)
            atomic_write_text(folder / name, "".join(json.dumps(r, sort_keys=True) + "\n" for r in move))
            atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
    acc.wait_for_everyone()
    tokens_before = kept[-1]["signal/generated_tokens"] if kept else 0
    tokens_after = gone[-1]["signal/generated_tokens"] if gone else tokens_before
    return Cost(T - t0, sum(r["train/step_time"] for r in gone), int(tokens_after - tokens_before))


def _split(records: list[dict], after: int) -> tuple[list[dict], list[dict]]:
    return [r for r in records if r["step"] <= after], [r for r in records if r["step"] > after]
