"""`npo train`: one run, from a validated config to a complete run directory.

`prepare` does every check that can fail on bad input (config, task, dataset rows, model folder,
output folder) before anything is written; `train` then warms up the embedded default if needed,
evaluates the starting policy, runs the method's loop, evaluates, and writes `summary.json` last.

Methods: `grpo` and `npo` run `npo.loop.train_npo` (GRPO is NPO with no interventions); `autonpo` runs
`npo.autoloop.train_autonpo`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from transformers.utils import logging as hf_logging
from trl import GRPOConfig

from npo.autoloop import train_autonpo
from npo.callbacks import Evaluator, Progress, warmup_bar
from npo.config import RunConfig, dump_yaml, resolved
from npo.errors import UserError
from npo.evaluate import evaluate
from npo.grpo_args import eval_max_new_tokens, grpo_kwargs
from npo.loop import train_npo
from npo.models.load import TINY, check_model_folder, load_policy, resolve_model_path
from npo.prompting import prompt_style
from npo.rewards import TaskScorer
from npo.rundir import RunDir, atomic_write_json, atomic_write_text, read_jsonl
from npo.segments import Context
from npo.tasks import Task, build_split

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


def make_eval_fn(cfg: RunConfig, tokenizer, scorer, style: str, eval_items):
    return partial(evaluate, tokenizer=tokenizer, items=eval_items[: cfg.eval.n], scorer=scorer, style=style,
                   samples=cfg.eval.samples, temperature=cfg.eval.temperature,
                   max_new_tokens=eval_max_new_tokens(cfg), batch_size=cfg.eval.batch_size, seed=cfg.eval.seed)


def train(prep: Prepared, show_progress: bool = True, label: str | None = None) -> dict:
    hf_logging.disable_progress_bar()  # per-segment "Loading weights" / "Writing model shards" bars: noise
    cfg, t_start = prep.cfg, time.perf_counter()
    model_path = resolve_model_path(cfg, prep.train_items, warmup_bar(show_progress))
    warmup_seconds = time.perf_counter() - t_start
    model, tokenizer = load_policy(model_path)
    style = prompt_style(tokenizer)
    scorer = TaskScorer(prep.task, style, cfg.task.reward_threshold, cfg.task.verifier_timeout)

    run = RunDir(prep.out)
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, dump_yaml(resolved(cfg)))
    atomic_write_json(run.trl_args, GRPOConfig(**grpo_kwargs(cfg, output_dir=str(run.checkpoints))).to_dict())
    atomic_write_json(run.model_json, {"model_path": str(model_path), "prompt_style": style})

    progress = Progress(cfg.train.steps, desc=label or f"{cfg.method} seed {cfg.seed}", enabled=show_progress)
    evaluator = Evaluator(run, make_eval_fn(cfg, tokenizer, scorer, style, prep.eval_items),
                          cfg.eval.every, on_result=progress.eval_result)
    evaluator.evaluate(model, 0)
    del model
    ctx = Context(cfg, run, model_path, scorer, style, prep.train_items, evaluator, progress, show_progress)
    t_train = time.perf_counter()
    LOOPS[cfg.method](ctx)
    if evaluator.last_step != cfg.train.steps:
        final, _ = load_policy(run.checkpoint(cfg.train.steps))
        evaluator.evaluate(final, cfg.train.steps)
    progress.close()
    scorer.close()
    summary = summarize(run, cfg, evaluator, model_path, ctx.ledger.summary(cfg.train.steps),
                        wall=time.perf_counter() - t_start, warmup=warmup_seconds,
                        train=time.perf_counter() - t_train - evaluator.seconds)
    atomic_write_json(run.summary, summary)
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
