"""AutoNPO's controller (docs/METHOD.md section 4) as a pure state machine: no model, no trainer.

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
- only on checkpoint steps (`every`), so that the candidate rollback targets are checkpoints;
- never inside a guided window (nor at its last step: no rollback target would lie after it),
  never inside `cooldown` steps after an intervention (or a declined trigger), never beyond
  `max_interventions`, never when the intervention would push the extra optimizer steps (the
  discarded segments) beyond `max_extra_fraction` x the run's steps.

State is a plain record (`ControllerState`), saved with every checkpoint of the final trajectory, in
two parts that a rollback to step t treats differently:
- `Seen`, what the controller has observed of the trajectory (EMAs, entropy peak, reward history,
  mistake pool), is restored to its value at t. The steps after t are no longer on the trajectory the
  policy continues from: EMAs that kept them would judge the retrained steps against a future that was
  undone (after a rollback the reward EMA would start near pi_T's reward, not pi_t's), and the pool
  would hold (prompt, step) pairs whose steps are about to be lived again.
- `Made`, its own decisions (interventions made, extra steps spent, cooldown, the rollback floor,
  whether the early trigger fired), is not rolled back: the compute was spent and the guided window
  exists, whatever trajectory follows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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

    @classmethod
    def from_json(cls, data: dict) -> "Decision":
        return cls(**{**data, "trigger": Trigger(**data["trigger"])})


@dataclass
class Seen:
    """What the controller has observed of the trajectory up to a step: restored on rollback."""

    reward_ema: float | None = None
    entropy_ema: float | None = None
    entropy_peak: float | None = None  # running peak of the entropy EMA
    reward_history: list[float] = field(default_factory=list)  # reward EMA, last stagnation_window + 1 steps
    pool: list[list[int]] = field(default_factory=list)  # mistake pool: [prompt, step failed], oldest first


@dataclass
class Made:
    """The controller's own decisions so far: they stand after a rollback."""

    cooldown_until: int = -1
    interventions: int = 0
    extra_steps: int = 0  # discarded optimizer steps spent on interventions
    bootstrapped: bool = False  # the early trigger fires at most once
    floor: int = 0  # no rollback before the end of the last guided window (it would undo it)


@dataclass
class ControllerState:
    seen: Seen = field(default_factory=Seen)
    made: Made = field(default_factory=Made)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ControllerState":
        return cls(Seen(**data["seen"]), Made(**data["made"]))


class Controller:
    def __init__(self, rules, total_steps: int, state: ControllerState | None = None, every: int = 1):
        """`rules`: an `npo.config.run.AutoNPOConfig` (every threshold, window, decay and cap). `every`: the
        checkpoint spacing; triggers fire only on checkpoint steps, so that with candidate look-aheads
        that are multiples of it (a config rule), every rollback target T - Delta is a checkpoint and
        the Delta measured is the Delta used."""
        self.rules, self.total_steps, self.every = rules, total_steps, every
        self.state = state or ControllerState()

    def rollback(self, seen: Seen) -> None:
        """Back to what was seen at the rollback target (its checkpoint's record); decisions stand."""
        self.state.seen = seen

    # ------------------------------------------------------------------ signals
    def observe(self, rec: StepRecord) -> Trigger | None:
        r, s = self.rules, self.state.seen
        s.reward_ema = rec.reward if s.reward_ema is None else r.ema * s.reward_ema + (1 - r.ema) * rec.reward
        s.entropy_ema = rec.entropy if s.entropy_ema is None else r.ema * s.entropy_ema + (1 - r.ema) * rec.entropy
        s.entropy_peak = s.entropy_ema if s.entropy_peak is None else max(s.entropy_peak, s.entropy_ema)
        s.reward_history.append(s.reward_ema)
        del s.reward_history[:-(r.stagnation_window + 1)]
        s.pool.extend([prompt, rec.step] for prompt in rec.failed)
        drop = 0  # the oldest entries, beyond the size cap or older than pool_age
        while drop < len(s.pool) and (len(s.pool) - drop > r.pool_size or s.pool[drop][1] < rec.step - r.pool_age):
            drop += 1
        del s.pool[:drop]
        return self._trigger(rec.step)

    def _trigger(self, step: int) -> Trigger | None:
        r, s, made = self.rules, self.state.seen, self.state.made
        if step < made.cooldown_until or made.interventions >= r.max_interventions or step <= made.floor:
            return None  # cooling down, capped, or not past the last guided window (no rollback target yet)
        if step % self.every:
            return None  # not a checkpoint step
        signals = {"reward_ema": s.reward_ema, "entropy_ema": s.entropy_ema, "entropy_peak": s.entropy_peak}
        if not made.bootstrapped and step >= r.warmup_steps and s.reward_ema < r.r_low:
            made.bootstrapped = True
            return Trigger("bootstrap", step, {**signals, "r_low": r.r_low})
        if len(s.reward_history) > r.stagnation_window:
            gain = s.reward_history[-1] - s.reward_history[0]
            collapsed = s.entropy_ema < r.entropy_fraction * s.entropy_peak
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
        made = self.state.made
        budget = self.rules.max_extra_fraction * self.total_steps - made.extra_steps
        have = sorted(c for c in set(checkpoints) | {0} if c >= made.floor)
        out = []
        for d in grid:
            targets = [c for c in have if c <= step - d]
            if d <= step and targets and step - targets[-1] <= budget:
                out.append(step - targets[-1])
        return list(dict.fromkeys(out))

    def pool_prompts(self, around: int, width: int) -> list[int]:
        """Distinct mistake-pool prompts that failed within `width` steps of step `around`."""
        return list(dict.fromkeys(p for p, s in self.state.seen.pool if abs(s - around) <= width))

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
        self.state.made.cooldown_until = trigger.step + self.rules.cooldown
        return Decision(trigger, None, table, reason)

    def record(self, decision: Decision, window_end: int) -> None:
        """Book an intervention that was carried out (its guided window ends at `window_end`)."""
        made = self.state.made
        made.interventions += 1
        made.extra_steps += decision.delta
        made.cooldown_until = decision.trigger.step + self.rules.cooldown
        made.floor = window_end
