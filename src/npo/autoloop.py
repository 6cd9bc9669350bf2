"""The AutoNPO loop (method: autonpo), top to bottom; the decisions are `npo.autonpo.Controller`'s.

    1. Train the final trajectory with the controller fed one record per step, until it triggers at T
       (checkpoint at T) or the run ends.
    2. For each candidate Delta (the grid rounded to checkpoints, within the compute cap), measure Q, V
       and S with the present policy pi_T as the source and pi_{T-Delta} as the policy, on the mistake-
       pool prompts that failed around T - Delta (`npo.signal_cli.Probe`). Delta* = argmax S, or decline.
    3. Roll back to T - Delta*: the steps (T - Delta*, T] become a discarded segment (their checkpoints,
       metrics and evaluations move to lookahead/I-auto/, where pi_T stays as the guide). Guides from
       pi_T are built ahead for the pool prompts and the window's prompts (the discarded pass saw them),
       then the window [T - Delta*, T - Delta* + W) is retrained with injection; then back to 1.
Every decision (with the signals that triggered it and the Q/V/S table) and every intervention goes
to events.jsonl; the discarded steps and the estimation rollouts are counted in summary.json.
"""

from __future__ import annotations

import json
import shutil
import time

from npo.autonpo import Controller, Decision
from npo.guides import GuideBank, Guidance
from npo.loop import Context, guide_source, run_segment
from npo.rundir import append_jsonl, atomic_write_text, read_jsonl


def train_autonpo(ctx: Context) -> None:
    from npo.callbacks import AutoWatch

    cfg, run, steps = ctx.cfg, ctx.run, ctx.cfg.train.steps
    ctrl = Controller(cfg.autonpo, steps)
    visited: dict[int, list[int]] = {}  # step -> prompts, as the final trajectory (or a discarded pass) saw them
    pos, index = 0, 0
    while pos < steps:
        box = []
        watch = AutoWatch(ctrl, lambda: box[0])
        trainer = run_segment(ctx, pos, steps, out_dir=run.checkpoints, watch=watch, on_trainer=box.append)
        visited.update(dict(trainer.visited))
        if watch.trigger is None:
            return
        T = watch.trigger.step
        decision = _decide(ctx, ctrl, watch.trigger)
        append_jsonl(run.events, {"event": "autonpo_decision", "step": T, "trigger": watch.trigger.kind,
                                  "signals": watch.trigger.signals, "table": decision.table,
                                  "delta": decision.delta, "reason": decision.reason,
                                  "estimation_tokens": decision.estimation_tokens})
        if decision.delta is None:
            pos = T
            continue
        t0 = T - decision.delta
        ctrl.record(decision, window_end=min(t0 + cfg.autonpo.window, steps))
        pos = _intervene(ctx, ctrl, index, decision, t0, T, visited)
        index += 1


def _decide(ctx: Context, ctrl: Controller, trigger) -> Decision:
    from npo.signal_cli import Probe

    a, T = ctx.cfg.autonpo, trigger.step
    deltas = ctrl.candidates(T, a.deltas, ctx.run.checkpoint_steps())
    t0 = time.perf_counter()
    probe = Probe(ctx.run.root, prompts=0, seed=ctx.cfg.seed, k=a.signal_k, boot=200)  # F: the pool
    table = []
    for d in deltas:
        pool = ctrl.pool_prompts(around=T - d, width=a.pool_width)[:a.signal_prompts]
        if not pool:
            continue
        row = probe.measure(T - d, T, "near_future", d, failed=pool)
        table.append({k: row[k] for k in ("delta", "Q", "V", "S", "Q_ci", "V_ci", "S_ci", "n_failed", "n_found")})
    probe.scorer.close()
    ctx.ledger.estimation_tokens += probe.generated_tokens
    decision = ctrl.decide(trigger, table)
    decision.reason += f" (measured in {time.perf_counter() - t0:.1f} s)"
    decision.estimation_tokens = probe.generated_tokens
    return decision


def _intervene(ctx: Context, ctrl: Controller, index: int, decision: Decision, t0: int, T: int,
               visited: dict[int, list[int]]) -> int:
    from npo.models.load import load_policy

    cfg, run, a = ctx.cfg, ctx.run, ctx.cfg.autonpo
    start = time.perf_counter()
    folder = run.root / "lookahead" / f"{index}-auto"
    _discard(run, t0, T, folder)
    ctx.ledger.lookahead_steps += T - t0
    model, tokenizer = load_policy(folder / f"checkpoint-{T}")
    source = guide_source(ctx, model, tokenizer, str((folder / f"checkpoint-{T}").relative_to(run.root)), T)
    end = min(t0 + a.window, cfg.train.steps)
    guidance = Guidance(source, GuideBank(), t0, end, seed=cfg.seed, bank_path=run.root / "guides" / f"{index}-auto.json")
    ahead = list(dict.fromkeys(ctrl.pool_prompts(around=t0, width=a.pool_width)
                               + [x for s in range(t0, end) for x in visited.get(s, [])]))
    guidance.prefill(ahead, [ctx.train_items[x] for x in ahead], step=t0)
    run_segment(ctx, t0, end, out_dir=run.checkpoints, guidance=guidance)
    s = guidance.stats
    ctx.ledger.book(s)
    append_jsonl(run.events, {
        "event": "intervention", "index": index, "kind": f"auto-{decision.trigger.kind}", "step": t0,
        "trigger": "autonpo", "trigger_step": T, "lookahead": T - t0, "window": [t0, end], "source": "near_future",
        "guide_checkpoint": source.name, "guide_step": T, "guide_mode": "ahead",
        "guides": {"requested": s.requested, "found": s.found, "injected": s.injected},
        "compute": {"lookahead_steps": T - t0, "guide_samples": s.samples, "guide_tokens": s.tokens,
                    "guide_seconds": round(s.seconds, 2), "seconds": round(time.perf_counter() - start, 2)},
    })
    return end


def _discard(run, t0: int, T: int, folder) -> None:
    """Move the final trajectory's steps (t0, T] out of it: checkpoints, metrics and evaluations."""
    folder.mkdir(parents=True, exist_ok=True)
    for step in run.checkpoint_steps():
        if t0 < step <= T:
            shutil.move(str(run.checkpoint(step)), str(folder / f"checkpoint-{step}"))
    for path, name in ((run.metrics, "metrics.jsonl"), (run.evals, "eval.jsonl")):
        records = read_jsonl(path)
        keep = [r for r in records if r["step"] <= t0]
        gone = [r for r in records if r["step"] > t0]
        atomic_write_text(folder / name, "".join(json.dumps(r, sort_keys=True) + "\n" for r in gone))
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
