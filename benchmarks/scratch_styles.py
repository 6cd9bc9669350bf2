"""Which scratchpad order a policy writes: the share of its correct `scratch` answers written in the
teacher's one canonical order (left to right), for the warm start and the final checkpoints of a
paper_table.py comparison on configs/scratch.yaml (issue 15).

    .venv/bin/python benchmarks/scratch_styles.py runs/paper-scratch [--prompts 300 --k 4 --seed 0]

On a warm start that learned all 6 orders alike, the share is about 1/6; a policy trained towards the
teacher's traces writes it more, one trained on its own successes need not.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from npo.config.run import load_config
from npo.models.generation import Policy, prompt_seeds
from npo.models.load import load_policy
from npo.tasks import build_split


def styles(path, task, items, k: int, seed: int) -> tuple[int, int]:
    """(correct answers, of which in the canonical order) of k samples per item at T = 1."""
    model, tok = load_policy(path)
    groups = Policy(model, tok, "plain").sample(items, k=k, temperature=1.0, max_new_tokens=28,
                                                seeds=prompt_seeds(seed, list(range(len(items)))))
    ok = [x.text for it, g in zip(items, groups) for x in g if task.score(x.text, it) == 1.0]
    canonical = {task.reference_completion(it) for it in items}
    return len(ok), sum(text in canonical for text in ok)


def main(a) -> None:
    out = Path(a.out)
    cfg = load_config(out / "runs" / "grpo-s0" / "config.yaml")
    task, train, _ = build_split(cfg)
    items = random.Random(a.seed).sample(train, a.prompts)
    policies = {"warm start": json.loads((out / "runs" / "grpo-s0" / "model.json").read_text())["model_path"]}
    for run in sorted((out / "runs").iterdir()):
        policies[f"{run.name}, step {cfg.train.steps}"] = run / "checkpoints" / f"checkpoint-{cfg.train.steps}"
    print("| policy | correct of samples | in the teacher's order |\n|---|---|---|")
    for name, path in policies.items():
        correct, canonical = styles(path, task, items, a.k, a.seed)
        print(f"| {name} | {correct} / {a.k * len(items)} | {canonical / max(correct, 1):.2f} |", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="a paper_table.py output folder on configs/scratch.yaml")
    p.add_argument("--prompts", type=int, default=300)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    main(p.parse_args())
