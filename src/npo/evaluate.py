"""Held-out evaluation: greedy accuracy and mean@K at a temperature, shared by `npo eval` and the
periodic evaluation during training. It runs under a forked RNG seeded by `eval.seed`, so it
never perturbs the training RNG (a run with and without evaluation trains identically)."""

from __future__ import annotations

import math

import torch

from npo.prompting import build_prompt


def prompt_ids(tokenizer, items, style: str) -> list[list[int]]:
    """Token ids of each prompt, exactly as TRL's GRPOTrainer tokenizes them."""
    prompts = [build_prompt(it, style) for it in items]
    if style == "chat":
        return [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)
                ["input_ids"] for p in prompts]
    return tokenizer(text=prompts)["input_ids"]


@torch.no_grad()
def generate_texts(model, tokenizer, ids: list[list[int]], max_new_tokens: int, samples: int = 0,
                   temperature: float = 1.0) -> list[list[str]]:
    """One greedy completion per prompt (samples=0) or `samples` sampled ones."""
    pad = tokenizer.pad_token_id
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=model.device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=model.device)
    kw = dict(max_new_tokens=max_new_tokens, pad_token_id=pad)
    if samples:
        kw.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=samples)
    else:
        kw.update(do_sample=False)
    out = model.generate(input_ids=input_ids, attention_mask=mask, **kw)
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    k = max(samples, 1)
    return [texts[i * k:(i + 1) * k] for i in range(len(ids))]


def evaluate(model, tokenizer, items, scorer, style: str, *, samples: int = 0, temperature: float = 1.0,
             max_new_tokens: int = 8, batch_size: int = 256, seed: int = 999) -> dict:
    """{'accuracy': greedy, 'mean_at_k': ..., 'k', 'n', 'stderr'}: binary rewards, threshold applied."""
    was_training = model.training
    model.eval()
    greedy, sampled = [], []
    try:
        with torch.random.fork_rng(devices=[]):
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
    finally:
        model.train(was_training)
    n = len(greedy)
    acc = sum(greedy) / n
    result = {"accuracy": acc, "n": n, "stderr": math.sqrt(acc * (1 - acc) / n)}
    if samples:
        m = sum(sampled) / n
        result.update(mean_at_k=m, k=samples, temperature=temperature,
                      stderr_mean_at_k=math.sqrt(m * (1 - m) / (n * samples)))
    return result
