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
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor

from npo.tasks.images import open_image
from npo.tasks.prompting import build_prompt


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


@dataclass(frozen=True)
class Sampling:
    """TRL's sampling fields, which guides sample with too (so guide and rollout distributions are one),
    and the chat template's arguments (e.g. Qwen3's `enable_thinking`). Defaults: TRL's."""

    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    generation_kwargs: dict = field(default_factory=dict)  # TRL's: into the HF GenerationConfig / vLLM SamplingParams
    chat_template_kwargs: dict = field(default_factory=dict)

    @classmethod
    def of(cls, fields) -> "Sampling":
        """From a GRPOConfig, or a mapping of its fields (missing ones: TRL's defaults)."""
        get = (lambda k: fields.get(k)) if isinstance(fields, dict) else (lambda k: getattr(fields, k, None))
        return cls(top_k=get("top_k") or 0, top_p=1.0 if get("top_p") is None else get("top_p"),
                   min_p=get("min_p") or 0.0,
                   repetition_penalty=1.0 if get("repetition_penalty") is None else get("repetition_penalty"),
                   generation_kwargs=dict(get("generation_kwargs") or {}),
                   chat_template_kwargs=dict(get("chat_template_kwargs") or {}))


class ExponentialRace(LogitsProcessor):
    """Sampling from softmax(logits / T), truncated by TRL's top-k / top-p / min-p, as greedy decoding:
    each row adds -log E, E ~ Exp(1) drawn from its own generator (on the logits' device), to the
    processed logits, and the argmax is a sample (the Gumbel-max trick). One generator per row makes
    a row's tokens a function of its seed and the logits only. It keeps, per step, the log-prob of
    the token each row chooses under the distribution it samples from (`logps`), so no step's
    vocabulary-sized logits outlive the step."""

    def __init__(self, seeds: list[int], temperature: float, sampling: Sampling | None = None):
        from transformers import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        sampling = sampling or Sampling()
        self.seeds, self.temperature, self.generators = seeds, temperature, None
        self.warpers = ([TopKLogitsWarper(sampling.top_k)] if sampling.top_k else []) + (
            [TopPLogitsWarper(sampling.top_p)] if sampling.top_p < 1.0 else []) + (
            [MinPLogitsWarper(sampling.min_p)] if sampling.min_p else [])
        self.logps: list[torch.Tensor] = []  # per step: (R,) the chosen tokens' log-probs

    def __call__(self, input_ids, scores):
        scaled = scores.float() / self.temperature
        for warp in self.warpers:
            scaled = warp(input_ids, scaled)
        if self.generators is None:
            self.generators = [torch.Generator(device=scaled.device).manual_seed(s) for s in self.seeds]
        races = torch.stack([torch.empty(scaled.size(-1), device=scaled.device).exponential_(generator=g)
                             for g in self.generators])
        raced = scaled - races.clamp_min(torch.finfo(races.dtype).tiny).log()
        self.logps.append(scaled.log_softmax(-1).gather(-1, raced.argmax(-1, keepdim=True)).squeeze(-1))
        return raced


def backbone_and_head(model):
    """(the model without its LM head, the head): hidden states from the first, logits a block of
    positions at a time from the second. A PEFT model: its HF model, with the adapters in place."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone, head = base.base_model, base.get_output_embeddings()
    if backbone is base or head is None:
        raise ValueError(f"{type(base).__name__}: no separate backbone and LM head to score with")
    return backbone, head


@torch.no_grad()
def head_logps(hidden: torch.Tensor, head, targets: torch.Tensor, temperature: float, block: int,
               config=None) -> torch.Tensor:
    """log softmax(head(h) / T)[target] for each row of `hidden` (N, d) and `targets` (N,), `block`
    positions at a time: (block x vocabulary) fp32 tensors are the only vocabulary-sized memory held
    (the log-softmax of what is gathered, as TRL's selective_log_softmax). `config`: the text
    config, for a logit scale or a final soft cap (Gemma) the model applies after its head."""
    from trl.trainer.utils import maybe_gather_lm_head_ctx  # ZeRO-3: the head gathered once, not per block

    scale = getattr(config, "logit_scale", None) or 1.0
    cap = getattr(config, "final_logit_softcapping", None)
    out = torch.empty(hidden.size(0), dtype=torch.float32, device=hidden.device)
    with maybe_gather_lm_head_ctx(head.weight, head.bias):
        for s in range(0, hidden.size(0), block):
            logits = torch.nn.functional.linear(hidden[s:s + block].to(head.weight.dtype), head.weight,
                                                head.bias).float() * scale  # (block, V)
            if cap:
                logits = cap * torch.tanh(logits / cap)
            logits /= temperature
            out[s:s + block] = logits.log_softmax(-1).gather(-1, targets[s:s + block, None]).squeeze(-1)
    return out


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


def _encode_images(processor, items, style: str, chat: dict) -> dict:
    return processor.apply_chat_template(conversations(items, style), add_generation_prompt=True, tokenize=True,
                                         return_dict=True, **chat)


def prompt_ids(tokenizer, items, style: str, chat: dict | None = None) -> list[list[int]]:
    """Token ids of each prompt, exactly as TRL's GRPOTrainer tokenizes them (`chat`: its
    chat_template_kwargs)."""
    if not items:
        return []
    chat = chat or {}
    if items[0].image is not None:
        return _encode_images(tokenizer, items, style, chat)["input_ids"]
    prompts = [build_prompt(it, style) for it in items]
    if style == "chat":
        return [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True, **chat)
                ["input_ids"] for p in prompts]
    return tokenizer(text=prompts)["input_ids"]


def model_inputs(tokenizer, items, style: str, device, completions: list[list[int]] | None = None,
                 chat: dict | None = None) -> dict:
    """Left-padded inputs of the prompts of `items`, each followed by its completion when given:
    input_ids and attention_mask, and for image prompts the images' fields (pixel_values,
    image_grid_thw, mm_token_type_ids)."""
    if items[0].image is None:
        ids, vision = prompt_ids(tokenizer, items, style, chat), {}
    else:
        enc = _encode_images(tokenizer, items, style, chat or {})
        ids = enc["input_ids"]
        vision = {"pixel_values": torch.as_tensor(enc["pixel_values"], device=device),
                  "image_grid_thw": torch.as_tensor(enc["image_grid_thw"], device=device)}
    seqs = [p + c for p, c in zip(ids, completions)] if completions is not None else ids
    input_ids, mask = left_pad(seqs, text_tokenizer(tokenizer).pad_token_id, device)
    if vision:
        vision["mm_token_type_ids"] = (input_ids == tokenizer.image_token_id).long()
    return {"input_ids": input_ids, "attention_mask": mask, **vision}


def completion_lengths(completions: torch.Tensor, eos_ids) -> torch.Tensor:
    """Tokens up to and including the first EOS (any of `eos_ids`; all of them when there is none), per
    row -- the same truncation TRL applies to its own completions."""
    is_eos = torch.isin(completions, torch.as_tensor(eos_ids, device=completions.device).reshape(-1))
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], -1, dtype=torch.long))
    return torch.where(first >= 0, first + 1, torch.full_like(first, completions.size(1)))


@torch.no_grad()
def generate_texts(model, tokenizer, inputs: dict, max_new_tokens: int, samples: int = 0,
                   temperature: float = 1.0, synced_gpus: bool | None = None) -> list[list[str]]:
    """One greedy completion per prompt of `inputs` (`model_inputs`) (samples=0) or `samples` sampled
    ones (the caller seeds). `synced_gpus`: HF's (every process steps until all are done)."""
    tokenizer = text_tokenizer(tokenizer)
    pad = tokenizer.pad_token_id
    rows, width = inputs["input_ids"].shape
    kw = dict(max_new_tokens=max_new_tokens, pad_token_id=pad, synced_gpus=synced_gpus)
    if samples:
        kw.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=samples)
    else:
        kw.update(do_sample=False)
    out = model.generate(**inputs, **kw)
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    k = max(samples, 1)
    return [texts[i * k:(i + 1) * k] for i in range(rows)]


MAX_ROWS = 256  # rows per generate/forward call even when the budget allows more (the numerics of earlier runs)
BUDGET = 2 << 30  # bytes; model.score_memory_mb sets a run's


@dataclass
class Policy:
    """A model to sample from and score under, with its tokenizer and prompt style, TRL's sampling
    fields, and `budget`: the memory (bytes) one block of its sampling or scoring may take beside the
    weights, which sizes every block (rows of a generate call or a forward, positions of the head)."""

    model: object
    tokenizer: object
    style: str
    sampling: Sampling = field(default_factory=Sampling)
    budget: int = BUDGET
    synced_gpus: bool | None = None  # HF generate's: None lets it decide (sharded weights: True)

    def _config(self):
        return self.model.config.get_text_config()

    def _token_bytes(self) -> tuple[int, int]:
        """(bytes of one token's activations in a forward, of its KV cache entry), from the config."""
        c, size = self._config(), self.model.dtype.itemsize if hasattr(self.model, "dtype") else 4
        heads = c.num_attention_heads
        kv = 2 * c.num_hidden_layers * getattr(c, "num_key_value_heads", heads) * (
            getattr(c, "head_dim", None) or c.hidden_size // heads) * size
        return size * (4 * c.hidden_size + 3 * getattr(c, "intermediate_size", 4 * c.hidden_size)), kv

    def sample_rows(self, prompt_tokens: int, max_new_tokens: int) -> int:
        """Rows per generate call: each holds its KV cache and, per step, a few fp32 copies of the logits."""
        _, kv = self._token_bytes()
        per_row = (prompt_tokens + max_new_tokens) * kv + 16 * self._config().vocab_size
        return max(1, min(MAX_ROWS, self.budget // per_row))

    def score_rows(self, tokens: int) -> int:
        """Rows per scoring forward of sequences of `tokens` tokens."""
        return max(1, min(MAX_ROWS, self.budget // (tokens * self._token_bytes()[0])))

    def head_block(self) -> int:
        """Positions per block of the LM head: the logits, an fp32 copy and its log-softmax."""
        return max(1, self.budget // (16 * self._config().vocab_size))

    def eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        tok = text_tokenizer(self.tokenizer).eos_token_id
        return eos + ([tok] if tok is not None and tok not in eos else [])

    @torch.no_grad()
    def sample(self, items: list, *, k: int, temperature: float, max_new_tokens: int,
               seeds: list[int], rows: int | None = None) -> list[list[Sample]]:
        """k samples per item, `rows` at a time (default: what the budget allows for the longest
        prompt); item i's samples draw their randomness from its own seed (`ExponentialRace`), so they
        do not depend on which other items were asked with it (up to float rounding: a batch changes
        logits in the last bits, which can flip a near-tie). The training RNG stream is not touched."""
        flat = [(it, seed, j) for it, seed in zip(items, seeds) for j in range(k)]
        if rows is None and flat:
            ids = prompt_ids(self.tokenizer, items, self.style, self.sampling.chat_template_kwargs)
            rows = self.sample_rows(max(map(len, ids)), max_new_tokens)
        out: list[Sample] = []
        for start in range(0, len(flat), rows or 1):
            out += self._sample_rows(flat[start:start + rows], temperature, max_new_tokens)
        return [out[i * k:(i + 1) * k] for i in range(len(items))]

    def _sample_rows(self, rows, temperature: float, max_new_tokens: int) -> list[Sample]:
        from transformers import GenerationConfig, LogitsProcessorList, RepetitionPenaltyLogitsProcessor

        tok, model, sampling = text_tokenizer(self.tokenizer), self.model, self.sampling
        inputs = model_inputs(self.tokenizer, [it for it, _, _ in rows], self.style, model.device,
                              chat=sampling.chat_template_kwargs)
        width = inputs["input_ids"].size(1)
        race = ExponentialRace([row_seed(seed, j) for _, seed, j in rows], temperature, sampling)
        processors = LogitsProcessorList(([RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty)]
                                          if sampling.repetition_penalty != 1.0 else []) + [race])
        eos = self.eos_ids()
        extra = {k: v for k, v in sampling.generation_kwargs.items() if k not in OWN_GENERATION_KEYS}
        if getattr(self.tokenizer, "image_token_id", None) is not None:  # TRL's: a sampled image token mismatches
            extra["suppress_tokens"] = [self.tokenizer.image_token_id]
        config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                  eos_token_id=eos, **extra)
        with eval_mode(model):
            completions = model.generate(**inputs, generation_config=config, logits_processor=processors,
                                         synced_gpus=self.synced_gpus)[:, width:]  # (R, T)
        logps = torch.stack(race.logps, dim=1) if race.logps else completions.new_zeros(len(rows), 0).float()
        lengths = completion_lengths(completions, eos).tolist()
        texts = tok.batch_decode(completions, skip_special_tokens=True)
        return [Sample(completions[r, :n].tolist(), texts[r], [round(x, 6) for x in logps[r, :n].tolist()])
                for r, n in enumerate(lengths)]

    @torch.no_grad()
    def token_logps(self, items: list, completions: list[list[int]], temperature: float = 1.0,
                    rows: int | None = None) -> list[list[float]]:
        """Per-token log-probs of each completion after its item's prompt (text: position ids from the
        attention mask, so left padding does not shift positions; images: the model's own). `rows` at
        a time (default: what the budget allows for the longest sequence); the backbone's hidden states
        go through the LM head a block of positions at a time (`head_logps`)."""
        if not items:
            return []
        chat = self.sampling.chat_template_kwargs
        if rows is None:
            ids = prompt_ids(self.tokenizer, items, self.style, chat)
            rows = self.score_rows(max(len(p) + len(c) for p, c in zip(ids, completions)))
        backbone, head = backbone_and_head(self.model)
        block, config, out = self.head_block(), self._config(), []
        with eval_mode(self.model):
            for start in range(0, len(items), rows):
                chunk = completions[start:start + rows]
                inputs = model_inputs(self.tokenizer, items[start:start + rows], self.style, self.model.device, chunk,
                                      chat=chat)
                input_ids, width, t = inputs["input_ids"], inputs["input_ids"].size(1), max(map(len, chunk))
                if "pixel_values" not in inputs:
                    inputs["position_ids"] = (inputs["attention_mask"].cumsum(1) - 1).clamp(min=0)
                if t == 0:
                    out += [[] for _ in chunk]
                    continue
                hidden = backbone(**inputs).last_hidden_state[:, width - t - 1:width - 1]  # predicts the last t tokens
                logps = head_logps(hidden.reshape(-1, hidden.size(-1)), head, input_ids[:, width - t:].reshape(-1),
                                   temperature, block, config).view(len(chunk), t)
                out += [row[t - len(c):].tolist() for row, c in zip(logps, chunk)]
        return out


# GenerationConfig fields a guide's sampling sets itself (TRL's generation_kwargs may not override them)
OWN_GENERATION_KEYS = {"do_sample", "max_new_tokens", "max_length", "num_return_sequences", "temperature", "top_k",
                       "top_p", "min_p", "repetition_penalty", "pad_token_id", "eos_token_id", "num_beams"}
