"""`npo train`: one GRPO run through TRL, from a validated config to a complete run directory.

`prepare` does every check that can fail on bad input (config, task, dataset rows, model folder,
output folder) before anything is written; `train` then warms up the embedded default if needed,
evaluates the starting policy, trains, evaluates, and writes `summary.json` last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from npo.config import RunConfig, dump_yaml, grpo_kwargs, grpo_overrides
from npo.errors import UserError
from npo.models.load import TINY, check_model_folder, load_policy, resolve_model_path
from npo.rundir import RunDir, atomic_write_json, atomic_write_text, read_jsonl
from npo.tasks import build_task


@dataclass
class Prepared:
    cfg: RunConfig
    task: object
    train_items: list
    eval_items: list
    out: Path


def build_split(cfg: RunConfig):
    task = build_task(cfg.task.spec, cfg.task.options,
                      question_key=cfg.task.question_key, answer_key=cfg.task.answer_key)
    train_items, eval_items = task.splits(cfg.task.train_size, cfg.task.eval_size, cfg.task.split_seed)
    if len(eval_items) < cfg.eval.n:
        raise UserError(f"eval.n: {cfg.eval.n} > the {len(eval_items)} held-out items of {cfg.task.spec}")
    if not train_items:
        raise UserError(f"task.spec: {cfg.task.spec} has no training items left after the held-out split")
    return task, train_items, eval_items


def prepare(cfg: RunConfig, out: str | Path) -> Prepared:
    task, train_items, eval_items = build_split(cfg)
    if cfg.model.path != TINY:
        check_model_folder(cfg.model.path)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not empty")
    return Prepared(cfg, task, train_items, eval_items, out)


def eval_max_new_tokens(cfg: RunConfig) -> int:
    return cfg.eval.max_new_tokens or grpo_overrides(cfg)["max_completion_length"]


def make_eval_fn(cfg: RunConfig, tokenizer, scorer, style: str, eval_items):
    from npo.evaluate import evaluate

    return partial(evaluate, tokenizer=tokenizer, items=eval_items[: cfg.eval.n], scorer=scorer, style=style,
                   samples=cfg.eval.samples, temperature=cfg.eval.temperature,
                   max_new_tokens=eval_max_new_tokens(cfg), batch_size=cfg.eval.batch_size, seed=cfg.eval.seed)


def build_trainer(cfg: RunConfig, out_dir: Path, model, tokenizer, scorer, style, train_items, callbacks,
                  npo=None, guidance=None):
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig

    from npo.prompting import build_prompt
    from npo.rewards import make_reward_fn
    from npo.trainer import NPOTrainer

    dataset = Dataset.from_list([{"prompt": build_prompt(it, style), "item_index": i}
                                 for i, it in enumerate(train_items)])
    args = GRPOConfig(**grpo_kwargs(cfg, output_dir=str(out_dir)))
    trainer = NPOTrainer(model=model, reward_funcs=make_reward_fn(scorer, train_items), args=args,
                         train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks,
                         scorer=scorer, items=train_items, npo=npo, guidance=guidance)
    for cb in (PrinterCallback, ProgressCallback):  # our own bar and files replace TRL's printing
        trainer.remove_callback(cb)
    return trainer


def train(prep: Prepared, show_progress: bool = True, label: str | None = None) -> dict:
    from npo.callbacks import Evaluator, Progress
    from npo.loop import Context, ledger_summary, train_loop
    from npo.prompting import prompt_style
    from npo.rewards import TaskScorer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-segment "Loading weights" / "Writing model shards" bars: noise
    cfg, t_start = prep.cfg, time.perf_counter()
    model_path = resolve_model_path(cfg, prep.train_items, _warmup_bar(show_progress))
    warmup_seconds = time.perf_counter() - t_start
    model, tokenizer = load_policy(model_path)
    style = prompt_style(tokenizer)
    scorer = TaskScorer(prep.task, style, cfg.task.reward_threshold, cfg.task.verifier_timeout)

    run = RunDir(prep.out)
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, dump_yaml(cfg))
    atomic_write_json(run.root / "model.json", {"model_path": str(model_path), "prompt_style": style})

    progress = Progress(cfg.train.steps, desc=label or f"{cfg.method} seed {cfg.seed}", enabled=show_progress)
    evaluator = Evaluator(run, make_eval_fn(cfg, tokenizer, scorer, style, prep.eval_items),
                          cfg.eval.every, on_result=progress.eval_result)
    evaluator.evaluate(model, 0)
    del model
    ctx = Context(cfg, run, model_path, scorer, style, prep.train_items, evaluator, progress, show_progress)
    t_train = time.perf_counter()
    train_loop(ctx)
    if evaluator.last_step != cfg.train.steps:
        final, _ = load_policy(run.checkpoint(cfg.train.steps))
        evaluator.evaluate(final, cfg.train.steps)
    progress.close()
    scorer.close()
    summary = summarize(run, cfg, evaluator, model_path, ledger_summary(ctx.ledger, cfg.train.steps),
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


def _warmup_bar(show: bool):
    if not show:
        return None
    from tqdm import tqdm

    bar = {}

    def progress(step, total, loss):
        if "b" not in bar:
            bar["b"] = tqdm(total=total, desc="warmup (cached after the first run)", dynamic_ncols=True)
        bar["b"].set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar["b"].update(1)
        if step == total:
            bar["b"].close()

    return progress
