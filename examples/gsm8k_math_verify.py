"""GRPO and NPO on a GSM8K-style JSONL file, verified with math-verify, from Python (CPU, tiny model).

    python examples/gsm8k_math_verify.py [runs/example-gsm8k]

Rows are {question, answer} with GSM8K's `#### 72` final answers (examples/data/gsm8k_style.jsonl).
`npo.math_verify_reward` is a TRL reward function on the `answer` column; as npo's verifier it runs
in a guarded worker process with a time limit (a hanging parse scores 0, the run goes on).
"""

import sys
from pathlib import Path

from datasets import Dataset

import npo

DATA = Path(__file__).parent / "data" / "gsm8k_style.jsonl"


def main(out: str, steps: int = 40, warmup_steps: int = 400, heldout: int = 20) -> dict:
    rows = Dataset.from_json(str(DATA))  # columns question, answer
    split = rows.train_test_split(test_size=heldout, seed=0)
    args = npo.NPOConfig(
        output_dir=out, max_steps=steps, save_steps=steps // 2, seed=0,
        per_device_train_batch_size=8 * 8, num_generations=8,
        learning_rate=3e-4, max_completion_length=20, heldout_every=steps // 2, heldout_samples=2,
    )
    trainer = npo.NPOTrainer(
        model=npo.ModelConfig(path="tiny", warmup=npo.WarmupConfig(steps=warmup_steps)),
        reward_funcs=npo.math_verify_reward, args=args,
        train_dataset=split["train"], eval_dataset=split["test"],
        guide=npo.NearFuture(npo.Bootstrap(lookahead=steps // 2)),
    )
    return trainer.train()


if __name__ == "__main__":  # python examples/gsm8k_math_verify.py [OUT]
    print(main(sys.argv[1] if len(sys.argv) > 1 else "runs/example-gsm8k"))
