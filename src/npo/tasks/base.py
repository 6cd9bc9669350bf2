"""Task interface: a task yields items (prompt text, reference answer) and scores completions.

A task spec is a string resolved through a registry (verl-style): `arith`, `rg:NAME`, `jsonl:PATH`,
`parquet:PATH`. Adding a task kind is one `@register("kind")` function; `npo.tasks.build_task`
resolves a spec.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass(frozen=True)
class Item:
    """One prompt of a task. `question` is the raw question; the prompt a model sees is built from
    it by `npo.tasks.prompting` (plain text for the tiny model, the chat template for instruct models)."""

    question: str
    answer: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    image: str | None = None  # an image prompt's image, by reference (npo.tasks.images): never the pixels

    @property
    def key(self) -> str:
        """What makes two items the same question: the text and, for an image prompt, its image."""
        return self.question if self.image is None else f"{self.question}\x00{self.image}"


class Task(Protocol):
    name: str

    def splits(self, train_size: int, eval_size: int, seed: int) -> tuple[list[Item], list[Item]]:
        """Disjoint (train, eval) items: no eval question appears in train."""

    def score(self, answer_text: str, item: Item) -> float:
        """Verifier score in [0, 1] of an extracted answer (may raise or hang: `npo.tasks.verify` guards
        it, in a worker process unless the task says `inline = True`). A task may also define
        `parse_reference(item)`; the guard then parses each item's reference once and calls
        `score(answer_text, item, reference=parsed)`."""


REGISTRY: dict[str, Callable[[str, dict], Task]] = {}


def register(kind: str):
    def deco(fn):
        REGISTRY[kind] = fn
        return fn

    return deco


def draw_items(sample: Callable, n: int, seed: int, unique: bool = False) -> list[Item]:
    """n items of `sample(rng)` drawn from `seed`; `unique`: distinct questions only (fewer than n only
    if the task has fewer: the search stops once draws in a row find nothing new, twice as many as it
    has found, so asking a small task for a million items takes seconds, not hours)."""
    rng, seen, out, misses = random.Random(seed), set(), [], 0
    for _ in range(50 * n):
        it = sample(rng)
        if unique and it.key in seen:
            misses += 1
            if misses > max(1000, 2 * len(out)):
                break
            continue
        misses = 0
        seen.add(it.key)
        out.append(it)
        if len(out) == n:
            break
    return out


class SampledTask:
    """A procedural task: items drawn by `sample(rng)`, a disjoint held-out split, exact match."""

    inline = True  # an exact string match cannot hang: scored in-process (npo.tasks.verify)

    def sample(self, rng: random.Random) -> Item:
        raise NotImplementedError

    def splits(self, train_size: int, eval_size: int, seed: int):
        eval_items = draw_items(self.sample, eval_size, seed, unique=True)
        held_out = {it.key for it in eval_items}
        # The training rows: draws of seed + 1 that are not held-out questions, stopped at train_size (at
        # most twice that many draws, so that removing the held-out questions still leaves train_size).
        rng, train = random.Random(seed + 1), []
        for _ in range(2 * train_size):
            it = self.sample(rng)
            if it.key not in held_out:
                train.append(it)
                if len(train) == train_size:
                    break
        return train, eval_items

    def score(self, answer_text: str, item: Item) -> float:
        return 1.0 if answer_text.strip() == item.answer else 0.0


def held_out_split(items: list[Item], eval_size: int, seed: int) -> tuple[list[Item], list[Item]]:
    """(train, eval): `eval_size` of `items` held out, drawn by `seed`; the training rows in that shuffled
    order, without any question of the held-out ones."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    eval_items = [items[i] for i in order[:eval_size]]
    return disjoint_split(eval_items, [items[i] for i in order[eval_size:]])


def disjoint_split(eval_items: list[Item], train_items: list[Item]) -> tuple[list[Item], list[Item]]:
    """Drop from train every item whose question is an eval question, and duplicates in eval."""
    seen, eval_out = set(), []
    for it in eval_items:
        if it.key not in seen:
            seen.add(it.key)
            eval_out.append(it)
    train_out = [it for it in train_items if it.key not in seen]
    return train_out, eval_out
