"""Held-out evaluation: greedy accuracy and mean@K at a temperature, shared by `npo eval` and the
periodic evaluation during training. It runs under a forked RNG seeded by `eval.seed`, so it
never perturbs the training RNG (a run with and without evaluation trains identically).

`EvalPlan.score` scores a share of the items (`npo.models.share.Share`: process p of P takes items p, p + P,
..., every share padded to one length, so that every process calls `generate` as often), so a
multi-process run splits evaluation; `summarize` turns everyone's per-item scores into the record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from npo.config.trl_args import eval_max_new_tokens
from npo.models.generation import eval_mode, generate_texts, model_inputs
from npo.models.share import ALONE, Share
from npo.tasks.prompting import answer_for_scoring, build_prompt


@dataclass
class EvalPlan:
    tokenizer: object
    items: list
    scorer: object
    style: str
    samples: int = 0  # K sampled answers per item for mean@K (0: greedy only)
    temperature: float = 1.0
    max_new_tokens: int = 8
    batch_size: int = 256
    seed: int = 999
    chat: dict = field(default_factory=dict)  # TRL's chat_template_kwargs: prompts built as training builds them

    def score(self, model, share: Share = ALONE, synced_gpus: bool | None = None, progress=None,
              records: list | None = None) -> tuple[list[float], list[float]]:
        """(greedy reward, mean reward of K samples) per item of this process's share (its stand-ins
        generate, and are neither verified nor returned). `synced_gpus`: HF generate's; `progress(n)`:
        called after each batch of n items; `records`: gets one dict per item (`npo eval --dump`)."""
        index = share.indices(len(self.items))
        items, real, greedy, sampled = [self.items[max(i, 0)] for i in index], sum(i >= 0 for i in index), [], []
        with eval_mode(model), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for start in range(0, len(items), self.batch_size):
                chunk = items[start:start + self.batch_size]
                keep = chunk[:max(0, real - start)]  # the stand-ins come last
                inputs = model_inputs(self.tokenizer, chunk, self.style, model.device, chat=self.chat)
                firsts = [texts[0] for texts in generate_texts(model, self.tokenizer, inputs, self.max_new_tokens,
                                                               synced_gpus=synced_gpus)]
                greedy += self.scorer.rewards(firsts[:len(keep)], keep)  # one batch, as TRL scores
                outs = [[] for _ in chunk]
                if self.samples:
                    outs = generate_texts(model, self.tokenizer, inputs, self.max_new_tokens, self.samples,
                                          self.temperature, synced_gpus=synced_gpus)
                    flat = self.scorer.rewards([t for texts in outs[:len(keep)] for t in texts],
                                               [it for it in keep for _ in range(self.samples)])
                    sampled += [sum(flat[j * self.samples:(j + 1) * self.samples]) / self.samples
                                for j in range(len(keep))]
                if records is not None:
                    records += [self.record(it, first, texts) for it, first, texts in zip(keep, firsts, outs)]
                if progress is not None:
                    progress(len(keep))
        return greedy, sampled

    def record(self, item, greedy: str, samples: list[str]) -> dict:
        """One item as `npo eval --dump` writes it: what the model saw and wrote, and how it was scored."""
        def scored(text):
            return {"completion": text, "extracted": answer_for_scoring(text, self.style, self.scorer.task),
                    "reward": self.scorer.reward(text, item, count=False)}

        return {"question": item.question, "prompt": build_prompt(item, self.style), "reference": item.answer,
                **({"image": item.image} if item.image is not None else {}),
                "greedy": scored(greedy), "samples": [scored(t) for t in samples]}

    def summarize(self, greedy: list[float], sampled: list[float]) -> dict:
        """{'accuracy': greedy, 'mean_at_k': ..., 'k', 'n', 'stderr'}: binary rewards, threshold applied."""
        n = len(greedy)
        acc = sum(greedy) / n
        result = {"accuracy": acc, "n": n, "stderr": math.sqrt(acc * (1 - acc) / n)}
        if self.samples:
            m = sum(sampled) / n
            result.update(mean_at_k=m, k=self.samples, temperature=self.temperature,
                          stderr_mean_at_k=math.sqrt(m * (1 - m) / (n * self.samples)))
        return result


def eval_plan(cfg, tokenizer, scorer, style: str, eval_items: list) -> EvalPlan:
    """The evaluation a run's config (`cfg`: an npo.config.run.RunConfig) asks for, on its held-out items."""
    e = cfg.eval
    return EvalPlan(tokenizer, eval_items[:e.n], scorer, style, samples=e.samples, temperature=e.temperature,
                    max_new_tokens=eval_max_new_tokens(cfg), batch_size=e.batch_size, seed=e.seed,
                    chat=dict(cfg.resolved_grpo.get("chat_template_kwargs") or {}))
