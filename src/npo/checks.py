"""Config checks: each field's range sits beside it (`doc(help, check=...)`), and one type check
for YAML values. Errors are messages; `npo.config` turns them into one-line UserErrors naming the field.
"""

from __future__ import annotations

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
            return f"must be {'>' if self.lo_open else '>='} {self.lo:g}"
        return f"must be in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


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


class SourceSpec:
    """A guide source (npo.sources.SOURCE_KINDS): a bare kind, or KIND:PATH for the kinds that read one."""

    BARE = ("near_future", "self", "replay")
    WITH_PATH = ("teacher", "teacher_model", "checkpoint", "pool")

    def error(self, value) -> str | None:
        kind, sep, arg = str(value).partition(":")
        if (not sep and kind in self.BARE) or (kind in self.WITH_PATH and (arg or kind == "pool")):
            return None  # a bare "pool:" is the rlep preset's placeholder, refused with its own message
        return (f"expected {', '.join(self.BARE)}, or {', '.join(k + ':PATH' for k in self.WITH_PATH)} "
                f"(teacher:reference: the task's reference answers), got {value!r}")


POSITIVE, NON_NEGATIVE = Range(0, lo_open=True), Range(0)


def doc(help: str, check=None, **kwargs):
    """A dataclass field with its documentation and its range check attached."""
    return field(metadata={"help": help, "check": check}, **kwargs)


def type_name(tp) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "a mapping", list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def check_type(value, tp, where: str):
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise UserError(f"{where}: expected {type_name(tp)}, got {value!r}")
    return value
