"""Tasks and verifiers: `build_task(spec, options)` resolves `arith`, `scratch`, `vis-arith`, `vis-count`,
`rg:NAME`, `jsonl:PATH`, `parquet:PATH` through the registry of `npo.tasks.base`; `build_split(cfg)` gives a run's disjoint
training and held-out items.

Kept light on purpose (no torch, transformers or TRL): every verifier worker process imports this
package when it starts (outside any verification's limit, but a spare must be ready quickly).
"""

from __future__ import annotations

from npo.errors import UserError
from npo.tasks import arith, files, rg, scratch, visual  # noqa: F401  (each registers its task kind)
from npo.tasks.base import REGISTRY, Item, Task, disjoint_split, register

__all__ = ["Item", "Task", "build_split", "build_task", "check_split_sizes", "disjoint_split", "register", "run_task"]


def build_task(spec: str, options: dict | None = None, **file_options) -> Task:
    """Resolve a task spec; unknown kinds are a UserError naming the spec."""
    kind, _, arg = spec.partition(":")
    if kind not in REGISTRY:
        known = ", ".join(f"{k}:..." if k != "arith" else k for k in sorted(REGISTRY))
        raise UserError(f"task.spec: unknown task {spec!r} (known: {known})")
    return REGISTRY[kind](arg, dict(options or {}), **file_options)


def run_task(cfg) -> Task:
    """The task of a run's config (`cfg`: an npo.config.run.RunConfig)."""
    t = cfg.task
    return build_task(t.spec, t.options, question_key=t.question_key, answer_key=t.answer_key, image_key=t.image_key)


def build_split(cfg, evaluation: bool = False) -> tuple[Task, list[Item], list[Item]]:
    """The run's task (`cfg`: an npo.config.run.RunConfig) and its disjoint (train, held-out) items,
    checked against eval.n. `evaluation` (npo eval): a data file smaller than task.eval_size is held
    out whole, and no training split is needed."""
    task = run_task(cfg)
    eval_size = cfg.task.eval_size
    if evaluation and hasattr(task, "items"):
        eval_size = min(eval_size, len(task.items))
    train_items, eval_items = task.splits(cfg.task.train_size, eval_size, cfg.task.split_seed)
    check_split_sizes(cfg, train_items, eval_items, evaluation)
    return task, train_items, eval_items


def check_split_sizes(cfg, train_items: list, eval_items: list, evaluation: bool = False) -> None:
    """eval.n and train.prompts_per_step against the items there are."""
    if len(eval_items) < cfg.eval.n:
        fix = f"--n {len(eval_items)}" if evaluation else f"--set eval.n={len(eval_items)}"
        raise UserError(f"eval.n: {cfg.eval.n} > the {len(eval_items)} held-out items of {cfg.task.spec} "
                        f"(use {fix} or fewer)")
    if evaluation:
        return
    if len(train_items) < cfg.train.prompts_per_step:  # TRL's sampler would make no batch: zero steps, no error
        raise UserError(f"train.prompts_per_step: {cfg.train.prompts_per_step} > the {len(train_items)} training "
                        f"items of {cfg.task.spec} left after the held-out split")
