"""The `guide` argument of `npo.NPOTrainer`: which method a run is and where its guides come from.

A `Method` (`npo.Method`; `npo.Guide` is its earlier name, kept as an alias for one release) is the
YAML config's method and its npo, replay and autonpo sections; the constructors
below are the methods of docs/baselines.md by name. Their keyword arguments are
those sections' fields (npo.config.sections documents each one), checked when the trainer is built:

    NearFuture(Bootstrap(lookahead=25), Plateau(at_step=150, lookahead=25), tau=0.6, k=4)
    SelfGuide(Bootstrap(lookahead=25))            # the control: guides from the current policy
    AutoNPO(deltas=[20, 40], window=40)           # the controller decides when and how far
    Teacher("traces.jsonl", Bootstrap(lookahead=25)), TeacherModel(path, ...), Checkpoint(path, ...),
    Pool(path, ...), Replay(..., replay={"share": 0.5})
    LUFFY(), ExGRPO(), RLEP(pool="pool.jsonl")    # the baselines' presets (npo.config.presets)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    """A run's method and its settings: what `NPOTrainer(guide=...)` takes."""

    method: str
    npo: dict = field(default_factory=dict)  # YAML npo section
    replay: dict = field(default_factory=dict)  # YAML replay section
    autonpo: dict = field(default_factory=dict)  # YAML autonpo section


Guide = Method  # the earlier name of the same thing, kept for one release
GRPO = Method("grpo")  # no guides: plain GRPO (guide=None)


def Bootstrap(lookahead: int, window: int | None = None) -> dict:  # noqa: N802 - named like the others
    """Early bootstrapping: a scout trains 0 -> Delta, the run restarts at 0 guided for W steps."""
    return {"kind": "bootstrap", "lookahead": lookahead, **({"window": window} if window is not None else {})}


def Plateau(at_step, lookahead: int, window: int | None = None) -> dict:  # noqa: N802
    """Late plateau breakthrough at step t (or 'auto-plateau'): train to t + Delta, roll back to t, W guided steps."""
    return {"kind": "plateau", "at_step": at_step, "lookahead": lookahead,
            **({"window": window} if window is not None else {})}


def _guided(source: str, interventions, fields: dict, method: str = "npo") -> Method:
    replay = fields.pop("replay", {})
    npo = {"source": source, **fields}
    if interventions:
        npo["interventions"] = list(interventions)
    return Method(method, npo, dict(replay))


def NearFuture(*interventions: dict, **npo_fields) -> Method:  # noqa: N802
    """NPO [paper]: guides from the run's own checkpoint Delta steps ahead, in the interventions' windows."""
    return _guided("near_future", interventions, npo_fields)


def SelfGuide(*interventions: dict, **npo_fields) -> Method:  # noqa: N802
    """The Delta = 0 control: the same interventions and windows, guides from the current policy."""
    return _guided("self", interventions, npo_fields)


def Teacher(path: str, *interventions: dict, **npo_fields) -> Method:  # noqa: N802
    """Fixed traces (JSONL {question, completion}), or 'reference' for the task's reference answers."""
    return _guided(f"teacher:{path}", interventions, npo_fields)


def TeacherModel(path: str, *interventions: dict, **npo_fields) -> Method:  # noqa: N802
    """A local model folder that writes the traces."""
    return _guided(f"teacher_model:{path}", interventions, npo_fields)


def Checkpoint(path: str, *interventions: dict, **npo_fields) -> Method:  # noqa: N802
    """A finished run's policy."""
    return _guided(f"checkpoint:{path}", interventions, npo_fields)


def Pool(path: str, *interventions: dict, **npo_fields) -> Method:  # noqa: N802
    """Verified successes of a finished run (`npo pool`)."""
    return _guided(f"pool:{path}", interventions, npo_fields)


def Replay(*interventions: dict, **npo_fields) -> Method:  # noqa: N802
    """The run's own past successes; `replay={...}` sets the buffer (YAML replay section)."""
    return _guided("replay", interventions, npo_fields)


def AutoNPO(npo: dict | None = None, **autonpo_fields) -> Method:  # noqa: N802
    """AutoNPO: the controller picks when to intervene and Delta* = argmax S; `npo={...}` sets the gate
    and the guide's sampling (YAML npo section)."""
    return Method("autonpo", dict(npo or {}), {}, autonpo_fields)


def LUFFY(**npo_fields) -> Method:  # noqa: N802
    """LUFFY's preset: a teacher's traces (the task's references by default) in every group, shaped loss."""
    return _guided(npo_fields.pop("source", "teacher:reference"), (), npo_fields, method="luffy")


def ExGRPO(**npo_fields) -> Method:  # noqa: N802
    """ExGRPO's preset: the run's replay buffer, half of each batch replayed after solve rate 0.35."""
    return _guided("replay", (), npo_fields, method="exgrpo")


def RLEP(pool: str, **npo_fields) -> Method:  # noqa: N802
    """RLEP's preset: two pool successes added to every group that has them."""
    return _guided(f"pool:{pool}", (), npo_fields, method="rlep")


def guide_of(cfg) -> Method:
    """The Method of a YAML run (`cfg`: an npo.config.run.RunConfig): its method and whole sections."""
    return Method(cfg.method, dataclasses.asdict(cfg.npo), dataclasses.asdict(cfg.replay),
                 dataclasses.asdict(cfg.autonpo))
