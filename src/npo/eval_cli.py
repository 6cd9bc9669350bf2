"""`npo eval MODEL_OR_RUN`: the same evaluation that runs during training, as JSON."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from npo.config import load_config
from npo.errors import UserError
from npo.evaluate import eval_plan, evaluate
from npo.models.load import EMBEDDED, load_policy, resolve_model_path
from npo.prompting import prompt_style
from npo.rewards import TaskScorer
from npo.rundir import RunDir
from npo.tasks import build_split


def resolve_target(target: str, step: int | None):
    """(model folder, config path or None) for a run directory, a model folder, 'tiny' or 'tiny-vl'."""
    p, run = Path(target), RunDir(target)
    if target not in EMBEDDED and run.config.is_file():  # a run folder (config.yaml), with or without checkpoints
        steps = run.checkpoint_steps()
        if not steps:
            raise UserError(f"{p}: run has no checkpoint yet")
        if step is None:
            step = steps[-1]
        if step not in steps:
            what = "an incomplete" if run.checkpoint(step).is_dir() else "no"  # a crash cut it short: never loaded
            raise UserError(f"--step {step}: {what} checkpoint at that step in {p} (complete: {steps})")
        return run.checkpoint(step), run.config
    if step is not None:
        raise UserError("--step: only for a run directory")
    return target, None


def run_eval(a) -> dict:
    model_ref, run_config = resolve_target(a.model, a.step)
    sets = []
    if a.task:
        sets.append(f"task.spec={a.task}")
    if a.n is not None:
        sets.append(f"eval.n={a.n}")
    if a.samples is not None:
        sets.append(f"eval.samples={a.samples}")
    if a.temperature is not None:
        sets.append(f"eval.temperature={a.temperature}")
    if model_ref in EMBEDDED:
        sets.append(f"model.path={model_ref}")
    cfg = load_config(a.config or run_config, sets)
    task, train_items, eval_items = build_split(cfg)
    if model_ref in EMBEDDED:
        model_ref = resolve_model_path(cfg, train_items)
    model, tokenizer = load_policy(model_ref)
    style = prompt_style(tokenizer)
    scorer = TaskScorer.for_run(task, style, cfg, warm=eval_items[0])
    try:
        result = evaluate(model, eval_plan(cfg, tokenizer, scorer, style, eval_items))
    finally:
        scorer.close()
    scorer.check(scorer.stats, f"npo eval {a.model}")  # an accuracy the verifier's failures made is no result
    return {"model": str(model_ref), "task": cfg.task.spec, **result, "verify": asdict(scorer.stats)}
