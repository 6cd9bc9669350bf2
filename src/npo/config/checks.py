"""Config checks: each field's range sits beside it (`doc(help, check=...)`), and one type check
for YAML values that is total: a number is finite and an integer fits in 32 bits whatever the field,
so that no value passes a range check by comparing false with it (NaN) or overflows later (a seed
past numpy's 2^32, a timeout past what a pipe can poll). Errors are messages; `npo.config.run` turns them
into one-line UserErrors naming the field.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, field

from npo.errors import UserError


@dataclass(frozen=True)
class Range:
    """lo <= value <= hi (a bound may be open, or absent)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def error(self, value) -> str | None:
        ok = ((self.lo is None or (value > self.lo if self.lo_open else value >= self.lo))
              and (self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)))
        if ok:
            return None
        if self.hi is None:
            return f"must be {'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.lo is None:
            return f"must be {'<' if self.hi_open else '<='} {_num(self.hi)}"
        return (f"must be in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}"
                f"{')' if self.hi_open else ']'}")


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class OneOf:
    values: tuple

    def error(self, value) -> str | None:
        return None if value in self.values else f"expected one of {', '.join(self.values)}, got {value!r}"


class NonEmpty:
    def error(self, value) -> str | None:
        return None if value else "must not be empty"


class PositiveInts:
    def error(self, value) -> str | None:
        ok = bool(value) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
        return None if ok else "expected a non-empty list of integers >= 1"


@dataclass(frozen=True)
class SourceKind:
    """A kind of guide source and what it needs: a path (`KIND:PATH`), and whether its guides carry
    log-probs under the source over the policy's tokens (what importance-weighted guide losses read)."""

    name: str
    path: bool
    logps: bool


# The open set of guide sources (npo.guides.sources implements each; config checks, training and
# `npo signal` read this table). A new kind is a line here and one class there, registered by `@source(kind)`.
SOURCE_KINDS = {kind.name: kind for kind in (
    SourceKind("near_future", path=False, logps=True),  # this run's checkpoint Delta steps ahead [paper]
    SourceKind("self", path=False, logps=True),  # the live policy: the Delta = 0 control
    SourceKind("replay", path=False, logps=True),  # the run's own successes, log-probs recorded at collection
    SourceKind("teacher", path=True, logps=False),  # fixed traces (teacher:reference: the task's references)
    SourceKind("teacher_model", path=True, logps=False),  # its own log-probs only when it shares the tokenizer
    SourceKind("checkpoint", path=True, logps=True),  # a finished run's policy, same tokenizer
    SourceKind("pool", path=True, logps=False),  # a finished run's verified successes (RLEP)
)}


class SourceSpec:
    """A guide source: a bare kind, or KIND:PATH for the kinds that read one (`SOURCE_KINDS`)."""

    BARE = tuple(k.name for k in SOURCE_KINDS.values() if not k.path)
    WITH_PATH = tuple(k.name for k in SOURCE_KINDS.values() if k.path)

    def error(self, value) -> str | None:
        kind, sep, arg = str(value).partition(":")
        if (not sep and kind in self.BARE) or (kind in self.WITH_PATH and (arg or kind == "pool")):
            return None  # a bare "pool:" is the rlep preset's placeholder, refused with its own message
        return (f"expected {', '.join(self.BARE)}, or {', '.join(k + ':PATH' for k in self.WITH_PATH)} "
                f"(teacher:reference: the task's reference answers), got {value!r}")


class ArmSpecs:
    """npo.arms: a list of guide sources, `near_future` at a Delta of its own as near_future:DELTA."""

    def error(self, value) -> str | None:
        if not isinstance(value, list):
            return f"expected a list of guide sources, got {value!r}"
        for i, spec in enumerate(value):
            kind, sep, arg = str(spec).partition(":")
            if kind == "near_future":
                if sep and not (arg.isdigit() and int(arg) > 0):
                    return f"[{i}]: expected near_future or near_future:DELTA (an integer >= 1), got {spec!r}"
            elif why := SourceSpec().error(spec):
                return f"[{i}]: {why}"
        return None


POSITIVE, NON_NEGATIVE = Range(0, lo_open=True), Range(0)
MAX_INT = 2**32 - 1  # every integer field: seeds are numpy's (< 2^32), counts are far below
SEED = Range(0, MAX_INT)
MAX_ITEMS = 1_000_000  # prompts a task draws or holds out (a procedural task's search is bounded by it)


def doc(help: str, check=None, **kwargs):
    """A dataclass field with its documentation and its range check attached."""
    return field(metadata={"help": help, "check": check}, **kwargs)


def type_name(tp) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "a mapping", list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def check_type(value, tp, where: str):
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif tp is float and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise UserError(f"{where}: expected {type_name(tp)}, got {short(value)}")
    if tp is float and not math.isfinite(value):
        raise UserError(f"{where}: expected a finite number, got {value!r}")
    if tp is int and abs(value) > MAX_INT:
        raise UserError(f"{where}: {value} is out of range (at most {MAX_INT} in size)")
    return value


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_annotated(value, hint, where: str):
    """`value` against a field's type annotation (TRL's GRPOConfig, peft's LoraConfig): one of its types
    (scalars through `check_type`: finite, bounded), a mapping or list where it says so, a Literal's
    values; a type it does not know (a class of the library's) is left to the library."""
    options = [a for a in (typing.get_args(hint) if typing.get_origin(hint) in UNIONS else (hint,)) if a is not type(None)]
    if value is None or not options:
        return value
    names = []
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is typing.Literal:
            if value in typing.get_args(option):
                return value
            names += [repr(v) for v in typing.get_args(option)]
        elif origin in (dict, list):
            if isinstance(value, origin):
                return value
            names.append(type_name(origin))
        elif origin in (int, float, bool, str):
            try:
                return check_type(value, origin, where)
            except UserError:
                if origin in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
                    raise  # a number of the right kind, out of range: that error, not "expected ..."
            names.append(type_name(origin))
        else:
            return value
    raise UserError(f"{where}: expected {' or '.join(dict.fromkeys(names))}, got {short(value)}")


UNIONS = (typing.Union, types.UnionType)
