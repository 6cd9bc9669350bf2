"""The replay buffer of ExGRPO (source `replay`): the run's own verified successes, as plain data.

- Collection (`observe`): after each training generation, every on-policy group with 0 < correct < n
  (ExGRPO's `experience_lbound=0`, `experience_rbound=n-1`: all-wrong groups have nothing to keep,
  all-correct ones nothing to learn) hands in its correct samples: text, token ids, the per-token
  log-probs of the policy that sampled them (the behaviour policy, at collection), the step and the
  mean token entropy. Every group updates its question's latest accuracy acc(q) = k / n.
- Retirement: a question whose latest group is all correct leaves the buffer (`retire_solved`).
- Question selection (`draw`): without replacement, weighted by exp(-(acc - 0.5)^2 / (2 sigma^2))
  (`prefer: medium`, medium difficulty first, ExGRPO's Gaussian bucket weighting) or uniformly.
- Trajectory selection (`select`): the stored success with the lowest mean entropy (ExGRPO's
  `exp_metric=ent`, `exp_select_mode=argmin`), the latest, or one at random.

The buffer is identical on every process (the trainer gathers what it collects) and travels with each
checkpoint (`to_json`): a rollback or a resume restores it as it was at that step.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field


@dataclass
class Entry:
    """One stored success."""

    token_ids: list[int]
    text: str
    logps: list[float]  # per token, under the behaviour policy when it was sampled
    step: int
    entropy: float  # mean token entropy of the behaviour policy along it


@dataclass
class ReplayBuffer:
    prefer: str = "medium"
    sigma: float = 0.2
    select: str = "lowest_entropy"
    retire_solved: bool = True
    per_question: int = 4
    entries: dict[int, list[Entry]] = field(default_factory=dict)  # question (item index) -> successes
    acc: dict[int, float] = field(default_factory=dict)  # question -> latest on-policy group accuracy

    @classmethod
    def from_config(cls, replay) -> "ReplayBuffer":
        """`replay`: npo.config.run.ReplayConfig."""
        return cls(replay.prefer, replay.sigma, replay.select, replay.retire_solved, replay.per_question)

    def __len__(self) -> int:
        return len(self.entries)

    def observe(self, index: int, correct: int, n: int, successes: list[Entry]) -> None:
        """One on-policy group of question `index`: `correct` of its `n` samples verified correct,
        `successes` the ones to keep (empty when the group is not collected)."""
        self.acc[index] = correct / n
        if correct == n and self.retire_solved:
            self.entries.pop(index, None)
            return
        if 0 < correct < n and successes:
            new = {e.text for e in successes}  # a text seen again is kept once, as its newest sample
            kept = [e for e in self.entries.get(index, []) if e.text not in new]
            kept += list({e.text: e for e in successes}.values())
            self.entries[index] = kept[-self.per_question:]

    def pick(self, index: int, m: int, rng: random.Random) -> list[Entry]:
        """Up to m stored successes of a question, by the `select` rule."""
        stored = self.entries.get(index, [])
        if self.select == "lowest_entropy":
            order = sorted(stored, key=lambda e: e.entropy)
        elif self.select == "latest":
            order = sorted(stored, key=lambda e: -e.step)
        else:
            order = rng.sample(stored, len(stored))
        return order[:m]

    def weight(self, index: int) -> float:
        if self.prefer == "uniform":
            return 1.0
        return math.exp(-(self.acc.get(index, 0.0) - 0.5) ** 2 / (2 * self.sigma ** 2))

    def draw(self, count: int, rng: random.Random, exclude: set[int] = frozenset()) -> list[int]:
        """Up to `count` distinct questions with stored successes (weighted sampling without replacement:
        each question's key is u^(1 / weight), the largest keys win)."""
        pool = sorted(i for i in self.entries if i not in exclude)
        keys = [(rng.random() ** (1.0 / max(self.weight(i), 1e-300)), i) for i in pool]
        return [i for _, i in sorted(keys, reverse=True)[:count]]

    def to_json(self) -> dict:
        return {"entries": {str(i): [asdict(e) for e in es] for i, es in sorted(self.entries.items())},
                "acc": {str(i): a for i, a in sorted(self.acc.items())}}

    def load_json(self, data: dict | None) -> None:
        """The state saved with a checkpoint (None: empty, as at the start of a run)."""
        data = data or {}
        self.entries = {int(i): [Entry(**e) for e in es] for i, es in data.get("entries", {}).items()}
        self.acc = {int(i): a for i, a in data.get("acc", {}).items()}


def question_index(items: list) -> dict[str, int]:
    """question -> the first index of an item asking it (a procedural split may repeat a question): the
    buffer's key, so that a question's successes are found whichever of its copies was drawn."""
    out: dict[str, int] = {}
    for i, it in enumerate(items):
        out.setdefault(it.key, i)
    return out


def solve_rate(rewards) -> float:
    """A step's on-policy solve rate: its mean verified reward (ExGRPO's batch solve rate)."""
    return float(rewards.float().mean()) if rewards.numel() else 0.0


def replayed_groups(buffer: ReplayBuffer, groups: int, share: float, rng: random.Random,
                    exclude: set[int]) -> dict[int, int]:
    """ExGRPO's batch share: group position -> the buffer question that replaces its prompt, for
    round(share * groups) positions drawn at random (fewer when the buffer has fewer questions not
    already in the batch, `exclude`)."""
    picked = sorted(rng.sample(range(groups), round(share * groups)))
    return dict(zip(picked, buffer.draw(len(picked), rng, exclude)))


def collection_plan(on_policy: list[list[float]], questions: list[int], n: int, kept: int, lo: int, rows: int,
                    overwritten: set[int]) -> list[tuple[int, int, int, int]]:
    """What a process hands the buffer from one batch, as (group, question, correct, local row): per
    group of G = `kept` on-policy rewards, its correct rows held by this process (global rows
    [lo, lo + rows)) and not overwritten by a guide when 0 < correct < G, then the group's own record
    with row -1 (its accuracy, and where its successes end)."""
    plan = []
    for g, (rewards, q) in enumerate(zip(on_policy, questions)):
        correct = int(sum(rewards))
        if 0 < correct < kept:
            plan += [(g, q, correct, r - lo) for j, ok in enumerate(rewards)
                     if ok == 1.0 and lo <= (r := g * n + j) < lo + rows and r - lo not in overwritten]
        plan.append((g, q, correct, -1))
    return plan
