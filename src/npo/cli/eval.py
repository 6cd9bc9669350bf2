"""`npo eval MODEL_OR_RUN`: the same evaluation that runs during training, as JSON, with a progress bar;
`--n N` evaluates N held-out items (a data file smaller than task.eval_size: all of its rows), and
`--dump FILE` writes every item's prompt, completions, extracted answers and scores (JSONL)."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from npo.config.run import load_config
from npo.errors import UserError
from npo.models.evaluate import eval_plan
from npo.models.load import EMBEDDED, load_policy, resolve_model_path
from npo.rundir.layout import RunDir, write_jsonl
from npo.tasks import build_split
from npo.tasks.prompting import prompt_style
from npo.tasks.rewards import TaskScorer
from npo.trl_seam.callbacks import warmup_bar


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
    dump = Path(a.dump) if a.dump else None
    if dump is not None and (dump.exists() or not dump.parent.is_dir()):
        why = "exists (npo never overwrites)" if dump.exists() else "its folder does not exist"
        raise UserError(f"--dump {dump}: {why}")
    model_ref, run_config = resolve_target(a.model, a.step)
    hf_logging.disable_progress_bar()  # "Loading weights" bars: noise beside ours
    sets = []
    if a.task:  # another task: the config's options were its own task's
        sets += [f"task.spec={a.task}", "task.options={}"]
    if a.n is not None:
        sets.append(f"eval.n={a.n}")
    if a.samples is not None:
        sets.append(f"eval.samples={a.samples}")
    if a.temperature is not None:
        sets.append(f"eval.temperature={a.temperature}")
    if model_ref in EMBEDDED:
        sets.append(f"model.path={model_ref}")
    if a.n is not None:  # --n items: a held-out split at least that large (a small file: all of its rows)
        sets.append(f"task.eval_size={max(a.n, load_config(a.config or run_config).task.eval_size)}")
    cfg = load_config(a.config or run_config, sets)
    task, train_items, eval_items = build_split(cfg, evaluation=True)
    if model_ref in EMBEDDED:
        model_ref = resolve_model_path(cfg, train_items, warmup_bar(not a.quiet))
    model, tokenizer = load_policy(model_ref)
    style = prompt_style(tokenizer)
    scorer = TaskScorer.for_run(task, style, cfg, warm=eval_items[0])
    plan = eval_plan(cfg, tokenizer, scorer, style, eval_items)
    records = [] if dump is not None else None
    bar = tqdm(total=len(plan.items), desc="npo eval", unit="item", disable=a.quiet, file=sys.stderr)
    try:
        result = plan.summarize(*plan.score(model, progress=bar.update, records=records))
    finally:
        bar.close()
        scorer.close()
    scorer.check(scorer.stats, f"npo eval {a.model}")  # an accuracy the verifier's failures made is no result
    if dump is not None:
        write_jsonl(dump, records)
    return {"model": str(model_ref), "task": cfg.task.spec, **result, "verify": asdict(scorer.stats),
            **({"dump": str(dump)} if dump is not None else {})}
