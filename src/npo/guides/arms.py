"""npo.arms: one guided window, several guide sources at once, each with its own controls. [ours]

Each gated prompt's guide is asked from one arm, drawn by a coin of the prompt (`npo.algo.controls.draw_arm`),
and within each arm the controls are drawn as in a one-source window (`Guidance.assign`): an arm is compared
with its own controls, because a source finds guides for prompts of its own difficulty. Each arm is a
`Guidance` of its own (its source, its bank file, its costs); `ArmedGuidance` routes every prompt to its
arm and sums what the arms cost, so that the run's books count every arm.
"""

from __future__ import annotations

from dataclasses import asdict, fields

from npo.algo.controls import Assignment, draw_arm
from npo.guides.bank import Guidance, GuideStats


class ArmedGuidance(Guidance):
    """The window's guidance from `arms` (their labels unique, the first the run's own source)."""

    def __init__(self, arms: list[Guidance], *, controls: float, index: int):  # no Guidance.__init__: no bank
        first = arms[0]
        self.arms = {g.label: g for g in arms}
        self.labels = list(self.arms)
        self.source, self.scorer, self.start, self.end = first.source, first.scorer, first.start, first.end
        self.seed, self.share, self.slots, self.bank_path, self.closed = first.seed, first.share, first.slots, None, False
        self.controls, self.index, self.label = controls, index, "arms"
        self.assigned: dict[int, Assignment] = {}
        self._injected = 0

    @property
    def stats(self) -> GuideStats:
        """What every arm cost, summed (the rows injected are counted here, across arms)."""
        total = {f.name: sum(getattr(g.stats, f.name) for g in self.arms.values()) for f in fields(GuideStats)}
        return GuideStats(**{**total, "injected": self._injected})

    def book_injected(self, rows: int) -> None:
        self._injected += rows

    def arm_of(self, key: str) -> str:
        return draw_arm(self.labels, self.seed, self.index, key)

    def guides_of(self, index: int, key: str) -> list:
        return self.arms[self.arm_of(key)].bank.get(index)

    def fill(self, indices: list[int], items: list, step: int, live=None) -> int:
        """Each prompt asked of its own arm (every process passes the same prompts to every arm)."""
        drawn, asked = [self.arm_of(it.key) for it in items], 0
        for label, arm in self.arms.items():
            mine = [(i, it) for i, it, d in zip(indices, items, drawn) if d == label]
            asked += arm.fill([i for i, _ in mine], [it for _, it in mine], step, live)
        return asked

    def save(self, books: dict | None = None) -> None:
        for arm in self.arms.values():
            if not arm.closed:  # a bank made ahead was saved when it was made
                arm.save(books)

    def snapshot(self) -> dict:
        return {"arms": {label: arm.snapshot() for label, arm in self.arms.items()}, "injected": self._injected,
                "assigned": [asdict(a) for a in self.assigned.values()]}

    def restore(self, snapshot: dict) -> None:
        for label, arm in self.arms.items():
            arm.restore(snapshot["arms"][label])
        self._injected = snapshot["injected"]
        self.assigned = {a["index"]: Assignment(**a) for a in snapshot["assigned"]}
