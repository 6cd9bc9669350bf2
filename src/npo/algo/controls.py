"""Randomized controls inside a guided window: does a guide help the prompt it is given to? [ours]

S = Q/V (`npo.algo.estimators`) predicts how well a guide is absorbed; this measures it. Inside a
guided window, every prompt that is gated and has a guide is assigned once, by a coin, to the
treatment (its guide is injected) or to the controls (it keeps its on-policy group, `npo.controls` of
them). After the window, every assigned prompt is sampled again by the live policy: the difference
between the treated and the control prompts is the guide's direct effect on the prompt it was given to.

    coin(seed, i, key)   uniform in [0, 1) from (the run's seed, intervention i, the prompt's key):
                         the same on every process, at every resume and rollback, for the whole window
    effect(...)          the estimate and its bootstrap interval

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

CONTROL = "control"


def coin(seed: int, intervention: int, key: str) -> float:
    """A uniform number in [0, 1) that depends only on the run's seed, the intervention and the prompt."""
    digest = hashlib.sha256(f"npo.controls|{seed}|{intervention}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_control(share: float, seed: int, intervention: int, key: str) -> bool:
    """Whether a gated prompt with a guide keeps its on-policy group (a share `share` of them)."""
    return share > 0 and coin(seed, intervention, key) < share


@dataclass(frozen=True)
class Assignment:
    """A prompt's assignment in a window: its arm (the guide's source, or `control`), its group's
    on-policy accuracy p_hat at the step it was assigned, and that step."""

    index: int  # the training item
    arm: str
    p_hat: float
    step: int


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def effect(treated: list[tuple[float, float]], control: list[tuple[float, float]], *, boot: int = 1000,
           seed: int = 0, level: float = 0.95) -> dict:
    """The effect of a guide from (p_hat at assignment, accuracy after) of the treated and the control
    prompts: `effect` = mean gain treated - mean gain control (gain = after - p_hat), its bootstrap
    interval `ci`, and the unpaired difference of the accuracies after (`after_difference`). None
    where an arm is empty."""
    if not treated or not control:
        return {"effect": None, "ci": None, "after_difference": None}

    def gains(rows):
        return [after - before for before, after in rows]

    def diff(t, c):
        return mean(gains(t)) - mean(gains(c))

    rng = random.Random(seed)
    draws = sorted(diff(rng.choices(treated, k=len(treated)), rng.choices(control, k=len(control)))
                   for _ in range(boot))
    lo, hi = draws[int((1 - level) / 2 * (boot - 1))], draws[int((1 + level) / 2 * (boot - 1))]
    return {"effect": diff(treated, control), "ci": [lo, hi],
            "after_difference": mean([a for _, a in treated]) - mean([a for _, a in control])}


def arm_summary(assignments: list[Assignment], after: dict[int, float], *, boot: int = 1000, seed: int = 0) -> dict:
    """Per arm and for the controls: the count, mean p_hat at assignment (the balance check), mean
    accuracy after; per arm, its effect against the controls (`effect`)."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for a in assignments:
        rows.setdefault(a.arm, []).append((a.p_hat, after[a.index]))
    control = rows.get(CONTROL, [])
    out = {}
    for arm, arm_rows in sorted(rows.items()):
        out[arm] = {"n": len(arm_rows), "p_hat": mean([b for b, _ in arm_rows]),
                    "after": mean([a for _, a in arm_rows])}
        if arm != CONTROL:
            out[arm] |= effect(arm_rows, control, boot=boot, seed=seed)
    return out
