"""Task interface: a task yields items (prompt text, reference answer) and scores completions.

A task spec is a string resolved through a registry (verl-style): `arith`, `rg:NAME`, `jsonl:PATH`,
`parquet:PATH`. Adding a task kind is one `@register("kind")` function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from npo.errors import UserError


@dataclass(frozen=True)
class Item:
    """One prompt of a task. `question` is the raw question; the prompt a model sees is built from
    it by `npo.prompting` (plain text for the tiny model, the chat template for instruct models)."""

    question: str
    answer: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)


class Task(Protocol):
    name: str

    def splits(self, train_size: int, eval_size: int, seed: int) -> tuple[list[Item], list[Item]]:
        """Disjoint (train, eval) items: no eval question appears in train."""

    def score(self, answer_text: str, item: Item) -> float:
        """Verifier score in [0, 1] of an extracted answer (may raise or hang: callers guard it)."""


_REGISTRY: dict[str, Callable[[str, dict], Task]] = {}


def register(kind: str):
    def deco(fn):
        _REGISTRY[kind] = fn
        return fn

    return deco


def build_task(spec: str, options: dict | None = None, **file_options) -> Task:
    """Resolve a task spec; unknown kinds are a UserError naming the spec."""
    from npo.tasks import arith, files, rg  # noqa: F401  (populate the registry)

    kind, _, arg = spec.partition(":")
    if kind not in _REGISTRY:
        known = ", ".join(f"{k}:..." if k != "arith" else k for k in sorted(_REGISTRY))
        raise UserError(f"task.spec: unknown task {spec!r} (known: {known})")
    return _REGISTRY[kind](arg, dict(options or {}), **file_options)


def disjoint_split(eval_items: list[Item], train_items: list[Item]) -> tuple[list[Item], list[Item]]:
    """Drop from train every item whose question is an eval question, and duplicates in eval."""
    seen, eval_out = set(), []
    for it in eval_items:
        if it.question not in seen:
            seen.add(it.question)
            eval_out.append(it)
    train_out = [it for it in train_items if it.question not in seen]
    return train_out, eval_out
