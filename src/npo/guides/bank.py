"""The guide bank and an intervention's guidance.

- `GuideBank`: per-prompt store of verified-correct trajectories, up to M (`npo.slots`) per prompt
  (`npo.algo.injection.Trajectory`: token ids,
  text, source and step, per-token log-probs under the source), saved atomically in the run folder
  with what making it cost; a bank made ahead and saved is reloaded, never remade, by a resume.
- `Guidance`: one intervention's guide source, its bank, and the window [start, end) of optimizer
  steps in which the trainer injects from it (the whole run for `inject_when: always`). It asks the
  source for the prompts it lacks, ahead of time (`prefill`, then the bank is closed) or as gated
  prompts come (`fill`), and counts what that cost. Every process asks for the same prompts (the trainer
  gathers them first) and each prompt is sampled under its own seed, so every process holds the same
  bank whatever the process count. With `npo.controls`, it also assigns each gated prompt that has a
  guide to the treatment or to the controls, once per window (`assign`, `npo.algo.controls`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from npo.algo.controls import Assignment, is_control
from npo.algo.injection import Trajectory
from npo.guides.sources import GuideSource, propose
from npo.models.generation import Policy, prompt_seeds
from npo.models.share import ALONE, Share
from npo.rundir.layout import atomic_write_json


@dataclass
class GuideBank:
    """item index -> its guides (up to M); `tried` remembers prompts the source was asked for."""

    guides: dict[int, list[Trajectory]] = field(default_factory=dict)
    tried: set[int] = field(default_factory=set)

    def __contains__(self, index: int) -> bool:
        return index in self.guides or index in self.tried

    def add(self, index: int, guides: list[Trajectory]) -> None:
        self.tried.add(index)
        if guides:
            self.guides[index] = list(guides)
        else:  # a fresh failure supersedes older guides (the `self` source asks again each time)
            self.guides.pop(index, None)

    def get(self, index: int) -> list[Trajectory]:
        return self.guides.get(index, [])

    def to_json(self) -> dict:
        return {"guides": {str(i): [asdict(g) for g in gs] for i, gs in sorted(self.guides.items())},
                "tried": sorted(self.tried)}

    @classmethod
    def from_json(cls, data: dict) -> "GuideBank":
        return cls({int(i): [Trajectory(**g) for g in gs] for i, gs in data["guides"].items()}, set(data["tried"]))

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "GuideBank":
        return cls.from_json(json.loads(Path(path).read_text()))


@dataclass
class GuideStats:
    requested: int = 0  # prompts the source was asked for
    found: int = 0  # ... of which it produced a verified-correct trajectory
    injected: int = 0  # group rows overwritten with a guide (a guide can be injected at several steps)
    samples: int = 0  # completions the source generated
    tokens: int = 0  # completion tokens the source generated
    seconds: float = 0.0


class Guidance:
    """One intervention's guide: a source, the verifier, its bank, and the window [start, end)."""

    def __init__(self, source: GuideSource, scorer, bank: GuideBank, start: int, end: int, *, seed: int,
                 bank_path: Path | None = None, slots: int = 1, share: Share = ALONE, controls: float = 0.0,
                 index: int = 0, label: str | None = None):
        self.source, self.scorer, self.bank, self.start, self.end = source, scorer, bank, start, end
        self.seed, self.bank_path, self.slots = seed, bank_path, slots
        self.share = share  # the processes, which split the verification of what the source proposes
        self.closed = False  # a bank made ahead is complete: its source (a past policy) is never asked again
        self.stats = GuideStats()
        self.controls, self.index = controls, index  # npo.controls, and the intervention its coin is drawn for
        self.label = label or source.kind  # the arm its prompts' records name (npo.arms: the arm's spec)
        self.labels = [self.label]  # the window's arms (npo.guides.arms.ArmedGuidance: several)
        self.assigned: dict[int, Assignment] = {}  # prompt -> its arm, from its first gated step with a guide

    def given(self, indices: list[int], keys: list[str], p_hats: list[float], step: int) -> tuple[list, int]:
        """The guides each gated prompt gets (`indices`, their items' `keys`, their groups' p_hat at
        `step`), and how many of the prompts that have one are controls and get none (npo.controls)."""
        out, controls = [], 0
        for index, key, p in zip(indices, keys, p_hats):
            found = self.guides_of(index, key)
            if found and not self.assign(index, key, p, step):
                found, controls = [], controls + 1  # a control keeps its on-policy group
            out.append(found)
        return out, controls

    def guides_of(self, index: int, key: str) -> list[Trajectory]:
        return self.bank.get(index)

    def arm_of(self, key: str) -> str:
        """The arm a prompt's guide comes from (npo.guides.arms.ArmedGuidance draws one per prompt)."""
        return self.label

    def assign(self, index: int, key: str, p_hat: float, step: int) -> bool:
        """Whether the gated prompt `index` (training item key `key`), which has a guide, gets it: False
        for a control. A prompt keeps its first assignment (and p_hat) for the whole window."""
        if self.controls == 0:
            return True
        if index not in self.assigned:
            treated = not is_control(self.controls, self.seed, self.index, key)
            self.assigned[index] = Assignment(index, self.arm_of(key), treated, p_hat, step)
        return self.assigned[index].treated

    def book_injected(self, rows: int) -> None:
        """Group rows overwritten with this window's guides (a guide can be injected at several steps)."""
        self.stats.injected += rows

    def active(self, step: int) -> bool:
        return self.start <= step < self.end

    def fill(self, indices: list[int], items: list, step: int, live: Policy | None = None) -> int:
        """Ask the source for every prompt not in the bank (a source that does not cache, `self`, is
        asked every time: the current policy changes each step). Returns how many prompts were asked.
        Collective when the source samples the live policy: every process passes the same prompts."""
        todo = [(i, it) for i, it in zip(indices, items) if not (self.source.caches and i in self.bank)]
        todo = list(dict(todo).items())  # one request per prompt
        if not todo or self.closed:
            return 0
        t0 = time.perf_counter()
        seeds = prompt_seeds(self.seed * 1_000_003 + step, [i for i, _ in todo])
        made = propose(self.source, [it for _, it in todo], seeds, self.scorer, live, m=self.slots, share=self.share)
        for (i, _), g in zip(todo, made.guides):
            self.bank.add(i, g)
        self.stats.requested += len(todo)
        self.stats.found += sum(bool(g) for g in made.guides)
        self.stats.samples += made.samples
        self.stats.tokens += made.tokens
        self.stats.seconds += time.perf_counter() - t0
        return len(todo)

    def prefill(self, indices: list[int], items: list, step: int, books=None) -> None:
        """Ahead-of-time guides for prompts known before the window, then the bank is closed: its
        source is the policy at the end of a look-ahead, which the rollback is about to replace.
        `books` (the main process): saves the bank with `books()`, the run's books once it was made
        (`npo.rundir.journal`: its verifications count)."""
        self.fill(indices, items, step)
        self.closed = True
        if books is not None:
            self.save(books())

    def lookup(self, indices: list[int]) -> list[list[Trajectory]]:
        return [self.bank.get(i) for i in indices]

    def snapshot(self) -> dict:
        """What a checkpoint inside the window keeps of it: its stats, and the bank of a source that
        samples each prompt once (the `checkpoint:` and `teacher_model:` kinds asked on demand), which
        a resume cannot remake under the seeds of the steps that first asked."""
        keep = self.source.caches and self.source.generates and not self.closed
        out = {"stats": asdict(self.stats), "bank": self.bank.to_json() if keep else None}
        if self.controls:  # the assignments so far: a resume inside the window keeps them, p_hat included
            out["assigned"] = [asdict(a) for a in self.assigned.values()]
        return out

    def restore(self, snapshot: dict) -> None:
        self.stats = GuideStats(**snapshot["stats"])
        if snapshot.get("bank") is not None:
            self.bank = GuideBank.from_json(snapshot["bank"])
        self.assigned = {a["index"]: Assignment(**a) for a in snapshot.get("assigned", [])}

    def save(self, books: dict | None = None) -> None:
        """The bank, what making it cost, whether it is complete (made ahead), atomically."""
        if self.bank_path is not None:
            atomic_write_json(self.bank_path, {**self.bank.to_json(), "stats": asdict(self.stats),
                                               "closed": self.closed, "books": books})

    def load_saved(self) -> bool:
        """Take the bank a killed run saved complete (made ahead), with its stats: it is never made
        twice. Returns whether there was one."""
        if self.bank_path is None or not Path(self.bank_path).is_file():
            return False
        data = json.loads(Path(self.bank_path).read_text())
        if not data.get("closed"):
            return False  # an on-demand bank (`self`): asked afresh at every step anyway
        self.bank, self.stats, self.closed = GuideBank.from_json(data), GuideStats(**data["stats"]), True
        return True
