"""TRL's GRPO quickstart with npo: the script a TRL user has, with `npo` instead of `trl` and a `guide=`.

    python examples/trl_quickstart.py [runs/example-trl-quickstart]

What differs from TRL's quickstart (`GRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...),
train_dataset=...)`): `import npo`, `npo.NPOTrainer` / `npo.NPOConfig`, and `guide=`. Everything else is
TRL's: a `datasets.Dataset` of chat prompts with a system message, reward functions with TRL's
signature (every column, `prompts`, `completion_ids`, `trainer_state`), a `TrainerCallback`, then
`save_model` and `evaluate`. Offline, the model is the embedded tiny one saved as a folder with a
Qwen-style chat template (`chat_model`); give a local Instruct model's folder instead.
"""

import sys
from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback

import npo

SYSTEM = "Answer with the number only."


def correct(completions, answer, **kwargs):
    """The verifier: 1 when the assistant's reply is the answer."""
    return [1.0 if c[0]["content"].strip() == a else 0.0 for c, a in zip(completions, answer)]


def curriculum(completions, trainer_state, **kwargs):
    """A second reward that reads TRL's `trainer_state`: brevity, weighed more as training goes on."""
    weight = min(1.0, trainer_state.global_step / 10)
    return [-0.01 * weight * len(c[0]["content"]) for c in completions]


class StepCounter(TrainerCallback):
    def __init__(self):
        self.events = {"on_train_begin": 0, "on_train_end": 0, "on_step_end": 0}

    def on_train_begin(self, args, state, control, **kwargs):
        self.events["on_train_begin"] += 1

    def on_train_end(self, args, state, control, **kwargs):
        self.events["on_train_end"] += 1

    def on_step_end(self, args, state, control, **kwargs):
        self.events["on_step_end"] += 1


def sums(n: int) -> Dataset:
    rows = [(a, b) for a in range(10, 60) for b in range(10, 60)][:n]
    return Dataset.from_list([{"prompt": [{"role": "system", "content": SYSTEM},
                                          {"role": "user", "content": f"{a}+{b}="}], "answer": str(a + b)}
                              for a, b in rows])


def chat_model(folder: Path, warmup_steps: int) -> str:
    """The embedded tiny model as a local folder with a Qwen-style (ChatML) chat template."""
    from npo.config.run import load_config
    from npo.models.load import load_policy, resolve_model_path
    from npo.tasks import build_split

    cfg = load_config(None, [f"model.warmup.steps={warmup_steps}"])
    model, tokenizer = load_policy(resolve_model_path(cfg, build_split(cfg)[1]))
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def main(out: str, steps: int = 40, warmup_steps: int = 300, rows: int = 1000, callbacks=()) -> tuple:
    dataset = sums(rows)
    model = chat_model(Path(out) / "model", warmup_steps)
    counter = StepCounter()
    training_args = npo.NPOConfig(output_dir=str(Path(out) / "run"), max_steps=steps, save_steps=2,
                                  per_device_train_batch_size=8 * 4, num_generations=4, max_completion_length=12,
                                  learning_rate=3e-4, heldout_every=0, heldout_n=20, heldout_samples=0)
    trainer = npo.NPOTrainer(
        model=model,
        reward_funcs=[correct, curriculum],
        args=training_args,
        train_dataset=dataset.select(range(rows - 20)),
        eval_dataset=dataset.select(range(rows - 20, rows)),
        callbacks=[counter, *callbacks],
        guide=npo.NearFuture(npo.Bootstrap(lookahead=2), tau=0.6, k=2),
    )
    summary = trainer.train()
    trainer.save_model(str(Path(out) / "final"))
    return trainer, summary, trainer.evaluate(), counter.events


if __name__ == "__main__":  # python examples/trl_quickstart.py [OUT]
    _, summary, metrics, events = main(sys.argv[1] if len(sys.argv) > 1 else "runs/example-trl-quickstart")
    print(summary, metrics, events, sep="\n")
