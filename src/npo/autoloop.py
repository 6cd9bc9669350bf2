"""The AutoNPO loop (method: autonpo), top to bottom; the decisions are `npo.autonpo.Controller`'s.

    1. Train the final trajectory with the controller fed one record per step, until it triggers at T
       (checkpoint at T) or the run ends.
    2. For each candidate Delta (the grid rounded to checkpoints, within the compute cap), measure Q, V
       and S with the present policy pi_T as the source and pi_{T-Delta} as the policy, on the mistake-
       pool prompts that failed around T - Delta (`npo.probe.Probe`). Delta* = argmax S, or decline.
    3. Roll back to T - Delta*: the steps (T - Delta*, T] become a discarded segment (their checkpoints,
       metrics and evaluations move to lookahead/I-auto/, where pi_T stays as the guide). Guides from
       pi_T are built ahead for the pool prompts and the window's prompts (the discarded pass saw them),
       the controller goes back to what it had seen at T - Delta* (its decisions stand: see
       `npo.autonpo`), then the window [T - Delta*, T - Delta* + W) is retrained with injection,
       the controller watching; then back to 1.
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
from npo.generation import Policy
from npo.guides import GuideBank, Guidance
from npo.models.load import load_policy
from npo.probe import Probe
from npo.rundir import (CONTROLLER_STATE, EVALS, METRICS, RunDir, append_jsonl, atomic_write_text, checkpoint_folder,
                        read_jsonl)
from npo.segments import Context, record_intervention, run_segment
from npo.sources import PolicySource, guide_sampling


def train_autonpo(ctx: Context) -> None:
    cfg, run, steps = ctx.cfg, ctx.run, ctx.cfg.train.steps
    ctrl = Controller(cfg.autonpo, steps)
    visited: dict[int, list[int]] = {}  # step -> prompts, as the final trajectory (or a discarded pass) saw them
    pos, index = 0, 0
    while pos < steps:
        # 1. the final trajectory, watched, until a trigger at T
        watch = AutoWatch(ctrl)
        visited.update(run_segment(ctx, pos, steps, out_dir=run.checkpoints, watch=watch).visited)
        if watch.trigger is None:
            return
        T = watch.trigger.step
        # 2. estimate S = Q / V per candidate look-ahead; Delta* = argmax S, or decline
        decision = _decide(ctx, ctrl, watch.trigger)
        append_jsonl(run.events, {"event": "autonpo_decision", "step": T, "trigger": watch.trigger.kind,
                                  "signals": watch.trigger.signals, "table": decision.table,
                                  "delta": decision.delta, "reason": decision.reason,
                                  "estimation_tokens": decision.estimation_tokens})
        if decision.delta is None:
            pos = T
            continue
        # 3. roll back to T - Delta* and retrain the window guided by pi_T
        t0 = T - decision.delta
        ctrl.record(decision, window_end=min(t0 + cfg.autonpo.window, steps))
        pos = _intervene(ctx, ctrl, index, decision.trigger, t0, visited)
        index += 1


def _decide(ctx: Context, ctrl: Controller, trigger: Trigger) -> Decision:
    a, T = ctx.cfg.autonpo, trigger.step
    deltas = ctrl.candidates(T, a.deltas, ctx.run.checkpoint_steps())
    t0 = time.perf_counter()
    probe = Probe(ctx.cfg, ctx.run, ctx.train_items, ctx.scorer, ctx.style, k=a.signal_k, seed=ctx.cfg.seed, boot=200)
    table, source = [], None
    for d in deltas:
        pool = ctrl.pool_prompts(around=T - d, width=a.pool_width)[:a.signal_prompts]  # F: the mistake pool
        if not pool:
            continue
        source = source or PolicySource(probe.policy(T), k=a.signal_k, temperature=probe.temperature,
                                        max_new_tokens=probe.max_new, name=ctx.run.relative(ctx.run.checkpoint(T)),
                                        step=T)
        row = probe.measure(T - d, source, "near_future", d, failed=pool)
        table.append({k: row[k] for k in ("delta", "Q", "V", "S", "Q_ci", "V_ci", "S_ci", "n_failed", "n_found")})
    ctx.ledger.estimation_tokens += probe.generated_tokens
    decision = ctrl.decide(trigger, table)
    decision.reason += f" (measured in {time.perf_counter() - t0:.1f} s)"
    decision.estimation_tokens = probe.generated_tokens
    return decision


def _intervene(ctx: Context, ctrl: Controller, index: int, trigger: Trigger, t0: int,
               visited: dict[int, list[int]]) -> int:
    """Roll back from the trigger at T to t0, retrain the window guided by pi_T; returns the window's end."""
    cfg, run, a, T = ctx.cfg, ctx.run, ctx.cfg.autonpo, trigger.step
    start = time.perf_counter()
    folder = run.lookahead(index, "auto")
    lookahead = _discard(run, t0, T, folder)
    ctx.ledger.lookahead_steps += lookahead.steps
    guide_path = checkpoint_folder(folder, T)
    source = PolicySource(Policy(*load_policy(guide_path), ctx.style), name=run.relative(guide_path), step=T,
                          **guide_sampling(cfg))
    end = min(t0 + a.window, cfg.train.steps)
    guidance = Guidance(source, ctx.scorer, GuideBank(), t0, end, seed=cfg.seed,
                        bank_path=run.guide_bank(index, "auto"))
    ahead = list(dict.fromkeys(ctrl.pool_prompts(around=t0, width=a.pool_width)
                               + [x for s in range(t0, end) for x in visited.get(s, [])]))
    guidance.prefill(ahead, [ctx.train_items[x] for x in ahead], step=t0)
    ctrl.rollback(seen_at(run, t0))
    watch = AutoWatch(ctrl)  # sees the window; no trigger before its end (the controller's floor)
    visited.update(run_segment(ctx, t0, end, out_dir=run.checkpoints, guidance=guidance, watch=watch).visited)
    record_intervention(ctx, guidance, index=index, kind=f"auto-{trigger.kind}", trigger="autonpo", delta=T - t0,
                        guide_mode="ahead", lookahead=lookahead, seconds=time.perf_counter() - start, trigger_step=T)
    return end


def seen_at(run: RunDir, step: int) -> Seen:
    """What the controller had seen at `step` of the final trajectory (nothing at step 0)."""
    if step == 0:
        return Seen()
    return ControllerState.from_json(json.loads((run.checkpoint(step) / CONTROLLER_STATE).read_text())).seen


def _discard(run: RunDir, t0: int, T: int, folder) -> Cost:
    """Move the final trajectory's steps (t0, T] out of it: checkpoints, metrics and evaluations.
    Returns what those steps cost (their TRL step times and on-policy tokens)."""
    folder.mkdir(parents=True, exist_ok=True)
    for step in run.checkpoint_steps():
        if t0 < step <= T:
            shutil.move(str(run.checkpoint(step)), str(checkpoint_folder(folder, step)))
    kept, gone = _move_records(run.metrics, folder / METRICS, after=t0)
    _move_records(run.evals, folder / EVALS, after=t0)
    tokens_before = kept[-1]["signal/generated_tokens"] if kept else 0
    tokens_after = gone[-1]["signal/generated_tokens"] if gone else tokens_before
    return Cost(T - t0, sum(r["train/step_time"] for r in gone), int(tokens_after - tokens_before))


def _move_records(path, dest, after: int) -> tuple[list[dict], list[dict]]:
    """Records of steps > `after` move from the JSONL file `path` to `dest`; returns (kept, moved)."""
    records = read_jsonl(path)
    keep = [r for r in records if r["step"] <= after]
    gone = [r for r in records if r["step"] > after]
    atomic_write_text(dest, "".join(json.dumps(r, sort_keys=True) + "\n" for r in gone))
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
    return keep, gone
