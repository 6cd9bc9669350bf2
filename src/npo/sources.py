"""Guide sources: where the trajectories NPO injects (and `npo signal` measures) come from.

A `GuideSource` proposes candidate trajectories for prompts. Training keeps the first verified-correct
candidate of a prompt as its guide (`propose`); the S = Q/V estimators use all of them (`npo.probe`).
The same source objects serve both, so "the near future" means one thing in a run and in a table.

| source | kind | what it samples | caches |
|---|---|---|---|
| `PolicySource` | `near_future` | k samples of this run's checkpoint Delta steps ahead | yes |
| `PolicySource` | `replay`, `checkpoint` | k samples of an earlier checkpoint, or of any model folder | yes |
| `SelfSource` | `self` | k samples of the live policy at the moment of asking (Delta = 0, the control) | no |
| `TraceSource` | `teacher` | the fixed traces of the prompt's question (no behaviour log-probs) | yes |

`live` is the policy being trained (or, in `npo signal`, the policy being measured): `self` samples
it, traces are tokenized with its tokenizer, and sources with a policy of their own ignore it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from npo.config import RunConfig
from npo.errors import UserError
from npo.generation import Policy, Sample
from npo.grpo_args import grpo_overrides
from npo.injection import GuideRow
from npo.tasks.files import read_rows


@dataclass
class Guide:
    """A verified-correct trajectory for one prompt, as the guide bank keeps it."""

    token_ids: list[int]
    text: str
    source: str  # the source's name: a checkpoint folder, "self", "teacher:PATH"
    source_step: int | None
    logps: list[float] | None  # per token under the source at its temperature; None for fixed traces

    def row(self) -> GuideRow:
        return GuideRow(self.token_ids, self.text, self.logps)


class GuideSource(ABC):
    kind: str  # near_future | replay | checkpoint | self | teacher
    name: str  # what records say the guides came from
    step: int | None = None  # the training step of the policy that writes them, when it is one of this run
    k: int = 0  # candidates per prompt (a trace source has as many as the question has traces)
    caches: bool = True  # a guide found once stays valid (not for `self`: the policy moves every step)
    generates: bool = True  # candidates are sampled (and count as generated tokens), not read

    @abstractmethod
    def sample(self, items: list, seeds: list[int], live: Policy | None) -> list[list[Sample]]:
        """Candidate trajectories per item (item i sampled under seeds[i]), with their log-probs under
        the source where it has them."""


class PolicySource(GuideSource):
    """k samples of a fixed policy: this run's checkpoint Delta steps ahead (`near_future`), an earlier
    one (`replay`), or any model folder with the same tokenizer (`checkpoint`)."""

    def __init__(self, policy: Policy, *, k: int, temperature: float, max_new_tokens: int, name: str,
                 step: int | None, kind: str = "near_future"):
        self.policy, self.k, self.temperature, self.max_new_tokens = policy, k, temperature, max_new_tokens
        self.name, self.step, self.kind = name, step, kind

    def sample(self, items, seeds, live=None):
        return self.policy.sample(items, k=self.k, temperature=self.temperature, max_new_tokens=self.max_new_tokens,
                                  seeds=seeds)


class SelfSource(GuideSource):
    """The live policy itself (Delta = 0): best-of-k resampling at the same k, the control that
    separates "a later checkpoint" from "more tries"."""

    kind, name, caches = "self", "self", False

    def __init__(self, *, k: int, temperature: float, max_new_tokens: int):
        self.k, self.temperature, self.max_new_tokens = k, temperature, max_new_tokens

    def sample(self, items, seeds, live):
        if live is None:
            raise ValueError("the self source samples the live policy; none was given")
        return live.sample(items, k=self.k, temperature=self.temperature, max_new_tokens=self.max_new_tokens,
                           seeds=seeds)


class TraceSource(GuideSource):
    """Fixed traces `{question, completion}` (a teacher's answers). They carry no behaviour
    log-probs; each is tokenized with the live policy's tokenizer plus EOS."""

    kind, generates = "teacher", False

    def __init__(self, traces: dict[str, list[str]], name: str):
        self.traces, self.name = traces, name

    @classmethod
    def from_file(cls, path: str) -> "TraceSource":
        p = Path(path)
        if not p.is_file():
            raise UserError(f"--source teacher:{path}: no such file")
        traces: dict[str, list[str]] = {}
        for i, row in enumerate(read_rows(p, "jsonl"), 1):
            if not isinstance(row.get("question"), str) or not isinstance(row.get("completion"), str):
                raise UserError(f"{path}: row {i}: expected {{\"question\": str, \"completion\": str}}")
            traces.setdefault(row["question"], []).append(row["completion"])
        return cls(traces, f"teacher:{path}")

    def sample(self, items, seeds, live):
        tok = live.tokenizer
        return [[Sample(tok.encode(c, add_special_tokens=False) + [tok.eos_token_id], c, None)
                 for c in self.traces.get(it.question, [])] for it in items]


@dataclass
class Proposal:
    guides: list[Guide | None]  # per item: its first verified-correct candidate
    samples: int  # candidates generated
    tokens: int  # completion tokens generated


def propose(source: GuideSource, items: list, seeds: list[int], scorer, live: Policy | None = None) -> Proposal:
    """The guide of each item: the first of the source's candidates that the verifier accepts."""
    groups = source.sample(items, seeds, live)
    guides: list[Guide | None] = []
    for item, group in zip(items, groups):
        ok = next((x for x in group if scorer.reward(x.text, item) == 1.0), None)
        guides.append(ok and Guide(ok.token_ids, ok.text, source.name, source.step, ok.logps))
    if not source.generates:
        return Proposal(guides, 0, 0)
    return Proposal(guides, sum(len(g) for g in groups), sum(len(x.token_ids) for g in groups for x in g))


def guide_sampling(cfg: RunConfig) -> dict:
    """How a run's guide sources sample: npo.k tries at npo.guide_temperature, answers as long as TRL's."""
    return {"k": cfg.npo.k, "temperature": cfg.npo.guide_temperature,
            "max_new_tokens": grpo_overrides(cfg)["max_completion_length"]}
