"""Randomized controls inside a guided window: does a guide help the prompt it is given to? [ours]

S = Q/V (`npo.algo.estimators`) predicts how well a guide is absorbed; this measures it. Inside a
guided window, every prompt that is gated and has a guide is assigned once, by a coin, to the
treatment (its guide is injected) or to the controls (it keeps its on-policy group, `npo.controls` of
them). After the window, every assigned prompt is sampled again by the live policy: the difference
between the treated and the control prompts is the guide's direct effect on the prompt it was given to.

    coin(seed, i, key)   uniform in [0, 1) from (the run's seed, intervention i, the prompt's key):
                         the same on every process, at every resume and rollback, for the whole window
    draw_arm(arms, ...)  npo.arms: the source a prompt's guide is asked from, by a coin of its own
    effect(...)          the estimate and its bootstrap interval
    arm_summary(...)     per arm: its treated prompts, its own controls, its effect

The estimate pairs every prompt with itself: its gain is accuracy after the window minus p_hat, its
group's on-policy accuracy when it was assigned; the effect is the treated prompts' mean gain minus
the controls'. The coin balances the two in expectation; the pairing removes most of the spread of
prompt difficulty (a prompt's own p_hat predicts its later accuracy). The interval resamples the
prompts of each arm and of the controls independently (a stratified bootstrap over prompts), with
its own seeded stream.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass


def coin(seed: int, intervention: int, key: str) -> float:
    """A uniform number in [0, 1) that depends only on the run's seed, the intervention and the prompt."""
    digest = hashlib.sha256(f"npo.controls|{seed}|{intervention}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_control(share: float, seed: int, intervention: int, key: str) -> bool:
    """Whether a gated prompt with a guide keeps its on-policy group (a share `share` of them)."""
    return share > 0 and coin(seed, intervention, key) < share


@dataclass(frozen=True)
class Assignment:
    """A prompt's assignment in a window: its arm (the source its guide came from), whether it was
    treated (its guide injected) or is a control, its group's on-policy accuracy p_hat at the step it
    was assigned, and that step."""

    index: int  # the training item
    arm: str
    treated: bool
    p_hat: float
    step: int


def draw_arm(arms: list[str], seed: int, intervention: int, key: str) -> str:
    """The arm a prompt's guide is asked from: one of `arms`, uniformly, by a coin of its own."""
    return arms[min(int(coin(seed, intervention, f"arm|{key}") * len(arms)), len(arms) - 1)]


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def effect(treated: list[tuple[float, float]], control: list[tuple[float, float]], *, boot: int = 1000,
           seed: int = 0, level: float = 0.95) -> dict:
    """The effect of a guide from (p_hat at assignment, accuracy after) of the treated and the control
    prompts: `effect` = mean gain treated - mean gain control (gain = after - p_hat), its bootstrap
    interval `ci`, and the unpaired difference of the accuracies after (`after_difference`). None
    where a side is empty."""
    if not treated or not control:
        return {"effect": None, "ci": None, "after_difference": None}

    def diff(t, c):
        return mean([a - b for b, a in t]) - mean([a - b for b, a in c])

    rng = random.Random(seed)
    draws = sorted(diff(rng.choices(treated, k=len(treated)), rng.choices(control, k=len(control)))
                   for _ in range(boot))
    lo, hi = draws[int((1 - level) / 2 * (boot - 1))], draws[int((1 + level) / 2 * (boot - 1))]
    return {"effect": diff(treated, control), "ci": [lo, hi],
            "after_difference": mean([a for _, a in treated]) - mean([a for _, a in control])}


def side(rows: list[tuple[float, float]]) -> dict:
    """Count, mean p_hat at assignment (the balance check) and mean accuracy after, of one side."""
    return {"n": len(rows), "p_hat": mean([b for b, _ in rows]) if rows else None,
            "after": mean([a for _, a in rows]) if rows else None}


def arm_summary(assignments: list[Assignment], after: dict[int, float], *, first: str | None = None,
                boot: int = 1000, seed: int = 0) -> dict:
    """Per arm: its treated prompts and its own controls (prompts drawn to the arm, with a guide from
    it, that kept their on-policy group: a source finds guides for prompts of its own difficulty, so each
    arm is compared with its own controls), and the arm's `effect`; with several arms, also each arm's
    treated prompts against those of arm `first` (`versus_first`: the coin that draws arms is independent
    of difficulty, so two arms of one source differ by chance only)."""
    rows: dict[str, dict[bool, list[tuple[float, float]]]] = {}
    for a in assignments:
        rows.setdefault(a.arm, {True: [], False: []})[a.treated].append((a.p_hat, after[a.index]))
    out = {arm: {**side(r[True]), "control": side(r[False]), **effect(r[True], r[False], boot=boot, seed=seed)}
           for arm, r in sorted(rows.items())}
    if first is not None and len(rows) > 1:
        for arm, r in rows.items():
            if arm != first:
                out[arm]["versus_first"] = effect(r[True], rows.get(first, {True: []})[True], boot=boot, seed=seed)
    return out
