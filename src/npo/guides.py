"""Guides: where NPO's injected trajectories come from, and where they are kept.

- `GuideBank`: per-prompt store of verified-correct trajectories (token ids, text, source checkpoint
  and step, per-token log-probs under the source), saved atomically in the run directory.
- `PolicySource`: a policy that samples up to k completions per prompt (batched) and keeps the first
  verified-correct one. The near-future source is a later checkpoint of the same run; the `self`
  control is the current policy itself (Delta = 0: best-of-k resampling at the same k).
- `Guidance`: one intervention's guide, active for the window [start, end) of optimizer steps.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from npo.evaluate import prompt_ids
from npo.injection import GuideRow
from npo.rundir import atomic_write_json


@dataclass
class Guide:
    token_ids: list[int]
    text: str
    source: str  # checkpoint folder, or "self" for the current policy
    source_step: int
    logps: list[float]  # per-token log-probs under the source, at its sampling temperature

    def row(self) -> GuideRow:
        return GuideRow(self.token_ids, self.text, self.logps)


@dataclass
class GuideBank:
    """item index -> Guide; `tried` remembers prompts the source failed (k tries, none correct)."""

    guides: dict[int, Guide] = field(default_factory=dict)
    tried: set[int] = field(default_factory=set)

    def __contains__(self, index: int) -> bool:
        return index in self.guides or index in self.tried

    def add(self, index: int, guide: Guide | None) -> None:
        self.tried.add(index)
        if guide is not None:
            self.guides[index] = guide
        else:  # a fresh failure supersedes an older guide (the `self` source asks again each time)
            self.guides.pop(index, None)

    def get(self, index: int) -> Guide | None:
        return self.guides.get(index)

    def to_json(self) -> dict:
        return {"guides": {str(i): asdict(g) for i, g in sorted(self.guides.items())},
                "tried": sorted(self.tried)}

    @classmethod
    def from_json(cls, data: dict) -> "GuideBank":
        return cls({int(i): Guide(**g) for i, g in data["guides"].items()}, set(data["tried"]))

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "GuideBank":
        return cls.from_json(json.loads(Path(path).read_text()))


class PolicySource:
    """Samples k completions per prompt from `model` and keeps the first one the verifier accepts."""

    def __init__(self, model, tokenizer, scorer, style: str, *, k: int, temperature: float,
                 max_new_tokens: int, name: str, step: int):
        self.model, self.tokenizer, self.scorer, self.style = model, tokenizer, scorer, style
        self.k, self.temperature, self.max_new_tokens = k, temperature, max_new_tokens
        self.name, self.step = name, step

    def propose(self, items: list, seed: int) -> tuple[list[Guide | None], int]:
        """(one Guide or None per item, completion tokens generated): the first verified-correct of
        k samples. Sampling runs under a forked RNG seeded by `seed`, so guide generation never shifts
        the training RNG stream."""
        samples = sample_completions(self.model, self.tokenizer, items, self.style, k=self.k,
                                     temperature=self.temperature, max_new_tokens=self.max_new_tokens, seed=seed)
        guides: list[Guide | None] = []
        for item, group in zip(items, samples):
            ok = next((x for x in group if self.scorer.reward(x.text, item) == 1.0), None)
            guides.append(ok and Guide(ok.token_ids, ok.text, self.name, self.step, ok.logps))
        return guides, sum(len(x.token_ids) for group in samples for x in group)


@dataclass
class Sample:
    token_ids: list[int]  # up to and including the first EOS
    text: str
    logps: list[float]  # per token, under the sampling policy at its temperature


@torch.no_grad()
def sample_completions(model, tok, items: list, style: str, *, k: int, temperature: float, max_new_tokens: int,
                       seed: int) -> list[list[Sample]]:
    """k samples per item in one batched `generate`, under a forked RNG seeded by `seed`."""
    if not items:
        return []
    ids = prompt_ids(tok, items, style)
    input_ids, mask = left_pad(ids, tok.pad_token_id, model.device)
    width = input_ids.size(1)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True, temperature=temperature,
                                 top_k=0, top_p=1.0, num_return_sequences=k, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id, output_logits=True, return_dict_in_generate=True)
    finally:
        model.train(was_training)
    completions = out.sequences[:, width:]
    logps = torch.stack(out.logits, dim=1).float().div(temperature).log_softmax(-1)
    logps = logps.gather(-1, completions.unsqueeze(-1)).squeeze(-1)  # (N*k, T)
    lengths = completion_lengths(completions, tok.eos_token_id).tolist()
    texts = tok.batch_decode(completions, skip_special_tokens=True)
    rows = [Sample(completions[j, :n].tolist(), texts[j], [round(x, 6) for x in logps[j, :n].tolist()])
            for j, n in enumerate(lengths)]
    return [rows[i * k:(i + 1) * k] for i in range(len(items))]


def left_pad(ids: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    return input_ids, mask


@torch.no_grad()
def token_logps(model, pad: int, prompts: list[list[int]], completions: list[list[int]], temperature: float = 1.0,
                batch_size: int = 256) -> list[list[float]]:
    """Per-token log-probs of each completion after its prompt under `model` (position ids from the
    attention mask, so left padding does not shift positions)."""
    out: list[list[float]] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            seqs = [p + c for p, c in zip(prompts[start:start + batch_size], completions[start:start + batch_size])]
            input_ids, mask = left_pad(seqs, pad, model.device)
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
            logps = logits[:, :-1].float().div(temperature).log_softmax(-1)
            logps = logps.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            for row, c in zip(logps, completions[start:start + batch_size]):
                out.append(row[row.size(0) - len(c):].tolist() if c else [])
    finally:
        model.train(was_training)
    return out


def completion_lengths(completions: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Tokens up to and including the first EOS (all of them when there is none), per row -- the
    same truncation TRL applies to its own completions."""
    is_eos = completions == eos_id
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], -1, dtype=torch.long))
    return torch.where(first >= 0, first + 1, torch.full_like(first, completions.size(1)))


@dataclass
class GuideStats:
    requested: int = 0  # prompts the source was asked for
    found: int = 0  # ... of which it produced a verified-correct trajectory
    injected: int = 0  # group slots replaced (a guide can be injected at several steps)
    samples: int = 0  # completions the source generated
    tokens: int = 0  # completion tokens the source generated
    seconds: float = 0.0


class Guidance:
    """One intervention's guide: a source, its bank, and the window [start, end) where it acts."""

    def __init__(self, source: PolicySource, bank: GuideBank, start: int, end: int, *,
                 seed: int, bank_path: Path | None = None, cache: bool = True):
        self.source, self.bank, self.start, self.end = source, bank, start, end
        self.seed, self.bank_path, self.cache = seed, bank_path, cache
        self.stats = GuideStats()
        self.new: list[tuple[int, Guide | None]] = []  # entries added since the last `drain_new`

    def active(self, step: int) -> bool:
        return self.start <= step < self.end

    def fill(self, indices: list[int], items: list, step: int, salt: int = 0) -> None:
        """Ask the source for every prompt not in the bank (the `self` source asks every time:
        the current policy changes each step)."""
        todo = [(i, it) for i, it in zip(indices, items) if not (self.cache and i in self.bank)]
        todo = list(dict(todo).items())  # one request per prompt
        if not todo:
            return
        t0 = time.perf_counter()
        guides, tokens = self.source.propose([it for _, it in todo], seed=self._seed(step, salt))
        for (i, _), g in zip(todo, guides):
            self.bank.add(i, g)
            self.new.append((i, g))
        self.stats.requested += len(todo)
        self.stats.found += sum(g is not None for g in guides)
        self.stats.samples += len(todo) * self.source.k
        self.stats.tokens += tokens
        self.stats.seconds += time.perf_counter() - t0

    def prefill(self, indices: list[int], items: list, step: int) -> None:
        """Ahead-of-time guides for prompts known before the window (the look-ahead saw them)."""
        self.fill(indices, items, step)
        self.drain_new()
        self.save()

    def lookup(self, indices: list[int]) -> list[GuideRow | None]:
        return [g.row() if (g := self.bank.get(i)) is not None else None for i in indices]

    def drain_new(self) -> list[tuple[int, dict | None]]:
        out = [(i, asdict(g) if g else None) for i, g in self.new]
        self.new = []
        return out

    def merge(self, entries: list[tuple[int, dict | None]]) -> None:
        """Entries found by other processes, so every process holds the same bank."""
        for i, g in entries:
            self.bank.add(i, Guide(**g) if g else None)

    def save(self) -> None:
        if self.bank_path is not None:
            self.bank.save(self.bank_path)

    def _seed(self, step: int, salt: int) -> int:
        return (self.seed * 1_000_003 + step * 101 + salt) % 2**63
