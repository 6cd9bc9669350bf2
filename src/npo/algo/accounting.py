"""Honest accounting (docs/METHOD.md section 5): what a run spent, discarded look-aheads included.

One `Ledger` per run. The trainer books every on-policy completion token it generates (final
trajectory and look-aheads alike); the loops book look-ahead steps, guide generation and AutoNPO's
measurement rollouts. `summary()` is what `summary.json` reports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Cost:
    """What one piece of work spent: optimizer steps, wall seconds, generated completion tokens."""

    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0


@dataclass
class Ledger:
    lookahead_steps: int = 0  # optimizer steps later discarded (look-aheads, AutoNPO's rolled-back steps)
    on_policy_tokens: int = 0  # final trajectory and look-aheads
    guide_tokens: int = 0
    estimation_tokens: int = 0  # AutoNPO's Q/V/S measurements, npo.controls' resampling after a window
    guide_samples: int = 0
    interventions: int = 0

    def book_guides(self, stats) -> None:
        """One intervention's guide generation (`npo.guides.bank.GuideStats`)."""
        self.guide_tokens += stats.tokens
        self.guide_samples += stats.samples
        self.interventions += 1

    def summary(self, final_steps: int) -> dict:
        tokens = {"on_policy": self.on_policy_tokens, "guide": self.guide_tokens,
                  "estimation": self.estimation_tokens}
        return {"final_steps": final_steps, "total_steps": final_steps + self.lookahead_steps,
                "lookahead_steps": self.lookahead_steps, "generated_tokens": sum(tokens.values()),
                "generated_tokens_by_kind": tokens, "guide_samples": self.guide_samples,
                "interventions": self.interventions}


@dataclass
class Clock:
    """Wall seconds that produced the run. A resumed run continues from the seconds of the state it
    resumes from (what a crash lost is counted apart, in the run's journal)."""

    base: float = 0.0  # productive seconds before `since`
    since: float = field(default_factory=time.perf_counter)
    warmup_seconds: float = 0.0

    def wall(self) -> float:
        return self.base + time.perf_counter() - self.since

    def books(self) -> dict:
        return {"wall_seconds": self.wall(), "warmup_seconds": self.warmup_seconds, "time": time.time()}
