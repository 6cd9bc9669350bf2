"""`npo train`: one run, from a validated config to a complete run directory.

`prepare` does every check that can fail on bad input (config, task, dataset rows, model folder,
output folder) before anything is written; `train` then warms up the embedded default if needed,
builds the run's one trainer, evaluates the starting policy, runs the method's loop, evaluates, and
writes `summary.json` last. With `resume`, a killed run in the output folder continues where it
stopped (`npo.rundir.resume`); a finished one returns its summary.

Methods: `grpo` and `npo` run `npo.loops.npo.train_npo` (GRPO is NPO with no interventions); `autonpo` runs
`npo.loops.autonpo.train_autonpo`.

Several processes (`torchrun`, `accelerate launch`): every process prepares and trains; the main
process builds the warm start while the others wait, and is the only one that writes the run folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from transformers.utils import logging as hf_logging

from npo.algo.accounting import Clock, Ledger
from npo.algo.controller import Controller, ControllerState, Made
from npo.config.run import RunConfig, dump_yaml, resolved, to_dict
from npo.config.trl_args import check_reward_weights, eval_max_new_tokens
from npo.errors import UserError
from npo.guides.sources import check_source
from npo.loops.autonpo import train_autonpo
from npo.loops.npo import train_npo
from npo.loops.segment import Context, retain
from npo.loops.steps import measure_effect_at_end
from npo.models.check import check_chat, check_model
from npo.models.evaluate import eval_plan
from npo.models.load import load_policy, lora_config, resolve_model_path
from npo.rundir.journal import Journal
from npo.rundir.layout import RunDir, atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from npo.rundir.lock import FolderLock, check_out, is_empty
from npo.rundir.resume import clear, fingerprint, recover, run_status
from npo.rundir.retention import checkpoint_counts, disk_bytes
from npo.tasks import Task, build_split, check_split_sizes
from npo.tasks.prompting import prompt_style
from npo.tasks.rewards import TaskScorer
from npo.trl_seam.callbacks import Evaluator, Progress, warmup_bar
from npo.trl_seam.engine import load_weights
from npo.trl_seam.setup import build_trainer, trainer_args
from npo.trl_seam.tracking import RunReport, report_targets, report_values
from npo.trl_seam.user_callbacks import StopRequested

LOOPS = {"grpo": train_npo, "npo": train_npo, "autonpo": train_autonpo,
         "luffy": train_npo, "exgrpo": train_npo, "rlep": train_npo}  # the baselines: presets of NPO's loop


@dataclass
class Prepared:
    cfg: RunConfig
    task: Task
    train_items: list
    eval_items: list
    out: Path
    resume: bool = False
    status: str = "new"  # "new", "resume" or "finished" (npo.rundir.resume.run_status)
    lock: FolderLock | None = None
    # given from Python (npo.api.NPOTrainer): a loaded model and its tokenizer or processor, TRL reward
    # functions beside the verifier (None marks the verifier's place), and TRL callbacks
    model: object = None
    tokenizer: object = None
    reward_funcs: list = field(default_factory=list)
    callbacks: list = field(default_factory=list)
    engine: object = None  # the run's GuidedGRPOTrainer, once `train` has built it (npo.api.NPOTrainer's surface)


def prepare(cfg: RunConfig, out: str | Path, resume: bool = False, split: tuple | None = None,
            model=None, tokenizer=None, reward_funcs: list = (), callbacks: list = ()) -> Prepared:
    """Every check that bad input can fail, before anything is written: the task and its rows, the
    model against them, the output folder. `resume`: the folder may hold this config's run, killed (it
    continues) or finished (nothing to do); without it the folder must be new. `split`: (task, training
    items, held-out items) given from Python instead of the config's task; `model`: a loaded model."""
    if cfg.method != "grpo":
        for spec in [cfg.npo.source, *(a for a in cfg.npo.arms if not a.startswith("near_future"))]:
            check_source(spec)  # its files first: cheaper than the task's split
    task, train_items, eval_items = split or build_split(cfg)
    if split:
        check_split_sizes(cfg, train_items, eval_items)
    if hasattr(task, "check_references"):  # data files: references the verifier could never match
        task.check_references(cfg.task.verifier_timeout, seed=cfg.task.split_seed)
    lora_config(cfg.model.lora)  # its fields, refused before anything is written
    grpo = cfg.resolved_grpo
    check_reward_weights(grpo.get("reward_weights"), max(1, len(reward_funcs)))
    if model is None:
        check_model(cfg, train_items + eval_items, max(grpo["max_completion_length"], eval_max_new_tokens(cfg)))
    else:  # a loaded model from Python: its processing_class is what renders chat prompts
        check_chat(train_items + eval_items, tokenizer, cfg.model.path)
    prep = Prepared(cfg, task, train_items, eval_items, Path(out), resume, model=model, tokenizer=tokenizer,
                    reward_funcs=list(reward_funcs), callbacks=list(callbacks))
    processes = PartialState()
    with processes.main_process_first():  # the main process's write test is undone before the others look
        check_out(prep.out, write_test=processes.is_main_process)
        _check_folder(prep)
    return prep


def _check_folder(prep: Prepared) -> None:
    out = prep.out
    prep.status = run_status(out, prep.cfg, prep.train_items + prep.eval_items) if prep.resume else "new"
    if not prep.resume and out.exists() and not is_empty(out):
        raise UserError(f"--out {out}: already exists and is not empty (to continue a killed run: "
                        f"npo train --resume {out})")


def claim(prep: Prepared) -> None:
    """Take the run folder's lock (the main process; one run per folder), then look at the folder
    again: another run may have written it since `prepare` looked."""
    if prep.lock is None and PartialState().is_main_process:
        prep.lock = FolderLock(prep.out).acquire()
        _check_folder(prep)


def rolls_back_to_start(cfg: RunConfig) -> bool:
    """Whether a segment may start again at step 0 (then the engine writes checkpoints/checkpoint-0)."""
    return cfg.method == "autonpo" or (cfg.method == "npo" and cfg.npo.source == "near_future" and any(
        iv.get("kind") == "bootstrap" for iv in cfg.npo.interventions))


def train(prep: Prepared, show_progress: bool = True, label: str | None = None) -> dict:
    if prep.status == "finished":
        return json.loads(RunDir(prep.out).summary.read_text())
    claim(prep)
    try:
        ctx = open_run(prep, show_progress, label)
        prep.engine = ctx.trainer
        try:
            LOOPS[ctx.cfg.method](ctx)
        except StopRequested as stop:  # a user's callback ended the run: what it did so far is committed
            ctx.commit(f"stopped-{stop.step}", {"step": stop.step})
            return close_run(ctx, prep.out, stopped=stop.step)
        return close_run(ctx, prep.out)
    finally:
        if prep.lock is not None:
            prep.lock.release()
            prep.lock = None


def open_run(prep: Prepared, show_progress: bool = True, label: str | None = None) -> Context:
    """Everything before the method's loop: the warm start, the run folder (or a killed run's folder
    repaired, and its books read back), the run's one trainer, the evaluation of the starting policy."""
    hf_logging.disable_progress_bar()  # per-segment "Loading weights" / "Writing model shards" bars: noise
    cfg, t_start, resuming = prep.cfg, time.perf_counter(), prep.status == "resume"
    processes = PartialState()  # the launcher's processes, or this one
    processes.wait_for_everyone()  # every process has checked its input before anything is written
    main = processes.is_main_process
    run = RunDir(prep.out)
    model_path, model, tokenizer = cfg.model.path, prep.model, prep.tokenizer  # a model given from Python, loaded
    if model is None:
        with processes.main_process_first():  # the main process builds the warm start; the others find it
            model_path = resolve_model_path(cfg, prep.train_items, warmup_bar(show_progress and main), prep.task)
    warmup_seconds = time.perf_counter() - t_start if model is None else 0.0
    args = trainer_args(cfg, run.checkpoints)  # after the warm start, before the policy: under ZeRO-3 it loads sharded
    if model is None:
        model, tokenizer = load_policy(model_path, dtype=cfg.resolved.precision.load, tokenizer=prep.tokenizer)
    style = prompt_style(tokenizer)
    scorer = TaskScorer.for_run(prep.task, style, cfg, warm=prep.train_items[0])  # workers warm before any limit

    if main and not resuming:
        if prep.out.exists():
            clear(prep.out)  # a run killed before its journal was written: nothing was trained
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config, dump_yaml(resolved(cfg)))
        # every GRPOConfig value; report_to as the user set it (the trainer's is what npo.trl_seam.tracking leaves TRL)
        trl = {**args.to_dict(), "report_to": report_values(cfg.resolved_grpo["report_to"])}
        atomic_write_json(run.trl_args, trl)
        atomic_write_json(run.model_json, {"model_path": str(model_path), "prompt_style": style})
        Journal(run.state, fingerprint=fingerprint(cfg, prep.train_items + prep.eval_items)).save()
    processes.wait_for_everyone()
    journal = Journal.load(run.state)
    with processes.main_process_first():  # the main process repairs the folder; the others read it after
        back = recover(run, journal, repair=main) if resuming else None
    books = back.books if back else {}

    ledger = Ledger(**books.get("ledger", {}))
    trainer = build_trainer(cfg, args, model, tokenizer, scorer, style, prep.train_items, prep.callbacks,
                            reward_funcs=prep.reward_funcs, ledger=ledger,
                            start_dir=run.checkpoints if rolls_back_to_start(cfg) else None)
    progress = Progress(cfg.train.steps, initial=back.step if back else 0,
                        desc=label or f"{cfg.method} seed {cfg.seed}", enabled=show_progress and main)
    report = open_report(cfg, run, trainer) if main else None

    def on_eval(result: dict) -> None:
        progress.eval_result(result)
        if report is not None:
            report.evaluation(result)

    evaluator = Evaluator(run, eval_plan(cfg, tokenizer, scorer, style, prep.eval_items), cfg.eval.every, trainer,
                          on_result=on_eval)
    controller = None
    if cfg.method == "autonpo":  # its decisions are books; what it has seen comes with each checkpoint
        made = Made(**books["made"]) if books.get("made") else Made()
        controller = Controller(cfg.autonpo, cfg.train.steps, ControllerState(made=made),
                                every=cfg.train.checkpoint_every)
    if back:  # the resumed process's start-up is lost time; the productive clock continues from the books
        evaluator.seconds = books.get("eval_seconds", 0.0)
        for key, value in books.get("verify", {}).items():  # the verifier's running counts (metrics.jsonl)
            setattr(scorer.stats, key, value)
        if not books.get("started"):  # killed before the snapshot after the step-0 evaluation: its counts are
            if main:  # not in these books, so it runs again (its line goes) and is counted once
                write_jsonl(run.evals, [e for e in read_jsonl(run.evals) if e["step"] != 0])
            processes.wait_for_everyone()
        evaluator.last_step = max((e["step"] for e in read_jsonl(run.evals)), default=None)
        clock = Clock(base=books.get("wall_seconds", 0.0), warmup_seconds=books.get("warmup_seconds", warmup_seconds))
        if main:  # this process's start-up produced nothing the run did not have
            journal.crashes["lost_seconds"] += time.perf_counter() - t_start
            journal.save()
    else:
        clock = Clock(since=t_start, warmup_seconds=warmup_seconds)
    ctx = Context(cfg, run, trainer, scorer, style, prep.train_items, evaluator, progress, show_progress, journal,
                  ledger, clock, controller, model_path=str(model_path), report=report)
    if evaluator.last_step is None:
        evaluator.evaluate(0)
        journal.books = ctx.books()  # the starting policy's evaluation counted: a kill from here on resumes past it
        if main:
            journal.save()
    return ctx


def open_report(cfg: RunConfig, run: RunDir, trainer) -> RunReport | None:
    """The run's one TensorBoard log / W&B run, when train.grpo.report_to asks for them."""
    targets = report_targets(cfg.resolved_grpo["report_to"])
    if not targets:
        return None
    config = {"npo": run.config.read_text(), "npo_dict": to_dict(resolved(cfg)),
              "trl": json.loads(run.trl_args.read_text())}
    report = RunReport(run.root, targets, config)
    trainer.add_callback(report)
    return report


def close_run(ctx: Context, out: Path, stopped: int | None = None) -> dict:
    """The final evaluation (the live model is the final trajectory's last step, or the step a user's
    callback `stopped` the run at) and summary.json."""
    cfg, evaluator = ctx.cfg, ctx.evaluator
    last = cfg.train.steps if stopped is None else stopped
    if ctx.stage_events:  # an event outside a stage would never reach events.jsonl
        raise RuntimeError(f"events outside a committed stage: {ctx.stage_events}")
    at_end = cfg.npo.effect_at_end and "effect/end" not in ctx.journal.done
    if evaluator.last_step != last or at_end:
        if not (ctx.trainer.engine_built and ctx.trainer.state.global_step == last):
            load_weights(ctx.trainer, ctx.run.checkpoint(last))  # resumed after the last step
    if evaluator.last_step != last:
        evaluator.evaluate(last)
    if at_end:  # the windows' prompts sampled again by the final policy (npo.effect_at_end)
        ctx.once("effect/end", measure_effect_at_end, ctx, last)
    ctx.progress.close()
    ctx.scorer.close()
    if ctx.report is not None:
        ctx.report.close()
    ctx.trainer.accelerator.wait_for_everyone()  # the main process has written every evaluation
    retain(ctx, finished=True)  # no rollback or resume can come: only the last checkpoint stays whole
    summary = summarize(ctx.run, cfg, ctx.model_path, ctx.ledger.summary(last), ctx.clock,
                        eval_seconds=evaluator.seconds, crashes=ctx.journal.crashes)
    summary["stopped_at"] = stopped  # None: the run trained its train.steps
    trainer = ctx.trainer
    trainer.user_callbacks.end_run(trainer.args, trainer.state, trainer.control)  # once per run (npo.trl_seam.user_callbacks)
    if ctx.is_main:
        atomic_write_json(ctx.run.summary, summary)
    ctx.trainer.accelerator.wait_for_everyone()
    return summary


def summarize(run: RunDir, cfg: RunConfig, model_path, accounting: dict, clock: Clock, eval_seconds: float,
              crashes: dict) -> dict:
    evals = read_jsonl(run.evals)
    first, last = evals[0], evals[-1]
    wall = clock.wall()
    return {
        "method": cfg.method,
        "seed": cfg.seed,
        "task": cfg.task.spec,
        "model_path": str(model_path),
        "eval_items": first["n"],
        "initial_accuracy": first["accuracy"],
        "final_accuracy": last["accuracy"],
        "best_accuracy": max(e["accuracy"] for e in evals),
        "initial_mean_at_k": first.get("mean_at_k"),
        "final_mean_at_k": last.get("mean_at_k"),
        **accounting,
        "wall_seconds": round(wall, 2),  # only time that produced this run (a crash's losses apart)
        "warmup_seconds": round(clock.warmup_seconds, 2),
        "train_seconds": round(wall - clock.warmup_seconds - eval_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "disk_bytes": disk_bytes(run.root),  # the run folder as left, this summary aside
        "checkpoints": checkpoint_counts(run),
        "resumes": crashes["resumes"],
        "lost_seconds": round(crashes["lost_seconds"], 2),  # work a crash undid, and each resume's start-up
    }
