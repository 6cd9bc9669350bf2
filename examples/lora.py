"""NPO with LoRA adapters (TRL's peft_config) on the embedded tiny model, from Python (CPU).

    python examples/lora.py [runs/example-lora]

The base model is loaded once and frozen; the adapters are what trains, what every checkpoint holds,
what a rollback puts back, and -- with the look-ahead's adapters in the live model -- what writes
the near-future guides. `npo eval runs/example-lora` loads the adapters onto their base model.
"""

import sys

from peft import LoraConfig

import npo


def main(out: str, steps: int = 40, lookahead: int = 20, learning_rate: float = 2e-3) -> dict:
    args = npo.NPOConfig(
        output_dir=out, max_steps=steps, save_steps=lookahead // 2, seed=0,
        per_device_train_batch_size=16 * 8, num_generations=8, learning_rate=learning_rate,
        max_completion_length=6, heldout_every=lookahead, heldout_n=200, heldout_samples=0,
    )
    trainer = npo.NPOTrainer(
        model="tiny",  # the warm-started embedded default (built and cached on first use)
        task=npo.TaskConfig(spec="arith", options={"terms": 2, "digits": 2, "ops": "+-"}, eval_size=500),
        args=args,
        peft_config=LoraConfig(r=4, lora_alpha=16, target_modules="all-linear"),
        guide=npo.NearFuture(npo.Bootstrap(lookahead=lookahead), k=2),
    )
    return trainer.train()


if __name__ == "__main__":  # python examples/lora.py [OUT]
    print(main(sys.argv[1] if len(sys.argv) > 1 else "runs/example-lora"))
