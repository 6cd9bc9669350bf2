"""The learning signal S = Q / V of a guide source (docs/METHOD.md section 2), as pure functions.

Given the current policy pi_t and a source (a checkpoint pi_g, or fixed traces):
- F: the prompts whose on-policy group accuracy p_hat is below tau (measured by pi_t).
- Q_hat = |{x in F : the source gives >= 1 verified-correct trajectory in k tries}| / |F|.
- Importance weights of the source's trajectories y under pi_t, in log space:
  token level log w_j = log pi_t(y_j | .) - log pi_g(y_j | .); sequence level log w = sum_j log w_j.
- V_hat: the second moment E[w^2] (reported with the variance E[w^2] - E[w]^2), token and sequence
  level, over the source's *correct* trajectories (`V_correct`, `V_seq`: the spec's definition) and
  over *all* its k samples on F (`V`). **Decisions use `V`, the token-level second moment over all
  samples**, E_y~g[mean_j w_j^2] = 1 + chi^2(pi_t || pi_g) per token: it is 1 when the source is the
  policy itself (so S(0) = Q(0) is finite and comparable, where the variance would be 0 and S
  infinite), it grows with the distance between the two policies, and it matches the per-token ratio
  TRL's loss uses. Restricted to correct samples the weights are biased below 1 (the present policy
  gives less mass to the successes of a stronger source, as our probe measured), which would make a
  *farther* source look *cheaper*; and sequence-level weights explode with length (the probe saw one
  E[w^2] of 203 among values near 1).
- Robust to single outliers: every mean over trajectories is a **median of means** (the trajectories
  split at random into `groups` blocks, the median of the block means): one huge weight moves one
  block, not the estimate. All of it runs in log space (logsumexp), so 200-token sequences with large
  log-prob gaps neither overflow nor give NaN.
- S_hat = Q_hat / V_hat, with percentile bootstrap confidence intervals over the prompts of F.
- The premise of NPO, that a later checkpoint solves more of F than the present policy's own k tries:
  Q_hat(Delta) - Q_hat(0), with a *paired* bootstrap CI (both sources tried on the same prompts of F,
  so the prompts are resampled once for both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from npo.algo.groups import below_gate

LOG0 = float("-inf")


def failed_set(p_hat, tau: float) -> list[int]:
    """Indices of the prompts below the gate (`npo.algo.groups.below_gate`): F."""
    return torch.nonzero(below_gate(torch.as_tensor(p_hat), tau)).flatten().tolist()


def q_hat(found: list[bool]) -> float:
    return sum(found) / len(found) if found else float("nan")


@dataclass
class Trajectory:
    """One trajectory of the source for a prompt of F (verified correct or not)."""

    prompt: int  # index into F
    logp_current: list[float]  # per token, under pi_t
    logp_source: list[float] | None  # per token, under the source; None for traces without log-probs
    correct: bool = True


def log_token_m2(t: Trajectory) -> float:
    """log mean_j w_j^2 for one trajectory (token level)."""
    lw = torch.tensor(t.logp_current, dtype=torch.float64) - torch.tensor(t.logp_source, dtype=torch.float64)
    return float(torch.logsumexp(2 * lw, 0) - math.log(len(lw)))


def log_token_m1(t: Trajectory) -> float:
    lw = torch.tensor(t.logp_current, dtype=torch.float64) - torch.tensor(t.logp_source, dtype=torch.float64)
    return float(torch.logsumexp(lw, 0) - math.log(len(lw)))


def log_seq_w(t: Trajectory) -> float:
    return float(sum(t.logp_current) - sum(t.logp_source))


def log_perplexity(t: Trajectory) -> float:
    """log of the per-token perplexity of the trajectory under pi_t: the V proxy for traces with no
    behaviour log-probs (as if the source were certain of each token, w_j = 1 / pi_t(y_j))."""
    return -sum(t.logp_current) / len(t.logp_current)


def log_median_of_means(log_values: torch.Tensor, groups: int, generator: torch.Generator) -> float:
    """log of the median over `groups` random blocks of the block means of exp(log_values)."""
    n = log_values.numel()
    if n == 0:
        return float("nan")
    g = max(1, min(groups, n))
    perm = torch.randperm(n, generator=generator)
    blocks = torch.tensor_split(log_values[perm], g)
    means = torch.stack([torch.logsumexp(b, 0) - math.log(b.numel()) for b in blocks])
    return float(means.median())


def trajectory_stats(trajs: list[Trajectory]) -> dict[str, torch.Tensor]:
    """Per-trajectory log statistics, computed once (the bootstrap reuses them)."""
    f64 = dict(dtype=torch.float64)
    if trajs and trajs[0].logp_source is None:
        return {"proxy": torch.tensor([log_perplexity(t) for t in trajs], **f64)}
    return {"tok2": torch.tensor([log_token_m2(t) for t in trajs], **f64),
            "tok1": torch.tensor([log_token_m1(t) for t in trajs], **f64),
            "seq": torch.tensor([log_seq_w(t) for t in trajs], **f64),
            "correct": torch.tensor([t.correct for t in trajs], dtype=torch.bool)}


def point_estimate(found: list[bool], stats: dict[str, torch.Tensor], groups: int, generator: torch.Generator) -> dict:
    """Q, V (token and sequence level, second moment and variance) and S for one sample."""
    q = q_hat(found)
    if not stats or next(iter(stats.values())).numel() == 0:
        return {"Q": q, "log_V": float("nan"), "V": float("nan"), "S": float("nan")}
    if "proxy" in stats:  # fixed traces without behaviour log-probs: the stated proxy
        log_v = log_median_of_means(stats["proxy"], groups, generator)
        return {"Q": q, "log_V": log_v, "V": _exp(log_v), "S": _exp(math.log(q) - log_v) if q > 0 else 0.0,
                "V_kind": "proxy: per-token perplexity under pi_t"}
    ok = stats["correct"]
    log_v = log_median_of_means(stats["tok2"], groups, generator)
    log_m1 = log_median_of_means(stats["tok1"], groups, generator)
    log_vc = log_median_of_means(stats["tok2"][ok], groups, generator)
    log_m1c = log_median_of_means(stats["tok1"][ok], groups, generator)
    log_v_seq = log_median_of_means(2 * stats["seq"][ok], groups, generator)
    log_m1_seq = log_median_of_means(stats["seq"][ok], groups, generator)
    return {
        "Q": q,
        "log_V": log_v, "V": _exp(log_v), "V_var": _var(log_v, log_m1),
        "V_correct": _exp(log_vc), "V_correct_var": _var(log_vc, log_m1c),
        "log_V_seq": log_v_seq, "V_seq": _exp(log_v_seq), "V_seq_var": _var(log_v_seq, log_m1_seq),
        "S": _exp(math.log(q) - log_v) if q > 0 else 0.0,
        "V_kind": "token-level second moment, all samples",
    }


def estimate(found: list[bool], trajs: list[Trajectory], *, boot: int = 500, seed: int = 0,
             groups: int = 5, level: float = 0.95) -> dict:
    """Point estimates and percentile bootstrap CIs (prompts of F resampled with replacement)."""
    gen = torch.Generator().manual_seed(seed)
    stats = trajectory_stats(trajs)
    out = point_estimate(found, stats, groups, gen)
    out.update(n_failed=len(found), n_found=sum(found), n_trajectories=len(trajs),
               n_correct=sum(t.correct for t in trajs))
    rows_of: dict[int, list[int]] = {}
    for j, t in enumerate(trajs):
        rows_of.setdefault(t.prompt, []).append(j)
    draws = {"Q": [], "V": [], "S": []}
    n = len(found)
    for _ in range(boot if n else 0):
        pick = torch.randint(n, (n,), generator=gen).tolist()
        rows = torch.tensor([j for i in pick for j in rows_of.get(i, [])], dtype=torch.long)
        est = point_estimate([found[i] for i in pick], {k: v[rows] for k, v in stats.items()}, groups, gen)
        for key in draws:
            if not math.isnan(est[key]):
                draws[key].append(est[key])
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    for key, xs in draws.items():
        out[f"{key}_ci"] = _percentiles(xs, lo, hi)
    return out


def q_gain(found_ref: list[bool], found: list[bool], *, boot: int = 500, seed: int = 0,
           level: float = 0.95) -> dict:
    """Q_hat(source) - Q_hat(reference) on the same prompts of F, with a paired percentile bootstrap CI."""
    if len(found_ref) != len(found):
        raise ValueError("q_gain: both sources must be tried on the same prompts of F")
    n = len(found)
    diff = [float(b) - float(a) for a, b in zip(found_ref, found)]
    gen = torch.Generator().manual_seed(seed)
    draws = [sum(diff[i] for i in torch.randint(n, (n,), generator=gen).tolist()) / n for _ in range(boot if n else 0)]
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return {"dQ": sum(diff) / n if n else float("nan"), "dQ_ci": _percentiles(draws, lo, hi)}


def _percentiles(xs: list[float], lo: float, hi: float) -> list[float] | None:
    if not xs:
        return None
    t = torch.tensor(xs, dtype=torch.float64)
    return [float(torch.quantile(t, lo)), float(torch.quantile(t, hi))]


def _exp(log_x: float) -> float:
    """exp that saturates at the largest float instead of overflowing to inf."""
    return math.exp(min(log_x, 709.0)) if not math.isnan(log_x) else float("nan")


def _var(log_m2: float, log_m1: float) -> float:
    """E[w^2] - E[w]^2 from the logs of both moments (saturating like `_exp`)."""
    return max(_exp(log_m2) - _exp(2 * log_m1), 0.0)
