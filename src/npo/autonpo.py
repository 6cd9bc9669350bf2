"""AutoNPO's controller (NPO_METHOD.md section 4) as a pure state machine: no model, no trainer.

Fed one `StepRecord` per optimizer step, it keeps exponential moving averages of the reward and the
policy entropy, the running entropy peak, and the mistake pool (prompts whose group accuracy was
below tau, with the step they failed at; bounded, entries age out). `observe` returns a `Trigger`
when a rule fires; `decide` turns a trigger and the table of Q, V, S per candidate look-ahead into a
`Decision` (Delta* = argmax S, or decline when the best S or Q is too small); `record` books an
intervention (cooldown, caps on count and extra compute).

Rules (every number an `autonpo.*` config field):
- early (bootstrapping): at step >= `warmup_steps`, the reward EMA is below `r_low`; fires at most once.
- late (plateau breakthrough): the reward EMA improved by less than `stagnation_eps` over the last
  `stagnation_window` steps AND the entropy EMA is below `entropy_fraction` x its running peak.
- never inside `cooldown` steps after an intervention (or a declined trigger), never beyond
  `max_interventions`, never when the intervention would push the extra optimizer steps (the
  discarded segments) beyond `max_extra_fraction` x the run's steps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class StepRecord:
    step: int
    reward: float  # mean on-policy reward of the step
    entropy: float  # mean per-token policy entropy
    failed: list[int] = field(default_factory=list)  # prompts (item indices) with p_hat < tau
    histogram: list[float] = field(default_factory=list)  # group-accuracy histogram (fractions)


@dataclass
class Trigger:
    kind: str  # "bootstrap" or "plateau"
    step: int
    signals: dict


@dataclass
class Decision:
    trigger: Trigger
    delta: int | None  # Delta*; None = declined
    table: list[dict]  # Q, V, S per candidate Delta
    reason: str
    estimation_tokens: int = 0  # rollouts spent measuring the table


class Controller:
    def __init__(self, rules, total_steps: int):
        """`rules`: an `npo.config.AutoNPOConfig` (every threshold, window, decay and cap)."""
        self.rules, self.total_steps = rules, total_steps
        self.reward_ema: float | None = None
        self.entropy_ema: float | None = None
        self.entropy_peak = float("-inf")
        self.reward_history: deque[float] = deque(maxlen=rules.stagnation_window + 1)
        self.pool: deque[tuple[int, int]] = deque()  # (prompt, step failed), oldest first
        self.cooldown_until = -1
        self.interventions = 0
        self.extra_steps = 0
        self.bootstrapped = False
        self.floor = 0  # no rollback before the end of the last guided window (it would undo it)

    # ------------------------------------------------------------------ signals
    def observe(self, rec: StepRecord) -> Trigger | None:
        r = self.rules
        self.reward_ema = rec.reward if self.reward_ema is None else r.ema * self.reward_ema + (1 - r.ema) * rec.reward
        self.entropy_ema = (rec.entropy if self.entropy_ema is None
                            else r.ema * self.entropy_ema + (1 - r.ema) * rec.entropy)
        self.entropy_peak = max(self.entropy_peak, self.entropy_ema)
        self.reward_history.append(self.reward_ema)
        for prompt in rec.failed:
            self.pool.append((prompt, rec.step))
        while self.pool and (len(self.pool) > r.pool_size or self.pool[0][1] < rec.step - r.pool_age):
            self.pool.popleft()
        return self._trigger(rec.step)

    def _trigger(self, step: int) -> Trigger | None:
        r = self.rules
        if step < self.cooldown_until or self.interventions >= r.max_interventions:
            return None
        signals = {"reward_ema": self.reward_ema, "entropy_ema": self.entropy_ema, "entropy_peak": self.entropy_peak}
        if not self.bootstrapped and step >= r.warmup_steps and self.reward_ema < r.r_low:
            self.bootstrapped = True
            return Trigger("bootstrap", step, {**signals, "r_low": r.r_low})
        if len(self.reward_history) > r.stagnation_window:
            gain = self.reward_history[-1] - self.reward_history[0]
            collapsed = self.entropy_ema < r.entropy_fraction * self.entropy_peak
            if gain < r.stagnation_eps and collapsed:
                return Trigger("plateau", step, {**signals, "reward_gain": gain, "window": r.stagnation_window,
                                                 "entropy_fraction": r.entropy_fraction})
        return None

    # ------------------------------------------------------------------ choices
    def candidates(self, step: int, grid: list[int], checkpoints: list[int]) -> list[int]:
        """Look-aheads for a trigger at `step`: each Delta of the grid rounded up to the nearest rollback
        target that has a checkpoint (the last one at or before step - Delta; 0 = the starting model) and
        is not inside an earlier guided window, dropping those whose discarded segment would break the
        extra-compute cap."""
        budget = self.rules.max_extra_fraction * self.total_steps - self.extra_steps
        have = sorted(c for c in set(checkpoints) | {0} if c >= self.floor)
        out = []
        for d in grid:
            targets = [c for c in have if c <= step - d]
            if d <= step and targets and step - targets[-1] <= budget:
                out.append(step - targets[-1])
        return list(dict.fromkeys(out))

    def pool_prompts(self, around: int, width: int) -> list[int]:
        """Distinct mistake-pool prompts that failed within `width` steps of step `around`."""
        return list(dict.fromkeys(p for p, s in self.pool if abs(s - around) <= width))

    def decide(self, trigger: Trigger, table: list[dict]) -> Decision:
        """Delta* = argmax S over the table rows (each {'delta', 'Q', 'V', 'S'}), or decline."""
        r = self.rules
        ok = [row for row in table if row["S"] == row["S"] and row["S"] >= r.min_s and row["Q"] >= r.min_q]
        if not table:
            return self._decline(trigger, table, "no candidate look-ahead (checkpoints or compute cap)")
        if not ok:
            return self._decline(trigger, table, f"best S or Q below min_s={r.min_s} / min_q={r.min_q}")
        best = max(ok, key=lambda row: row["S"])
        return Decision(trigger, best["delta"], table, f"argmax S = {best['S']:.4g} at Delta = {best['delta']}")

    def _decline(self, trigger, table, reason) -> Decision:
        self.cooldown_until = trigger.step + self.rules.cooldown
        return Decision(trigger, None, table, reason)

    def record(self, decision: Decision, window_end: int) -> None:
        """Book an intervention that was carried out (its guided window ends at `window_end`)."""
        self.interventions += 1
        self.extra_steps += decision.delta
        self.cooldown_until = decision.trigger.step + self.rules.cooldown
        self.floor = window_end
