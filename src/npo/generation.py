"""Generation with HF `generate` outside TRL's training step: left padding, eval mode, seeded sampling
with per-token log-probs, and scoring given completions. Everything that samples or scores outside
TRL's own generation (guides, evaluation, `npo signal`) goes through here.

`Policy` bundles a model with its tokenizer and prompt style, so a caller says "sample k answers of
this policy for these items" without repeating how prompts are built and padded.

Image prompts (`Item.image`): the "tokenizer" is the VLM's processor, prompts are built as TRL builds
them (`conversations`, then the processor's chat template, which expands each image into its vision
tokens), and the model gets the images' pixel fields beside the ids (`model_inputs`). Their position
ids are left to the model: Qwen-VL's multimodal rope computes them from the attention mask.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from npo.images import open_image
from npo.prompting import build_prompt


@dataclass
class Sample:
    token_ids: list[int]  # up to and including the first EOS
    text: str
    logps: list[float] | None  # per token under the sampling policy at its temperature; None for fixed traces


def prompt_seeds(base: int, keys: list[int]) -> list[int]:
    """One sampling seed per prompt, from a base seed (the run's, the step's) and a key per prompt (its
    item index): the same prompt gets the same seed whatever else is asked with it."""
    return [(base * 1_000_033 + key) % 2**63 for key in keys]


def row_seed(seed: int, j: int) -> int:
    """The seed of sample j of a prompt whose seed is `seed`."""
    return (seed * 1_000_003 + j) % 2**63


class ExponentialRace(LogitsProcessor):
    """Sampling from softmax(logits / T) as greedy decoding: each row adds -log E, E ~ Exp(1) drawn from
    its own generator, to logits / T, and the argmax is a sample (the Gumbel-max trick). One generator
    per row makes a row's tokens a function of its seed and the logits only."""

    def __init__(self, seeds: list[int], temperature: float):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature = temperature

    def __call__(self, input_ids, scores):
        races = torch.stack([torch.empty(scores.size(-1)).exponential_(generator=g) for g in self.generators])
        return scores.float() / self.temperature - races.clamp_min(torch.finfo(races.dtype).tiny).log().to(scores.device)


@contextlib.contextmanager
def eval_mode(model):
    """The model in eval mode for the block, then back to the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def left_pad(ids: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), left-padded to the longest row: generation continues every row
    from its last column."""
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    return input_ids, mask


def text_tokenizer(tokenizer):
    """The text tokenizer of a tokenizer or of a VLM processor."""
    from transformers import ProcessorMixin

    return tokenizer.tokenizer if isinstance(tokenizer, ProcessorMixin) else tokenizer


def conversations(items, style: str) -> list[list[dict]]:
    """The image prompts of `items` as TRL builds them from a dataset row's prompt and image."""
    from trl.data_utils import prepare_multimodal_messages

    return [prepare_multimodal_messages(build_prompt(it, style), images=[open_image(it.image)]) for it in items]


def _encode_images(processor, items, style: str) -> dict:
    return processor.apply_chat_template(conversations(items, style), add_generation_prompt=True, tokenize=True,
                                         return_dict=True)


def prompt_ids(tokenizer, items, style: str) -> list[list[int]]:
    """Token ids of each prompt, exactly as TRL's GRPOTrainer tokenizes them."""
    if not items:
        return []
    if items[0].image is not None:
        return _encode_images(tokenizer, items, style)["input_ids"]
    prompts = [build_prompt(it, style) for it in items]
    if style == "chat":
        return [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)
                ["input_ids"] for p in prompts]
    return tokenizer(text=prompts)["input_ids"]


def model_inputs(tokenizer, items, style: str, device, completions: list[list[int]] | None = None) -> dict:
    """Left-padded inputs of the prompts of `items`, each followed by its completion when given:
    input_ids and attention_mask, and for image prompts the images' fields (pixel_values,
    image_grid_thw, mm_token_type_ids)."""
    if items[0].image is None:
        ids, vision = prompt_ids(tokenizer, items, style), {}
    else:
        enc = _encode_images(tokenizer, items, style)
        ids = enc["input_ids"]
        vision = {"pixel_values": torch.as_tensor(enc["pixel_values"], device=device),
                  "image_grid_thw": torch.as_tensor(enc["image_grid_thw"], device=device)}
    seqs = [p + c for p, c in zip(ids, completions)] if completions is not None else ids
    input_ids, mask = left_pad(seqs, text_tokenizer(tokenizer).pad_token_id, device)
    if vision:
        vision["mm_token_type_ids"] = (input_ids == tokenizer.image_token_id).long()
    return {"input_ids": input_ids, "attention_mask": mask, **vision}


def completion_lengths(completions: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Tokens up to and including the first EOS (all of them when there is none), per row -- the
    same truncation TRL applies to its own completions."""
    is_eos = completions == eos_id
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], -1, dtype=torch.long))
    return torch.where(first >= 0, first + 1, torch.full_like(first, completions.size(1)))


@torch.no_grad()
def generate_texts(model, tokenizer, inputs: dict, max_new_tokens: int, samples: int = 0,
                   temperature: float = 1.0) -> list[list[str]]:
    """One greedy completion per prompt of `inputs` (`model_inputs`) (samples=0) or `samples` sampled
    ones (the caller seeds)."""
    tokenizer = text_tokenizer(tokenizer)
    pad = tokenizer.pad_token_id
    rows, width = inputs["input_ids"].shape
    kw = dict(max_new_tokens=max_new_tokens, pad_token_id=pad)
    if samples:
        kw.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=samples)
    else:
        kw.update(do_sample=False)
    out = model.generate(**inputs, **kw)
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    k = max(samples, 1)
    return [texts[i * k:(i + 1) * k] for i in range(rows)]


@dataclass
class Policy:
    """A model to sample from and score under, with its tokenizer and prompt style."""

    model: object
    tokenizer: object
    style: str

    @torch.no_grad()
    def sample(self, items: list, *, k: int, temperature: float, max_new_tokens: int,
               seeds: list[int], batch_size: int = 256) -> list[list[Sample]]:
        """k samples per item, batched; item i's samples draw their randomness from its own seed
        (`ExponentialRace`), so they do not depend on which other items were asked with it (up to float
        rounding: a batch changes logits in the last bits, which can flip a near-tie). The training RNG
        stream is not touched."""
        rows = [(it, seed, j) for it, seed in zip(items, seeds) for j in range(k)]
        out: list[Sample] = []
        for start in range(0, len(rows), batch_size):
            out += self._sample_rows(rows[start:start + batch_size], temperature, max_new_tokens)
        return [out[i * k:(i + 1) * k] for i in range(len(items))]

    def _sample_rows(self, rows, temperature: float, max_new_tokens: int) -> list[Sample]:
        tok, model = text_tokenizer(self.tokenizer), self.model
        inputs = model_inputs(self.tokenizer, [it for it, _, _ in rows], self.style, model.device)
        width = inputs["input_ids"].size(1)
        race = ExponentialRace([row_seed(seed, j) for _, seed, j in rows], temperature)
        with eval_mode(model):
            out = model.generate(**inputs, do_sample=False, logits_processor=[race],
                                 max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, output_logits=True,
                                 return_dict_in_generate=True)
        completions = out.sequences[:, width:]  # (R, T)
        logps = torch.stack(out.logits, dim=1).float().div(temperature).log_softmax(-1)
        logps = logps.gather(-1, completions.unsqueeze(-1)).squeeze(-1)  # (R, T)
        lengths = completion_lengths(completions, tok.eos_token_id).tolist()
        texts = tok.batch_decode(completions, skip_special_tokens=True)
        return [Sample(completions[r, :n].tolist(), texts[r], [round(x, 6) for x in logps[r, :n].tolist()])
                for r, n in enumerate(lengths)]

    @torch.no_grad()
    def token_logps(self, items: list, completions: list[list[int]], temperature: float = 1.0,
                    batch_size: int = 256) -> list[list[float]]:
        """Per-token log-probs of each completion after its item's prompt (text: position ids from the
        attention mask, so left padding does not shift positions; images: the model's own)."""
        out: list[list[float]] = []
        model = self.model
        with eval_mode(model):
            for start in range(0, len(items), batch_size):
                chunk = completions[start:start + batch_size]
                inputs = model_inputs(self.tokenizer, items[start:start + batch_size], self.style, model.device, chunk)
                input_ids = inputs["input_ids"]
                if "pixel_values" not in inputs:
                    inputs["position_ids"] = (inputs["attention_mask"].cumsum(1) - 1).clamp(min=0)
                logits = model(**inputs).logits
                logps = logits[:, :-1].float().div(temperature).log_softmax(-1)
                logps = logps.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, width - 1)
                out += [row[row.size(0) - len(c):].tolist() if c else [] for row, c in zip(logps, chunk)]
        return out
