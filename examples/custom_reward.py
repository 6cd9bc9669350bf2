"""NPO from Python with your own dataset and reward functions, on the embedded tiny model (CPU).

    python examples/custom_reward.py [runs/example-custom-reward]

The dataset is a list of dicts (a `datasets.Dataset` works the same); every column reaches the reward
functions as a keyword argument, as in TRL. `exact_sum` is the verifier: the gate (p_hat < tau) and
the held-out accuracy read it, thresholded at `reward_threshold`. `brevity` only shapes TRL's reward.
"""

import random
import sys

import npo


def exact_sum(completions, answer, **_):
    """1 when the completion is the answer, else 0."""
    return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer)]


def brevity(completions, **_):
    """A small penalty per character beyond the answer's: a second reward, weighted by TRL."""
    return [-0.01 * max(0, len(c.strip()) - 3) for c in completions]


def sums(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pairs = {(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(3 * n)}
    return [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in sorted(pairs)[:n]]


def main(out: str, steps: int = 60, warmup_steps: int = 300, rows: int = 2000, heldout: int = 200) -> dict:
    data = sums(rows + heldout, seed=0)
    args = npo.NPOConfig(
        output_dir=out, max_steps=steps, save_steps=steps // 2, seed=0,
        per_device_train_batch_size=16 * 8, num_generations=8,  # 16 prompts x 8 answers per step
        learning_rate=3e-4, max_completion_length=6, reward_weights=[1.0, 1.0],
        heldout_every=steps // 2, heldout_samples=4,
    )
    trainer = npo.NPOTrainer(
        model=npo.ModelConfig(path="tiny", warmup=npo.WarmupConfig(steps=warmup_steps)),
        reward_funcs=[exact_sum, brevity], verifier="exact_sum", args=args,
        train_dataset=data[:rows], eval_dataset=data[rows:],
        guide=npo.NearFuture(npo.Bootstrap(lookahead=steps // 2), tau=0.6, k=4),
    )
    return trainer.train()


if __name__ == "__main__":  # python examples/custom_reward.py [OUT]
    print(main(sys.argv[1] if len(sys.argv) > 1 else "runs/example-custom-reward"))
