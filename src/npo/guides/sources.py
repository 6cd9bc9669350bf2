"""Trajectory sources: where the trajectories NPO injects (and `npo signal` measures) come from.

A `GuideSource` proposes candidate trajectories for prompts. Training keeps the first verified-correct
candidate of a prompt as its guide (`propose`); the S = Q/V estimators use all of them (`npo.guides.measure`).
The same source objects serve both, so "the near future" means one thing in a run and in a table.

| source | spec | what it gives | caches |
|---|---|---|---|
| `PolicySource` | `near_future` | k samples of this run's checkpoint Delta steps ahead | yes |
| `CheckpointSource` | `checkpoint:PATH` | k samples of a finished run's policy (any model folder, same tokenizer) | yes |
| `SelfSource` | `self` | k samples of the live policy at the moment of asking (Delta = 0, the control) | no |
| `TraceSource` | `teacher:PATH` | the fixed traces of the prompt's question (no behaviour log-probs) | yes |
| `ReferenceSource` | `teacher:reference` | the task's reference completion: a perfect teacher | yes |
| `TeacherModelSource` | `teacher_model:PATH` | k samples of another model, re-tokenized with the policy's tokenizer | yes |
| `PoolSource` | `pool:PATH` | the pool's verified successes of the question, shuffled per step (RLEP) | no |
| `ReplaySource` | `replay` | the run's own stored successes, with behaviour log-probs (ExGRPO) | no |

Each kind is one class, registered under its name by `@source(kind)` beside what the kind declares in
`npo.config.checks.SOURCE_KINDS` (a path, behaviour log-probs); `make_source` and `check_source` dispatch
through the registry `SOURCES`, for training and `npo signal` alike. A new kind is one class here and
one line there. `near_future` is built by the loop's look-ahead (`npo.loops.steps`), not from a spec.

`live` is the policy being trained (or, in `npo signal`, the policy being measured): `self` samples
it, traces are tokenized with its tokenizer, and sources with a policy of their own ignore it. A guided
group takes the first M (`npo.slots`) verified-correct candidates of its prompt (`propose`).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from npo.algo.injection import Trajectory
from npo.algo.replay import ReplayBuffer, question_index
from npo.config.checks import SOURCE_KINDS
from npo.config.run import RunConfig
from npo.errors import UserError
from npo.models.check import check_model_folder
from npo.models.generation import Policy, Sample, text_tokenizer
from npo.models.share import ALONE, Share
from npo.tasks.base import Item
from npo.tasks.files import read_rows


@dataclass(frozen=True)
class Needs:
    """What building a source from its spec may use (`make_source`'s keywords)."""

    sampling: dict  # k, temperature, max_new_tokens of the sources that sample
    task: object
    style: str
    load: Callable[[str, str], Policy] | None = None  # (a model folder, the kind) -> Policy
    buffer: ReplayBuffer | None = None
    train_items: list | None = None


SOURCES: dict[str, type["GuideSource"]] = {}  # kind -> its class: npo.config.checks.SOURCE_KINDS, implemented


def source(kind: str):
    """Register a class as the implementation of the source kind `kind` (declared in SOURCE_KINDS)."""
    if kind not in SOURCE_KINDS:
        raise ValueError(f"source kind {kind!r} is not declared in npo.config.checks.SOURCE_KINDS")

    def register(cls):
        cls.kind = kind
        SOURCES[kind] = cls
        return cls
    return register


class GuideSource(ABC):
    kind: str  # its key in SOURCES and SOURCE_KINDS
    name: str  # what records say the guides came from
    step: int | None = None  # the training step of the policy that writes them, when it is one of this run
    k: int = 0  # candidates per prompt (a trace source has as many as the question has traces)
    caches: bool = True  # a guide found once stays valid (not for `self`: the policy moves every step)
    generates: bool = True  # candidates are sampled (and count as generated tokens), not read
    verified: bool = False  # candidates are this run's own verified successes: not verified again

    @abstractmethod
    def sample(self, items: list, seeds: list[int], live: Policy | None) -> list[list[Sample]]:
        """Candidate trajectories per item (item i sampled under seeds[i]), with their log-probs under
        the source where it has them."""

    @classmethod
    def from_spec(cls, arg: str, needs: Needs) -> "GuideSource":
        """The source of the spec `KIND[:ARG]`."""
        raise ValueError(f"{cls.kind}: made by the loop's look-ahead, not from a spec")

    @classmethod
    def check(cls, arg: str) -> None:
        """What the source reads, checked before a run writes anything (nothing, unless it reads a path)."""
        return None


@source("near_future")
class PolicySource(GuideSource):
    """k samples of a fixed policy: this run's checkpoint Delta steps ahead (`near_future`), an earlier
    one, or any model folder with the same tokenizer (`checkpoint`)."""

    def __init__(self, policy: Policy, *, k: int, temperature: float, max_new_tokens: int, name: str,
                 step: int | None, kind: str | None = None):
        self.policy, self.k, self.temperature, self.max_new_tokens = policy, k, temperature, max_new_tokens
        self.name, self.step, self.kind = name, step, kind or type(self).kind

    def sample(self, items, seeds, live=None):
        return self.policy.sample(items, k=self.k, temperature=self.temperature, max_new_tokens=self.max_new_tokens,
                                  seeds=seeds)


@source("checkpoint")
class CheckpointSource(PolicySource):
    """A finished run's policy (`checkpoint:PATH`, same tokenizer), sampled as the near future is."""

    @classmethod
    def from_spec(cls, arg, needs):
        return cls(needs.load(arg, cls.kind), name=f"{cls.kind}:{arg}", step=None, kind=cls.kind, **needs.sampling)

    @classmethod
    def check(cls, arg):
        check_model_folder(arg, f"npo.source {cls.kind}")


@source("self")
class SelfSource(GuideSource):
    """The live policy itself (Delta = 0): best-of-k resampling at the same k, the control that
    separates "a later checkpoint" from "more tries"."""

    name, caches = "self", False

    def __init__(self, *, k: int, temperature: float, max_new_tokens: int):
        self.k, self.temperature, self.max_new_tokens = k, temperature, max_new_tokens

    @classmethod
    def from_spec(cls, arg, needs):
        return cls(**needs.sampling)

    def sample(self, items, seeds, live):
        if live is None:
            raise ValueError("the self source samples the live policy; none was given")
        return live.sample(items, k=self.k, temperature=self.temperature, max_new_tokens=self.max_new_tokens,
                           seeds=seeds)


@source("teacher")
class TraceSource(GuideSource):
    """Fixed traces `{question, completion}` (a teacher's answers, `teacher:PATH`). They carry no
    behaviour log-probs; each is tokenized with the live policy's tokenizer plus EOS.
    `teacher:reference` is the task's own reference answers (`ReferenceSource`)."""

    generates = False

    def __init__(self, traces: dict[str, list[str]], name: str):
        self.traces, self.name = traces, name

    @classmethod
    def from_spec(cls, arg, needs):
        if cls.kind == "teacher" and arg == "reference":
            return ReferenceSource(needs.task, needs.style)
        return cls(read_traces(arg, cls.kind), f"{cls.kind}:{arg}")

    @classmethod
    def check(cls, arg):
        if not (cls.kind == "teacher" and arg == "reference"):
            read_traces(arg, cls.kind)

    def sample(self, items, seeds, live):
        return [[trace_sample(live.tokenizer, c) for c in self.traces.get(it.key, [])] for it in items]


def read_traces(path: str, spec: str) -> dict[str, list[str]]:
    """question -> completions of a JSONL file of {question, completion} rows (a teacher's or a pool's);
    an image prompt's rows also carry its `image` reference (as `npo pool` writes them)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"npo.source {spec}:{path}: no such file")
    traces: dict[str, list[str]] = {}
    for i, row in read_rows(p, "jsonl"):
        if not isinstance(row.get("question"), str) or not isinstance(row.get("completion"), str):
            raise UserError(f"{path}: row {i}: expected {{\"question\": str, \"completion\": str}}")
        key = Item(row["question"], "", image=row.get("image")).key
        traces.setdefault(key, []).append(row["completion"])
    if not traces:
        raise UserError(f"{path}: no rows")
    return traces


def trace_sample(tokenizer, text: str) -> Sample:
    """A fixed text as a candidate of the live policy: its tokens plus EOS, no log-probs."""
    tokenizer = text_tokenizer(tokenizer)
    return Sample(tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id], text, None)


@source("pool")
class PoolSource(TraceSource):
    """A finished run's verified successes (RLEP's experience pool, `npo pool`): each time a prompt is
    asked, its pool entries in an order drawn from the prompt's seed, so M of them are sampled anew."""

    caches = False

    @classmethod
    def check(cls, arg):
        if not arg:  # the rlep preset's placeholder
            raise UserError("npo.source: method rlep replays a pool of verified successes: set npo.source=pool:PATH "
                            "(build one with: npo pool RUN --out PATH; npo compare makes one itself)")
        super().check(arg)

    def sample(self, items, seeds, live):
        return [[trace_sample(live.tokenizer, c) for c in random.Random(seed).sample(pool, len(pool))]
                for it, seed in zip(items, seeds) for pool in [self.traces.get(it.key, [])]]


class ReferenceSource(GuideSource):
    """The task's reference completion of each question (`teacher:reference`): a perfect teacher in one
    fixed style (the scratchpad task's canonical order; the answer alone on `arith`; `\\boxed{answer}`
    for chat models)."""

    kind, name, generates = "teacher", "teacher:reference", False  # not registered: teacher's from_spec makes it

    def __init__(self, task, style: str):
        self.task, self.style = task, style

    def sample(self, items, seeds, live):
        return [[trace_sample(live.tokenizer, reference_completion(self.task, it, self.style))] for it in items]


def reference_completion(task, item, style: str) -> str:
    if style != "plain":
        return f"The answer is \\boxed{{{item.answer}}}."
    write = getattr(task, "reference_completion", None)
    return write(item) if write is not None else item.answer


@source("teacher_model")
class TeacherModelSource(CheckpointSource):
    """k samples of another model (`teacher_model:PATH`). Its tokenizer may differ: each text is then
    re-tokenized with the live policy's tokenizer and carries no behaviour log-probs (those of the
    teacher are over its own tokens), so only the `shaping` and `on_policy` losses apply."""

    _same_tokenizer: bool | None = None  # compared once: a vocabulary is a large dict to build per step

    def sample(self, items, seeds, live):
        groups = super().sample(items, seeds, live)
        if live is not None and self._same_tokenizer is None:
            self._same_tokenizer = (text_tokenizer(live.tokenizer).get_vocab()
                                    == text_tokenizer(self.policy.tokenizer).get_vocab())
        if live is None or self._same_tokenizer:
            return groups
        return [[trace_sample(live.tokenizer, x.text) for x in g] for g in groups]


@source("replay")
class ReplaySource(GuideSource):
    """The run's own stored successes (`replay`, ExGRPO): for each prompt, the buffer's pick (lowest
    entropy first), with the behaviour log-probs recorded when it was sampled."""

    name, caches, generates, verified = "replay", False, False, True

    def __init__(self, buffer: ReplayBuffer, train_items: list, k: int = 1):
        self.buffer, self.k = buffer, k
        self.index = question_index(train_items)  # the buffer is keyed by a question's first item index

    @classmethod
    def from_spec(cls, arg, needs):
        return cls(needs.buffer, needs.train_items, k=needs.sampling["k"])

    def sample(self, items, seeds, live):
        return [[Sample(list(e.token_ids), e.text, list(e.logps))
                 for e in self.buffer.pick(self.index[it.key], self.k, random.Random(seed))]
                for it, seed in zip(items, seeds)]


def make_source(spec: str, **needs) -> GuideSource:
    """Every source kind but near_future, from its spec (npo.config.checks.SourceSpec), the same for training
    and `npo signal`; `needs`: `Needs`' fields (sampling, task, style, load, buffer, train_items)."""
    kind, _, arg = spec.partition(":")
    return SOURCES[kind].from_spec(arg, Needs(**needs))


def check_source(spec: str) -> None:
    """What a source reads, checked before a run writes anything: trace files row by row, model folders."""
    kind, _, arg = spec.partition(":")
    SOURCES[kind].check(arg)


@dataclass
class Proposal:
    guides: list[list[Trajectory]]  # per item: its first (up to m) verified-correct candidates
    samples: int  # candidates generated
    tokens: int  # completion tokens generated


def propose(source: GuideSource, items: list, seeds: list[int], scorer, live: Policy | None = None,
            m: int = 1, share: Share = ALONE) -> Proposal:
    """The guides of each item: the first m of the source's candidates that the verifier accepts (the
    verifier is asked until m are found; a replay buffer's successes were verified when collected).
    `share`: the processes, which verify a share of the items each and gather the verdicts."""
    groups = source.sample(items, seeds, live)

    def first_m(part: list) -> list[list[int]]:  # per (item, candidates): the accepted candidates' positions
        out = []
        for item, group in part:
            ok: list[int] = []
            for j, x in enumerate(group):
                if len(ok) == m:
                    break
                if source.verified or scorer.reward(x.text, item) == 1.0:
                    ok.append(j)
            out.append(ok)
        return out

    accepted = share.run(list(zip(items, groups)), first_m, pad=False)  # no collective inside: no stand-ins
    guides = [[Trajectory(group[j].token_ids, group[j].text, source.name, source.step, group[j].logps) for j in ok]
              for group, ok in zip(groups, accepted)]
    if not source.generates:
        return Proposal(guides, 0, 0)
    return Proposal(guides, sum(len(g) for g in groups), sum(len(x.token_ids) for g in groups for x in g))


def guide_sampling(cfg: RunConfig) -> dict:
    """How a run's guide sources sample: npo.k tries at npo.guide_temperature, answers as long as TRL's."""
    return {"k": cfg.npo.k, "temperature": cfg.npo.guide_temperature,
            "max_new_tokens": cfg.resolved_grpo["max_completion_length"]}
