"""`npo train`: one run, from a validated config to a complete run directory.

`prepare` does every check that can fail on bad input (config, task, dataset rows, model folder,
output folder) before anything is written; `train` then warms up the embedded default if needed,
builds the run's one trainer, evaluates the starting policy, runs the method's loop, evaluates, and
writes `summary.json` last.

Methods: `grpo` and `npo` run `npo.loop.train_npo` (GRPO is NPO with no interventions); `autonpo` runs
`npo.autoloop.train_autonpo`.

Several processes (`torchrun`, `accelerate launch`): every process prepares and trains; the main
process builds the warm start while the others wait, and is the only one that writes the run folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState
from transformers.utils import logging as hf_logging
from trl import GRPOConfig

from npo.accounting import Ledger
from npo.autoloop import train_autonpo
from npo.callbacks import Evaluator, Progress, warmup_bar
from npo.config import RunConfig, dump_yaml, resolved
from npo.errors import UserError
from npo.evaluate import eval_plan
from npo.grpo_args import grpo_kwargs
from npo.loop import train_npo
from npo.models.load import TINY, check_model_folder, load_policy, resolve_model_path
from npo.prompting import prompt_style
from npo.rewards import TaskScorer
from npo.rundir import RunDir, atomic_write_json, atomic_write_text, read_jsonl
from npo.segments import Context
from npo.tasks import Task, build_split
from npo.trainer import build_trainer

LOOPS = {"grpo": train_npo, "npo": train_npo, "autonpo": train_autonpo}


@dataclass
class Prepared:
    cfg: RunConfig
    task: Task
    train_items: list
    eval_items: list
    out: Path


def prepare(cfg: RunConfig, out: str | Path) -> Prepared:
    task, train_items, eval_items = build_split(cfg)
    if cfg.model.path != TINY:
        check_model_folder(cfg.model.path)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not empty")
    return Prepared(cfg, task, train_items, eval_items, out)


def rolls_back_to_start(cfg: RunConfig) -> bool:
    """Whether a segment may start again at step 0 (then the engine writes checkpoints/checkpoint-0)."""
    return cfg.method == "autonpo" or (cfg.method == "npo" and cfg.npo.source == "near_future" and any(
        iv.get("kind") == "bootstrap" for iv in cfg.npo.interventions))


def train(prep: Prepared, show_progress: bool = True, label: str | None = None) -> dict:
    ctx = open_run(prep, show_progress, label)
    LOOPS[ctx.cfg.method](ctx)
    return close_run(ctx, prep.out)


def open_run(prep: Prepared, show_progress: bool = True, label: str | None = None) -> Context:
    """Everything before the method's loop: the warm start, the run folder, the run's one trainer, the
    evaluation of the starting policy."""
    hf_logging.disable_progress_bar()  # per-segment "Loading weights" / "Writing model shards" bars: noise
    cfg, t_start = prep.cfg, time.perf_counter()
    processes = PartialState()  # the launcher's processes, or this one
    processes.wait_for_everyone()  # every process has checked its input before anything is written
    main = processes.is_main_process
    with processes.main_process_first():  # the main process builds the warm start; the others find it
        model_path = resolve_model_path(cfg, prep.train_items, warmup_bar(show_progress and main))
    warmup_seconds = time.perf_counter() - t_start
    model, tokenizer = load_policy(model_path)
    style = prompt_style(tokenizer)
    scorer = TaskScorer(prep.task, style, cfg.task.reward_threshold, cfg.task.verifier_timeout)

    run = RunDir(prep.out)
    if main:
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config, dump_yaml(resolved(cfg)))
        atomic_write_json(run.trl_args, GRPOConfig(**grpo_kwargs(cfg, output_dir=str(run.checkpoints))).to_dict())
        atomic_write_json(run.model_json, {"model_path": str(model_path), "prompt_style": style})
    processes.wait_for_everyone()

    ledger = Ledger()
    trainer = build_trainer(cfg, run.checkpoints, model, tokenizer, scorer, style, prep.train_items, [],
                            ledger=ledger, start_dir=run.checkpoints if rolls_back_to_start(cfg) else None)
    progress = Progress(cfg.train.steps, desc=label or f"{cfg.method} seed {cfg.seed}", enabled=show_progress and main)
    evaluator = Evaluator(run, eval_plan(cfg, tokenizer, scorer, style, prep.eval_items), cfg.eval.every, trainer,
                          on_result=progress.eval_result)
    evaluator.evaluate(0)
    return Context(cfg, run, trainer, scorer, style, prep.train_items, evaluator, progress, show_progress, ledger,
                   timings={"start": t_start, "warmup": warmup_seconds, "train": time.perf_counter(),
                            "model_path": str(model_path)})


def close_run(ctx: Context, out: Path) -> dict:
    """The final evaluation (the live model is the final trajectory's last step) and summary.json."""
    cfg, evaluator = ctx.cfg, ctx.evaluator
    if evaluator.last_step != cfg.train.steps:
        evaluator.evaluate(cfg.train.steps)
    ctx.progress.close()
    ctx.scorer.close()
    ctx.trainer.accelerator.wait_for_everyone()  # the main process has written every evaluation
    t = ctx.timings
    summary = summarize(ctx.run, cfg, evaluator, t["model_path"], ctx.ledger.summary(cfg.train.steps),
                        wall=time.perf_counter() - t["start"], warmup=t["warmup"],
                        train=time.perf_counter() - t["train"] - evaluator.seconds)
    if ctx.is_main:
        atomic_write_json(ctx.run.summary, summary)
    ctx.trainer.accelerator.wait_for_everyone()
    return summary


def summarize(run: RunDir, cfg: RunConfig, evaluator, model_path, accounting: dict, wall, warmup, train) -> dict:
    evals = read_jsonl(run.evals)
    first, last = evals[0], evals[-1]
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
        "wall_seconds": round(wall, 2),
        "warmup_seconds": round(warmup, 2),
        "train_seconds": round(train, 2),
        "eval_seconds": round(evaluator.seconds, 2),
    }
