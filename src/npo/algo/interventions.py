"""The two manual interventions of NPO (docs/METHOD.md section 3) and the plateau rule.

    npo:
      interventions:
        - {kind: bootstrap, lookahead: 30}                  # scout 0 -> 30, restart at 0 guided by step 30
        - {kind: plateau, at_step: 150, lookahead: 40, window: 40}
        - {kind: plateau, at_step: auto-plateau, lookahead: 40}   # at the first plateau (rule below)

Symbols: Delta = `lookahead` (how far the guide is ahead), W = `window` (guided steps after the
rollback; default Delta), t = `at_step` (the rollback target; 0 for bootstrap).
"""

from __future__ import annotations

from dataclasses import dataclass

from npo.errors import UserError

AUTO = "auto-plateau"
KINDS = ("bootstrap", "plateau")


@dataclass(frozen=True)
class Intervention:
    kind: str
    at_step: int | str  # 0 for bootstrap, a step, or "auto-plateau"
    lookahead: int  # Delta
    window: int  # W

    @property
    def auto(self) -> bool:
        return self.at_step == AUTO


def parse_interventions(raw: list, steps: int, where: str = "npo.interventions",
                        ahead: bool = True) -> list[Intervention]:
    """Validate the config's list; errors name the entry and the key. `ahead`: the guide source trains
    ahead (near future), so every look-ahead must fit inside the run; a self source only guides."""
    out: list[Intervention] = []
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise UserError(f"{at}: expected a mapping like {{kind: plateau, at_step: 150, lookahead: 40}}")
        unknown = set(entry) - {"kind", "at_step", "lookahead", "window"}
        if unknown:
            raise UserError(f"{at}.{sorted(unknown)[0]}: unknown key (known: at_step, kind, lookahead, window)")
        kind = entry.get("kind")
        if kind not in KINDS:
            raise UserError(f"{at}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        delta = _positive_int(entry.get("lookahead"), f"{at}.lookahead")
        window = _positive_int(entry.get("window", delta), f"{at}.window")
        if kind == "bootstrap":
            if entry.get("at_step", 0) != 0:
                raise UserError(f"{at}.at_step: a bootstrap intervention starts at step 0")
            if i != 0:
                raise UserError(f"{at}.kind: bootstrap must be the first intervention")
            t: int | str = 0
        else:
            t = entry.get("at_step")
            if t != AUTO:
                t = _positive_int(t, f"{at}.at_step", f"a step >= 1 or {AUTO!r}")
        out.append(Intervention(kind, t, delta, window))
    _check_order(out, steps, where, ahead)
    return out


def _positive_int(value, where: str, expected: str = "an integer >= 1") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: expected {expected}, got {value!r}")
    return value


def _check_order(ivs: list[Intervention], steps: int, where: str, ahead: bool) -> None:
    """Fixed steps ascend, windows do not overlap, and every window (look-ahead) fits inside the run."""
    earliest = 0
    for i, iv in enumerate(ivs):
        at = f"{where}[{i}]"
        if iv.auto:
            earliest += 1
            continue
        if iv.at_step < earliest:
            raise UserError(f"{at}.at_step: {iv.at_step} is inside the previous intervention's window "
                            f"(the earliest allowed is {earliest})")
        reach = iv.at_step + (max(iv.lookahead, iv.window) if ahead else iv.window)
        if reach > steps:
            what = "max(lookahead, window)" if ahead else "window"
            raise UserError(f"{at}: at_step + {what} = {reach} exceeds train.steps ({steps})")
        earliest = iv.at_step + iv.window


def plateaued(rewards: list[float], window: int, min_gain: float) -> bool:
    """The plateau rule: the mean training reward of the last `window` steps exceeds that of the
    `window` steps before by less than `min_gain`. Needs 2 * window steps of history."""
    if len(rewards) < 2 * window:
        return False
    last = sum(rewards[-window:]) / window
    before = sum(rewards[-2 * window:-window]) / window
    return last - before < min_gain
