"""The NPO loop (methods grpo and npo), top to bottom. Plain GRPO is the same loop with no interventions.

One intervention (docs/METHOD.md section 3), with Delta = lookahead and W = window:
    1. reach step t on the final trajectory (t = 0 for bootstrap; a fixed step, or the first
       plateau for `auto-plateau`), leaving a checkpoint at t;
    2. look ahead (near_future): train on, unguided, from t to t + Delta in a look-ahead folder; the
       live policy at t + Delta is the guide: it writes the bank for every prompt the window will see
       (the data order is a pure function of the step), through the trainer's own engine, before the
       rollback replaces it. (self: the guide is the live policy at each step, no look-ahead.)
    3. roll back to t (in place) and retrain the window [t, t + W) with guides injected into gated groups;
    4. record the intervention in events.jsonl with what it cost.
Then plain GRPO to the next intervention or to the end. Segments, rollback and the event writer are
`npo.loops.segment`; the guide sources `npo.guides.sources`. Each intervention is one stage (`Context.once`),
and so is the search for a plateau: a resumed run skips those it committed.

With `npo.inject_when: always` (the presets luffy, exgrpo, rlep) there are no interventions: the whole
run is one guided segment [0, steps), its source asked on demand, and the injection rules decide
which groups take guides at each step (`npo.algo.injection`).
"""

from __future__ import annotations

import time

from npo.algo.accounting import Cost
from npo.trl_seam.callbacks import PlateauWatch
from npo.trl_seam.engine import load_weights
from npo.rundir.faults import crash_point
from npo.models.generation import Policy, Sampling
from npo.guides.bank import GuideBank, Guidance
from npo.algo.interventions import Intervention, parse_interventions
from npo.models.load import load_policy, outside_zero3
from npo.tasks.prompting import prompt_style
from npo.rundir.layout import METRICS, checkpoint_folder, read_jsonl
from npo.loops.segment import Context, record_intervention, run_segment, segment_cost
from npo.guides.sources import PolicySource, guide_sampling, make_source


def train_npo(ctx: Context) -> None:
    cfg, run, steps = ctx.cfg, ctx.run, ctx.cfg.train.steps
    if cfg.method != "grpo" and cfg.npo.inject_when == "always":
        ctx.once("guided-run", lambda: _guide_whole_run(ctx))
        return
    interventions = (parse_interventions(cfg.npo.interventions, steps, ahead=cfg.npo.source == "near_future")
                     if cfg.method == "npo" else [])
    pos = 0  # the final trajectory has a checkpoint at `pos` (or is the base model at 0)
    for i, iv in enumerate(interventions):
        # 1. the rollback target t
        t = ctx.once(f"plateau/{i}", lambda: _run_to_plateau(ctx, pos, i, iv)) if iv.auto else iv.at_step
        if t is None:
            return  # no plateau before the end: the run has ended
        # 2.-4. reach t, make the guide, roll back to t and retrain the window with it, record
        pos = ctx.once(f"intervention/{i}", lambda: _intervene(ctx, i, iv, pos, t))
    if pos < steps:
        run_segment(ctx, pos, steps, out_dir=run.checkpoints)


def _guide_whole_run(ctx: Context) -> int:
    """Every step guided by an on-demand source, under the injection rules (no look-ahead, no rollback)."""
    t0, steps = time.perf_counter(), ctx.cfg.train.steps
    guidance = Guidance(on_demand_source(ctx), ctx.scorer, GuideBank(), 0, steps, seed=ctx.cfg.seed,
                        slots=ctx.cfg.npo.slots, share=ctx.share)
    run_segment(ctx, 0, steps, out_dir=ctx.run.checkpoints, guidance=guidance)
    record_intervention(ctx, guidance, index=0, kind="always", trigger="always", delta=None, guide_mode="on_demand",
                        lookahead=Cost(), seconds=time.perf_counter() - t0)
    return steps


def on_demand_source(ctx: Context):
    """The run's guide source when it is not its own near future (npo.guides.sources.make_source)."""
    cfg, trainer = ctx.cfg, ctx.trainer

    def load(path: str, _kind: str):  # another run's policy or a teacher model, beside the live one
        with outside_zero3():  # sampled only, whole on every process; auto is bf16 on a GPU
            model, tok = load_policy(path, dtype=cfg.model.dtype)
        return Policy(model.to(trainer.accelerator.device), tok, prompt_style(tok), Sampling.of(trainer.args),
                      trainer.score_budget)

    return make_source(cfg.npo.source, sampling=guide_sampling(cfg), task=ctx.scorer.task, style=ctx.style,
                       load=load, buffer=trainer.replay, train_items=ctx.train_items)


def _run_to_plateau(ctx: Context, pos: int, i: int, iv: Intervention) -> int | None:
    p, steps = ctx.cfg.npo, ctx.cfg.train.steps
    ctx.trainer.accelerator.wait_for_everyone()  # the main process has written the metrics read here
    history = [r["signal/group_accuracy"] for r in read_jsonl(ctx.run.metrics) if "signal/group_accuracy" in r]
    watch = PlateauWatch(history, p.plateau_window, p.plateau_min_gain,
                         earliest=max(p.plateau_min_step, pos + p.plateau_window),
                         latest=steps - max(iv.lookahead, iv.window),
                         every=ctx.trainer.data_order().steps_per_chunk)
    run_segment(ctx, pos, steps, out_dir=ctx.run.checkpoints, watch=watch)
    if watch.fired_at is None:
        ctx.event({"event": "plateau_not_found", "index": i, "kind": iv.kind, "searched": [pos, steps]})
    else:
        ctx.event({"event": "plateau_detected", "step": watch.fired_at, **watch.evidence})
    return watch.fired_at


def _intervene(ctx: Context, i: int, iv: Intervention, pos: int, t: int) -> int:
    """Intervention i at step t: the guide, then the window retrained with it. Returns the window's end."""
    if t > pos:
        run_segment(ctx, pos, t, out_dir=ctx.run.checkpoints)
    t0 = time.perf_counter()
    guidance, lookahead = _make_guidance(ctx, i, iv, t)
    run_segment(ctx, t, guidance.end, out_dir=ctx.run.checkpoints, guidance=guidance)
    trigger = "auto-plateau" if iv.auto else ("start" if iv.kind == "bootstrap" else "at_step")
    mode = "ahead" if ctx.cfg.npo.source == "near_future" else "on_demand"
    record_intervention(ctx, guidance, index=i, kind=iv.kind, trigger=trigger, delta=iv.lookahead,
                        guide_mode=mode, lookahead=lookahead, seconds=time.perf_counter() - t0)
    return guidance.end


def _make_guidance(ctx: Context, i: int, iv: Intervention, t: int) -> tuple[Guidance, Cost]:
    """The guidance of intervention i at step t, and the look-ahead it cost (none for `self`)."""
    cfg, run, trainer = ctx.cfg, ctx.run, ctx.trainer
    end = min(t + iv.window, cfg.train.steps)
    bank_path = run.guide_bank(i, iv.kind)
    if cfg.npo.source != "near_future":  # self, a teacher, replay, another run: asked as gated prompts come
        return Guidance(on_demand_source(ctx), ctx.scorer, GuideBank(), t, end, seed=cfg.seed, bank_path=bank_path,
                        slots=cfg.npo.slots, share=ctx.share), Cost()
    folder = run.lookahead(i, iv.kind)
    scout = run_segment(ctx, t, t + iv.lookahead, out_dir=folder, main=False)
    crash_point("lookahead")
    guide = checkpoint_folder(folder, t + iv.lookahead)
    source = PolicySource(trainer.live_policy(), name=run.relative(guide), step=t + iv.lookahead, **guide_sampling(cfg))
    guidance = Guidance(source, ctx.scorer, GuideBank(), t, end, seed=cfg.seed, bank_path=bank_path,
                        slots=cfg.npo.slots, share=ctx.share)
    if not guidance.load_saved():  # a resumed run never makes a saved bank twice
        if not scout.trained:  # resumed after the look-ahead ended: its last policy back into the engine
            load_weights(trainer, guide)
        window = trainer.data_order().prompts_between(t, end)
        guidance.prefill(window, [ctx.train_items[x] for x in window], step=t, books=ctx.books if ctx.is_main else None)
    trainer.accelerator.wait_for_everyone()  # the main process has written the look-ahead's metrics
    return guidance, segment_cost(ctx, t, read_jsonl(folder / METRICS))
