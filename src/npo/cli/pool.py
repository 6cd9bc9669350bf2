"""`npo pool RUN_OR_MODEL --k K --out POOL.jsonl`: RLEP's experience pool, built once.

A finished run's policy (its last complete checkpoint, or `--step`) -- or any local model folder with
`--config`/`--task` -- samples k answers for each training prompt of the task's split (all of them, or
`--prompts N` drawn with `--seed`), at the run's temperature and completion length; the verified-correct
ones are written, atomically, as JSONL rows {question, completion, source, step}. A run trained with
`npo.source: pool:POOL.jsonl` (method rlep) replays them: npo.guides.sources.PoolSource.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from tqdm import tqdm

from npo.config.run import load_config
from npo.errors import UserError
from npo.models.generation import Policy, Sampling, prompt_seeds
from npo.models.load import check_model_folder, load_policy
from npo.rundir.layout import RunDir, atomic_write_text, checkpoint_state
from npo.tasks import build_split
from npo.tasks.prompting import prompt_style
from npo.tasks.rewards import TaskScorer


def source_policy(ref: str, step: int | None, config: str | None, task: str | None):
    """(config, model folder, what the pool says it came from) of a run folder or a model folder."""
    run = RunDir(ref)
    sets = [f"task.spec={task}"] if task else []
    if run.config.is_file():
        cfg = load_config(run.config, sets)
        steps = [s for s in run.checkpoint_steps() if checkpoint_state(run.checkpoint(s)) is not None]
        if not steps:
            raise UserError(f"{ref}: no complete checkpoint to build a pool from")
        if step is not None and step not in steps:
            raise UserError(f"--step {step}: no complete checkpoint at that step in {ref} (complete: "
                            f"{', '.join(map(str, steps))})")
        at = steps[-1] if step is None else step
        return cfg, run.checkpoint(at), {"source": str(run.root), "step": at}
    if step is not None:
        raise UserError("--step: only for a run folder")
    cfg = load_config(config, sets)
    return cfg, check_model_folder(ref, "pool"), {"source": str(ref), "step": None}


def build_pool(ref: str, *, k: int, out: str, prompts: int = 0, seed: int = 0, step: int | None = None,
               config: str | None = None, task: str | None = None, show_progress: bool = True) -> dict:
    if k < 1 or prompts < 0:
        raise UserError("--k must be >= 1 and --prompts >= 0")
    target = Path(out)
    if target.exists():
        raise UserError(f"--out {out}: exists (a pool is built once; choose another path)")
    if not target.parent.is_dir():
        raise UserError(f"--out {out}: no folder {target.parent}")
    cfg, folder, origin = source_policy(ref, step, config, task)
    task, train_items, _ = build_split(cfg)
    picked = sorted(random.Random(seed).sample(range(len(train_items)), prompts)) if 0 < prompts < len(
        train_items) else list(range(len(train_items)))
    t0 = time.perf_counter()
    model, tokenizer = load_policy(folder)
    style = prompt_style(tokenizer)
    g = cfg.resolved_grpo
    policy = Policy(model, tokenizer, style, Sampling.of(g), cfg.model.score_memory_mb << 20)
    scorer = TaskScorer.for_run(task, style, cfg, warm=train_items[0])
    rows, samples, covered = [], 0, 0
    chunk = 512
    bar = tqdm(total=len(picked), desc="pool", unit="prompt", disable=not show_progress)
    try:
        for start in range(0, len(picked), chunk):
            part = picked[start:start + chunk]
            items = [train_items[i] for i in part]
            groups = policy.sample(items, k=k, temperature=g["temperature"], max_new_tokens=g["max_completion_length"],
                                   seeds=prompt_seeds(seed * 15485863 + 1, part))
            for it, group in zip(items, groups):
                samples += len(group)
                ok = [x.text for x in group if scorer.reward(x.text, it) == 1.0]  # every success, as RLEP keeps them
                covered += bool(ok)
                image = {"image": it.image} if it.image is not None else {}
                rows += [{"question": it.question, **image, "completion": text, **origin} for text in ok]
            bar.update(len(part))
    finally:
        bar.close()
        scorer.close()
    atomic_write_text(target, "".join(json.dumps(r) + "\n" for r in rows))
    return {"pool": str(target), **origin, "prompts": len(picked), "samples": samples, "successes": len(rows),
            "prompts_covered": covered, "k": k, "seconds": round(time.perf_counter() - t0, 1)}
