"""Held-out evaluation: greedy accuracy and mean@K at a temperature, shared by `npo eval` and the
periodic evaluation during training. It runs under a forked RNG seeded by `eval.seed`, so it
never perturbs the training RNG (a run with and without evaluation trains identically)."""

from __future__ import annotations

import math

import torch

from npo.generation import eval_mode, generate_texts, prompt_ids


def evaluate(model, tokenizer, items, scorer, style: str, *, samples: int = 0, temperature: float = 1.0,
             max_new_tokens: int = 8, batch_size: int = 256, seed: int = 999) -> dict:
    """{'accuracy': greedy, 'mean_at_k': ..., 'k', 'n', 'stderr'}: binary rewards, threshold applied."""
    greedy, sampled = [], []
    with eval_mode(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            ids = prompt_ids(tokenizer, chunk, style)
            for it, (text,) in zip(chunk, generate_texts(model, tokenizer, ids, max_new_tokens)):
                greedy.append(scorer.reward(text, it))
            if samples:
                outs = generate_texts(model, tokenizer, ids, max_new_tokens, samples, temperature)
                for it, texts in zip(chunk, outs):
                    sampled.append(sum(scorer.reward(t, it) for t in texts) / samples)
    n = len(greedy)
    acc = sum(greedy) / n
    result = {"accuracy": acc, "n": n, "stderr": math.sqrt(acc * (1 - acc) / n)}
    if samples:
        m = sum(sampled) / n
        result.update(mean_at_k=m, k=samples, temperature=temperature,
                      stderr_mean_at_k=math.sqrt(m * (1 - m) / (n * samples)))
    return result
