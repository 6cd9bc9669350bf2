"""The methods' config sections (npo.config.run.RunConfig holds them): NPO's gate, guide source, injection
rules and interventions; the replay buffer of source `replay`; AutoNPO's controller. Documented and
range-checked like every field (`doc(help, check=...)`, `[paper]` / `[ours]` / a baseline's tag)."""

from __future__ import annotations

from dataclasses import dataclass

from npo.algo.injection import GUIDE_LOSSES as LOSSES
from npo.config.checks import NON_NEGATIVE, POSITIVE, ArmSpecs, OneOf, PositiveInts, Range, SourceSpec, doc

GUIDE_MODES = ("ahead", "on_demand")
GUIDE_LOSSES = tuple(LOSSES)  # npo.algo.injection.GUIDE_LOSSES


@dataclass
class NPOSection:
    """Near-Future Policy Optimization (method: npo). Symbols as in docs/METHOD.md."""

    interventions: list = doc(
        "The interventions, in order: {kind: bootstrap, lookahead: Delta} (scout 0 -> Delta, restart at "
        "0 guided by the scout) and {kind: plateau, at_step: t, lookahead: Delta, window: W} (train on to "
        "t + Delta, roll back to t, retrain W steps guided; at_step may be 'auto-plateau'). W defaults "
        "to Delta. [paper: the two manual interventions]",
        default_factory=list,
    )
    tau: float = doc("Gate tau: a group is guided when its on-policy accuracy p_hat < tau. [paper: 0.6]",
                     default=0.6, check=Range(0, 1, lo_open=True))
    replace_slot: int = doc("Which slot of a gated group the guide replaces (-1: the last). [paper: the n-th]",
                            default=-1)
    source: str = doc("Guide source: near_future (the run's checkpoint Delta steps ahead) [paper], self (the "
                      "current policy, Delta = 0: the control), replay (the run's own past successes, ExGRPO), "
                      "teacher:PATH (fixed traces, JSONL {question, completion}), teacher:reference (the task's "
                      "reference answers as traces: a perfect teacher), teacher_model:PATH (a local model folder "
                      "that writes traces), checkpoint:PATH (a finished run's policy), pool:PATH (verified "
                      "successes of a finished run, `npo pool`, RLEP). docs/baselines.md \"Guide sources\".",
                      default="near_future", check=SourceSpec())
    k: int = doc("Guide tries per prompt: the source samples up to k completions and keeps the first "
                 "verified-correct ones. [ours: small, so Q measures the guide, not resampling luck]",
                 default=4, check=POSITIVE)
    guide_mode: str = doc(f"When near-future guides are made, one of {', '.join(GUIDE_MODES)}: at the end of the "
                          "look-ahead, the live policy writes the bank for every prompt of the window (known from "
                          "the data order) before the rollback replaces it. on_demand (for gated prompts as they "
                          "come) would keep a second copy of the model alive through the window and is refused for "
                          "near_future; every other source is asked on demand. [ours]",
                          default="ahead", check=OneOf(GUIDE_MODES))
    inject_when: str = doc("When guides are injected: windows (inside the interventions' windows) [paper], or "
                           "always (every step of the run, no interventions: LUFFY, ExGRPO, RLEP).",
                           default="windows", check=OneOf(("windows", "always")))
    gated: bool = doc("Inject only into groups with p_hat < tau [paper]; false: into every group (LUFFY, "
                      "RLEP).", default=True)
    start_solve_rate: float = doc("No injection (and no replayed prompts) until a step's on-policy solve rate "
                                  "(its mean reward) exceeds this; from the next step on it stays on. [ExGRPO: "
                                  "0.35; 0: from the start]", default=0.0, check=Range(0, 1))
    fill: str = doc("How guides enter a group: replace (the last `slots` of the n on-policy slots) [paper], or "
                    "add (the group grows to n + slots: TRL generates n + slots and the last `slots` are "
                    "overwritten, docs/baselines.md \"Injection rules\") [RLEP].", default="replace",
                    check=OneOf(("replace", "add")))
    slots: int = doc("Guides per guided group (M). [paper: 1; RLEP: 2]", default=1, check=POSITIVE)
    targets: str = doc("Which groups may be guided: batch (the step's prompts) or replayed (only the prompts "
                       "drawn from the replay buffer, replay.share of the batch: ExGRPO).", default="batch",
                       check=OneOf(("batch", "replayed")))
    guide_temperature: float = doc("Sampling temperature of the guide source. [ours]", default=1.0, check=POSITIVE)
    guide_loss: str = doc(f"Loss on guide rows, one of {', '.join(GUIDE_LOSSES)}: as if on-policy (no "
                          "importance weight) [paper, RLEP], min(pi_theta / pi_guide, c) per token, LUFFY's "
                          "f(p) = p / (p + gamma) (the teacher's probability taken as 1), or ExGRPO's "
                          "f(w) = w / (w + gamma) on w = pi_theta / pi_behaviour (the log-probs recorded with "
                          "the guide); neither f is clipped.", default="on_policy", check=OneOf(GUIDE_LOSSES))
    importance_cap: float = doc("c: truncation of the importance weight of guide_loss importance. [ours]",
                                default=2.0, check=POSITIVE)
    shaping_gamma: float = doc("gamma of guide_loss shaping and shaped_importance. [LUFFY, ExGRPO: 0.1]",
                               default=0.1, check=POSITIVE)
    plateau_window: int = doc("auto-plateau: a plateau is when the mean reward of the last plateau_window "
                              "steps beats the window before by less than plateau_min_gain. [ours]",
                              default=50, check=POSITIVE)
    plateau_min_gain: float = doc("auto-plateau: see plateau_window. [ours]", default=0.01)
    plateau_min_step: int = doc("auto-plateau: no plateau is declared before this step. [ours]",
                                default=100, check=NON_NEGATIVE)
    controls: float = doc("Randomized controls: in every guided window, this share of the gated prompts that have "
                          "a guide keep their on-policy group instead (a coin of the seed, the intervention and the "
                          "prompt); after the window every assigned prompt is sampled effect_k times, and events.jsonl "
                          "gets the guide's effect on the prompts it was given to (`npo effect`). 0: none, the run is "
                          "unchanged. docs/methods.md \"Controls\". [ours]", default=0.0, check=Range(0, 1, hi_open=True))
    arms: list = doc("Several guide sources in one window, with npo.controls: each gated prompt's guide is asked "
                     "from one arm, drawn by a coin of the prompt, and each arm has its own controls (its effect "
                     "in events.jsonl, `npo effect`). Sources as npo.source; near_future:DELTA is the run's own "
                     "look-ahead checkpoint DELTA steps ahead (at most the intervention's lookahead, on a "
                     "checkpoint; near_future alone: the lookahead). Empty: the one arm is npo.source. "
                     "docs/methods.md \"Controls\". [ours]", default_factory=list, check=ArmSpecs())
    effect_k: int = doc("Samples per assigned prompt when the effect of a window's guides is measured (npo.controls). "
                        "[ours]", default=8, check=POSITIVE)
    effect_at_end: bool = doc("npo.controls: also measure every window's effect again at the run's end, with the "
                              "final policy (one more effect line per window that ended before the run did): whether "
                              "what a guide did to its prompt lasts. [ours]", default=False)

    def arms_error(self, method: str, checkpoint_every: int) -> tuple[str, str] | None:
        """(field, why) when npo.arms does not fit the rest of the config."""
        if not self.arms:
            return None
        ahead = [a for a in self.arms if a.partition(":")[0] == "near_future"]
        if self.controls == 0:
            return "npo.arms", "arms are compared through their controls: set npo.controls > 0"
        if method != "npo":
            return "npo.arms", f"only method npo's windows have arms (method is {method})"
        if ahead and (self.source != "near_future" or self.inject_when != "windows"):
            return "npo.arms", "near_future arms read the run's look-aheads: they need npo.source near_future"
        if "replay" in self.arms and self.source != "replay":
            return "npo.arms", "a replay arm draws on the run's replay buffer: it needs npo.source replay"
        for i, iv in enumerate(x for x in self.interventions if isinstance(x, dict)):  # (their shape: checked after)
            at, delta = iv.get("at_step", 0), iv.get("lookahead")
            for a in ahead:
                d = int(a.partition(":")[2] or delta or 0)
                if not (isinstance(at, int) and isinstance(delta, int) and d <= delta
                        and (d == delta or (at + d) % checkpoint_every == 0)):
                    return (f"npo.arms ({a})", f"Delta {d} must be at most npo.interventions[{i}].lookahead "
                            f"({delta}), at a fixed step, and below it land on a look-ahead checkpoint (at_step + "
                            f"Delta a multiple of train.checkpoint_every, {checkpoint_every})")
        return None


@dataclass
class ReplayConfig:
    """The replay buffer of source `replay` (ExGRPO): the run's own verified successes, collected from
    the on-policy groups with 0 < correct < n, kept with their text, token ids, behaviour log-probs,
    step and mean token entropy. Saved with every checkpoint: a rollback or resume restores it."""

    share: float = doc("Share of each step's prompts replaced by questions drawn from the buffer (their "
                       "groups get one replayed success). [ExGRPO: 0.5]", default=0.0, check=Range(0, 1))
    prefer: str = doc("How questions are drawn: medium (weight exp(-(acc - 0.5)^2 / (2 sigma^2)) on each "
                      "question's latest group accuracy acc: medium difficulty first) [ExGRPO], or uniform.",
                      default="medium", check=OneOf(("medium", "uniform")))
    sigma: float = doc("sigma of prefer medium. [ours: ExGRPO's bucket weights are Gaussian; their width is not "
                       "in the dossier]", default=0.2, check=POSITIVE)
    select: str = doc("Which stored success of a question is replayed: lowest_entropy [ExGRPO], latest, or "
                      "random.", default="lowest_entropy", check=OneOf(("lowest_entropy", "latest", "random")))
    retire_solved: bool = doc("A question whose latest on-policy group is all correct leaves the buffer. "
                              "[ExGRPO]", default=True)
    per_question: int = doc("Successes kept per question (the newest). [ours]", default=4, check=POSITIVE)


@dataclass
class AutoNPOConfig:
    """AutoNPO (method: autonpo): when to intervene and how far to look ahead (npo.algo.controller.Controller).
    Gate, guide source settings and guide_loss come from the npo section."""

    deltas: list = doc("Candidate look-aheads Delta, multiples of train.checkpoint_every (triggers fire on "
                       "checkpoint steps, so T - Delta is a checkpoint); Delta* = argmax S among them. [ours]",
                       default_factory=lambda: [20, 40, 80], check=PositiveInts())
    window: int = doc("W: guided steps after the rollback to T - Delta*. [ours]", default=40, check=POSITIVE)
    ema: float = doc("EMA decay of the reward and entropy signals. [ours]",
                     default=0.9, check=Range(0, 1, hi_open=True))
    warmup_steps: int = doc("Early trigger: not before this step. [ours]", default=30, check=POSITIVE)
    r_low: float = doc("Early trigger (bootstrapping): reward EMA below this after warmup_steps: most groups "
                       "all wrong. [ours; the tiny default starts at 0.26 and does not fire it]", default=0.2)
    stagnation_window: int = doc("Late trigger: the reward EMA gained < stagnation_eps over this many steps "
                                 "and the entropy EMA is below entropy_fraction x its running peak. [ours, "
                                 "measured: on tiny-grpo's 3 seeds (50, 0.01, 0.7) first fire at steps 123, 205, "
                                 "173, inside the reward plateau of steps 100-300; 0.9 fires at 51-98, while the "
                                 "reward still climbs]", default=50, check=POSITIVE)
    stagnation_eps: float = doc("Late trigger: see stagnation_window. [ours]", default=0.01)
    entropy_fraction: float = doc("Late trigger: see stagnation_window (rho). [ours]",
                                  default=0.7, check=Range(0, 1, lo_open=True))
    cooldown: int = doc("Steps after a trigger (carried out or declined) with no new trigger. [ours]",
                        default=50, check=NON_NEGATIVE)
    max_interventions: int = doc("Cap on interventions per run. [ours]", default=2, check=POSITIVE)
    max_extra_fraction: float = doc("Cap on discarded optimizer steps, as a fraction of train.steps. [ours]",
                                    default=0.5, check=NON_NEGATIVE)
    min_s: float = doc("Decline when the best candidate's S is below this. [ours]", default=0.0)
    min_q: float = doc("Decline when the best candidate's Q is below this. [ours]", default=0.0)
    pool_size: int = doc("Mistake pool: at most this many (prompt, step) entries. [ours]",
                         default=1024, check=POSITIVE)
    pool_age: int = doc("Mistake pool: entries older than this many steps age out. [ours]",
                        default=200, check=POSITIVE)
    pool_width: int = doc("Q, V, S of a candidate use the pool prompts failed within this many steps of "
                          "T - Delta. [ours]", default=20, check=NON_NEGATIVE)
    signal_prompts: int = doc("At most this many pool prompts per candidate measurement. [ours]",
                              default=64, check=POSITIVE)
    signal_k: int = doc("Tries per prompt when measuring Q of the source pi_T. [ours]", default=8, check=POSITIVE)
