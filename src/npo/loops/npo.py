"""The NPO loop (methods grpo and npo), top to bottom. Plain GRPO is the same loop with no interventions.

Where npo departs from the paper, and where each departure lives:
    1. Guides are made ahead, by the live policy itself: at the end of the look-ahead the one trainer
       holds pi_{t+Delta}, which writes a guide for every prompt the window will see before the
       rollback replaces it; no second model is kept (`npo.loops.steps.near_future_guidance`).
    2. Rollback is in place: the checkpoint at t is loaded into the run's one trainer, which replays
       the first pass bit for bit without guides (`npo.loops.steps.retrain_window`,
       `npo.trl_seam.trainer.GuidedGRPOTrainer._prepare_for_training`).
    3. A guide is the first of k seeded samples the verifier accepts, each prompt's randomness its own,
       so a bank does not depend on batching or the process count (`npo.guides.bank.Guidance.prefill`).
    4. `at_step: auto-plateau` finds t with a rule of ours on the on-policy group accuracy
       (`_run_to_plateau`, `npo.algo.interventions.plateaued`).
    5. Every NPO result has its control: `npo.source: self`, the same windows guided by the live
       policy's own k tries, Delta = 0 (`on_demand_guidance`).
    6. Every stage commits once, so a killed run resumes exactly (`npo.loops.segment.Context.once`).
    7. A window can be an experiment: `npo.controls` withholds the guides of a random share of its
       prompts and measures what the guides did (`npo.loops.steps.measure_effect`); `npo.arms` draws
       each prompt's guide from one of several sources (`armed_guidance`).

One intervention (docs/METHOD.md section 3), with Delta = lookahead and W = window, is `_intervene`:
reach t (t = 0 for bootstrap; a fixed step, or the first plateau for `auto-plateau`), look ahead to
t + Delta, write the window's bank there, roll back to t and retrain [t, t + W) guided, record the
intervention with what it cost. Then plain GRPO to the next intervention or to the end.

With `npo.inject_when: always` (the presets luffy, exgrpo, rlep) there are no interventions: the whole
run is one guided segment [0, steps), its source asked on demand, and the injection rules decide
which groups take guides at each step (`npo.algo.injection`).
"""

from __future__ import annotations

import time

from npo.algo.accounting import Cost
from npo.algo.controls import draw_arm
from npo.algo.interventions import Intervention, parse_interventions
from npo.guides.arms import ArmedGuidance
from npo.guides.bank import Guidance
from npo.guides.sources import guide_sampling, make_source
from npo.loops.segment import Context, record_intervention, run_segment
from npo.loops.steps import (
    look_ahead,
    look_ahead_cost,
    measure_effect,
    near_future_guidance,
    reach,
    retrain_window,
    window_guidance,
)
from npo.models.generation import Policy, Sampling
from npo.models.load import load_policy, outside_zero3
from npo.rundir.layout import checkpoint_folder, read_jsonl
from npo.tasks.prompting import prompt_style
from npo.trl_seam.callbacks import PlateauWatch
from npo.trl_seam.engine import load_weights


def train_npo(ctx: Context) -> None:
    cfg, run, steps = ctx.cfg, ctx.run, ctx.cfg.train.steps
    if cfg.method != "grpo" and cfg.npo.inject_when == "always":
        ctx.once("guided-run", _guide_whole_run, ctx)
        return
    interventions = (parse_interventions(cfg.npo.interventions, steps, ahead=cfg.npo.source == "near_future")
                     if cfg.method == "npo" else [])
    pos = 0  # the final trajectory has a checkpoint at `pos` (or is the base model at 0)
    for i, iv in enumerate(interventions):
        # 1. the rollback target t
        t = ctx.once(f"plateau/{i}", _run_to_plateau, ctx, pos, i, iv) if iv.auto else iv.at_step
        if t is None:
            return  # no plateau before the end: the run has ended
        # 2. reach t, look ahead, write the bank, roll back to t and retrain the window, record
        pos = ctx.once(f"intervention/{i}", _intervene, ctx, i, iv, pos, t)
    if pos < steps:
        run_segment(ctx, pos, steps, out_dir=run.checkpoints)


def _guide_whole_run(ctx: Context) -> int:
    """Every step guided by an on-demand source, under the injection rules (no look-ahead, no rollback)."""
    t0, steps = time.perf_counter(), ctx.cfg.train.steps
    guidance = armed_guidance(ctx, 0, "always", (0, steps)) if ctx.cfg.npo.arms else on_demand_guidance(ctx, (0, steps))
    window = retrain_window(ctx, guidance)
    record_intervention(ctx, guidance, index=0, kind="always", trigger="always", delta=None, guide_mode="on_demand",
                        lookahead=Cost(), seconds=time.perf_counter() - t0,
                        **({"arms": guidance.labels} if ctx.cfg.npo.arms else {}))
    measure_effect(ctx, guidance, window, "always")
    return steps


def on_demand_source(ctx: Context, spec: str | None = None):
    """The run's guide source (or arm `spec`'s) when it is not its own near future (npo.guides.sources.make_source)."""
    cfg, trainer = ctx.cfg, ctx.trainer

    def load(path: str, _kind: str):  # another run's policy or a teacher model, beside the live one
        with outside_zero3():  # sampled only, whole on every process; auto is bf16 on a GPU
            model, tok = load_policy(path, dtype=cfg.model.dtype)
        return Policy(model.to(trainer.accelerator.device), tok, prompt_style(tok), Sampling.of(trainer.args),
                      trainer.score_budget)

    return make_source(spec or cfg.npo.source, sampling=guide_sampling(cfg), task=ctx.scorer.task, style=ctx.style,
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
    """Intervention i at step t, the paper's steps by name. Returns the window's end."""
    reach(ctx, pos, t)
    started, end = time.perf_counter(), min(t + iv.window, ctx.cfg.train.steps)  # the intervention's own time
    folder, cost = None, Cost()
    if ctx.cfg.npo.source == "near_future":
        folder, ahead = ctx.run.lookahead(i, iv.kind), t + iv.lookahead
        scout = look_ahead(ctx, folder, t, ahead)
        cost = look_ahead_cost(ctx, folder, t)
    if ctx.cfg.npo.arms:  # several sources, each prompt's drawn by a coin: the window is an experiment
        guidance = armed_guidance(ctx, i, iv.kind, (t, end), folder, iv.lookahead)
    elif folder is not None:
        guide = checkpoint_folder(folder, ahead)

        def window_prompts() -> list[int]:
            if not scout.trained:  # resumed after the look-ahead ended: its last policy back into the engine
                load_weights(ctx.trainer, guide)
            return ctx.trainer.data_order().prompts_between(t, end)

        guidance = near_future_guidance(ctx, i, iv.kind, guide, ahead, (t, end), window_prompts)
    else:  # self, a teacher, replay, another run: asked as gated prompts come
        guidance = on_demand_guidance(ctx, (t, end), ctx.run.guide_bank(i, iv.kind), i)
    window = retrain_window(ctx, guidance)
    trigger = "auto-plateau" if iv.auto else ("start" if iv.kind == "bootstrap" else "at_step")
    mode = "ahead" if ctx.cfg.npo.source == "near_future" else "on_demand"
    record_intervention(ctx, guidance, index=i, kind=iv.kind, trigger=trigger, delta=iv.lookahead,
                        guide_mode=mode, lookahead=cost, seconds=time.perf_counter() - started,
                        **({"arms": guidance.labels} if ctx.cfg.npo.arms else {}))
    measure_effect(ctx, guidance, window, iv.kind)  # npo.controls: what the window's guides did
    return guidance.end


def armed_guidance(ctx: Context, i: int, kind: str, window: tuple[int, int], folder=None,
                   lookahead: int | None = None) -> ArmedGuidance:
    """npo.arms: one Guidance per arm, each with its bank file; a near_future:DELTA arm's bank is written
    by the look-ahead's checkpoint t + DELTA, loaded into the engine (the one look-ahead to t + lookahead
    holds every smaller Delta's checkpoint), for the window's prompts the coin draws to it."""
    t, end = window
    specs, base = ctx.cfg.npo.arms, ctx.run.guide_bank(i, kind)
    labels = [spec if specs[:j].count(spec) == 0 else f"{spec}#{specs[:j].count(spec) + 1}" for j, spec in enumerate(specs)]
    arms = []
    for j, (spec, label) in enumerate(zip(specs, labels)):
        path = base.with_name(f"{base.stem}.arm{j}.json")
        source, _, delta = spec.partition(":")
        if source != "near_future":
            arms.append(window_guidance(ctx, on_demand_source(ctx, spec), window, path, i, label))
            continue
        step = t + int(delta or lookahead)
        guide = checkpoint_folder(folder, step)

        def drawn_here(guide=guide, label=label) -> list[int]:
            load_weights(ctx.trainer, guide)  # this arm's policy, pi_{t+Delta}, into the engine
            return [x for x in ctx.trainer.data_order().prompts_between(t, end)
                    if draw_arm(labels, ctx.cfg.seed, i, ctx.train_items[x].key) == label]

        arms.append(near_future_guidance(ctx, i, kind, guide, step, window, drawn_here, path, label))
    return ArmedGuidance(arms, controls=ctx.cfg.npo.controls, index=i)


def on_demand_guidance(ctx: Context, window: tuple[int, int], bank_path=None, index: int = 0) -> Guidance:
    """The guidance of a window whose source is asked as its gated prompts come (not the near future)."""
    return window_guidance(ctx, on_demand_source(ctx), window, bank_path, index, label=ctx.cfg.npo.source)
