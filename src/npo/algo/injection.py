"""NPO's gate and guide injection as pure functions (docs/METHOD.md section 3).

Layout: a generation batch holds G groups of n consecutive rows (TRL's RepeatSampler), and process p
of P holds the global rows [p*L, (p+1)*L), L = G*n/P, so a group may straddle two processes. The gate
therefore runs on the *gathered* rewards; each process then replaces only the rows it holds.

Symbols: tau = the gate, p_hat = group accuracy, c = importance-weight cap, gamma = LUFFY's shaping
constant, n = TRL's group size, G = the on-policy samples a group keeps (n, or n - M with `fill: add`),
M = guides per guided group (`slots`).

The injection rules are data (npo.config.run.NPOSection): which groups (`guided_groups`: gated by tau or
all, every group or only replayed ones), which of their rows (`slot_rows`: replace the last M of n, or
fill the M rows appended after G), and the loss on them (`guide_token_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from npo.algo.groups import below_gate


def guided_groups(p_hat_on: torch.Tensor, tau: float, gated: bool, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """(G,) bool: the groups a guide may enter. `gated`: only those with p_hat < tau [paper]; else every
    group (LUFFY, RLEP). `eligible`: a further mask (ExGRPO: only the groups of replayed questions)."""
    out = below_gate(p_hat_on, tau) if gated else torch.ones_like(p_hat_on, dtype=torch.bool)
    return out if eligible is None else out & eligible


def slot_rows(group: int, m: int, n: int, kept: int, fill: str, slot: int = -1) -> list[int]:
    """The global rows of `group` that its m guides overwrite. replace: slots slot, slot - 1, ... of the
    n on-policy ones (-1: the last, the paper's n-th); add: the rows kept, kept + 1, ... that TRL
    generated past the G = `kept` the group keeps."""
    if fill == "add":
        if kept + m > n:
            raise ValueError(f"{m} added guides do not fit a group of {n} keeping {kept}")
        return [group * n + kept + j for j in range(m)]
    if not -n <= slot < n or m >= n:
        raise ValueError(f"replace_slot {slot} with {m} guides does not fit a group of {n}")
    return [group * n + (slot - j) % n for j in range(m)]


def local_rows(global_rows: list[int], process_index: int, rows_per_process: int) -> list[tuple[int, int]]:
    """(position in `global_rows`, index into this process's lists) for each of the rows this process
    holds: a group can straddle two processes, and each overwrites only its own rows."""
    lo = process_index * rows_per_process
    return [(i, r - lo) for i, r in enumerate(global_rows) if lo <= r < lo + rows_per_process]


@dataclass
class Trajectory:
    """One verified-correct answer for one prompt: what the guide bank keeps and what replaces a slot
    of a group. `logps`: per token under its source at the source's temperature (None for fixed
    traces, or a source with another tokenizer)."""

    token_ids: list[int]
    text: str
    source: str = ""  # the source's name: a checkpoint folder, "self", "teacher:PATH"
    source_step: int | None = None
    logps: list[float] | None = None


def inject(completion_ids: list, completions: list, sampling_logps: list | None,
           rows: list[int], guides: list[Trajectory]) -> tuple[list, list, list | None, list[bool]]:
    """Overwrite local rows with guides. Returns new lists and the per-row guide flag.

    With vLLM, TRL reweights every row by pi_theta / pi_vllm using the sampling log-probs; a guide was
    not sampled by vLLM, so its sampling log-probs are NaN, which TRL maps to an IS ratio of exactly 1
    (the guide row is not distorted by the correction)."""
    completion_ids, completions = list(completion_ids), list(completions)
    sampling_logps = None if sampling_logps is None else list(sampling_logps)
    flags = [False] * len(completion_ids)
    for row, guide in zip(rows, guides):
        completion_ids[row] = list(guide.token_ids)
        completions[row] = _like(completions[row], guide.text)
        if sampling_logps is not None:
            sampling_logps[row] = [float("nan")] * len(guide.token_ids)
        flags[row] = True
    return completion_ids, completions, sampling_logps, flags


def _like(original, text: str):
    """The guide's text in the same shape TRL used for the original (string or message list)."""
    if isinstance(original, list):
        return [{"role": "assistant", "content": text}]
    return text


# ----------------------------------------------------------------------------- guide_loss


def importance_weights(logp_policy: torch.Tensor, logp_guide: torch.Tensor, c: float) -> torch.Tensor:
    """Truncated per-token importance weight min(pi_theta / pi_guide, c), computed in log space."""
    log_w = (logp_policy - logp_guide).clamp(max=float(torch.log(torch.tensor(c))))
    return torch.exp(log_w)


def shaped(log_x: torch.Tensor, gamma: float) -> torch.Tensor:
    """The gradient weight of the loss -A f(x), f(x) = x / (x + gamma), x = exp(log_x):

    d f(x) = gamma / (x + gamma)^2 dx = [gamma x / (x + gamma)^2] d log x, so f multiplies the gradient
    -A d log pi of a token by gamma x / (x + gamma)^2 = sigmoid(a) sigmoid(-a), a = log x - log gamma
    (the product form cannot overflow; no clipping). The weight peaks at x = gamma."""
    a = log_x - torch.log(torch.tensor(gamma, dtype=log_x.dtype))
    return torch.sigmoid(a) * torch.sigmoid(-a)


def shaping_weights(logp_policy: torch.Tensor, gamma: float) -> torch.Tensor:
    """LUFFY's policy shaping f(p) = p / (p + gamma) on p = pi_theta(token) (the teacher's probability
    taken as 1): low-probability tokens of the guide weigh more than the ones the policy already predicts."""
    return shaped(logp_policy, gamma)


def shaped_importance_weights(logp_policy: torch.Tensor, logp_behaviour: torch.Tensor, gamma: float) -> torch.Tensor:
    """ExGRPO's f(w) = w / (w + gamma) on the importance ratio w = pi_theta / pi_behaviour, the
    behaviour log-probs recorded when the replayed success was sampled."""
    return shaped(logp_policy - logp_behaviour, gamma)


@dataclass(frozen=True)
class GuideLoss:
    """A loss on guide rows (`npo.guide_loss`): its per-token weights (logp_policy, logp_guide, c, gamma)
    -> (R, T), and whether it needs the guide's log-probs under its source."""

    name: str
    needs_logps: bool
    weights: Callable[[torch.Tensor, torch.Tensor | None, float, float], torch.Tensor]


# The open set of guide losses (the config's choices, the trainer's, in this order). A new loss is a line here.
GUIDE_LOSSES = {loss.name: loss for loss in (
    GuideLoss("on_policy", False, lambda lp, lg, c, gamma: torch.ones_like(lp)),  # [paper]
    GuideLoss("importance", True, lambda lp, lg, c, gamma: importance_weights(lp, lg, c)),
    GuideLoss("shaping", False, lambda lp, lg, c, gamma: shaping_weights(lp, gamma)),  # LUFFY
    GuideLoss("shaped_importance", True, lambda lp, lg, c, gamma: shaped_importance_weights(lp, lg, gamma)),  # ExGRPO
)}


def guide_token_weights(kind: str, logp_policy: torch.Tensor, logp_guide: torch.Tensor | None,
                        c: float, gamma: float) -> torch.Tensor:
    """(R, T) detached weights for the R guide rows; all ones for `on_policy`."""
    if kind not in GUIDE_LOSSES:
        raise ValueError(f"unknown guide_loss {kind!r}")
    if GUIDE_LOSSES[kind].needs_logps and logp_guide is None:
        raise ValueError(f"guide_loss {kind!r} needs the guide's log-probs")
    return GUIDE_LOSSES[kind].weights(logp_policy, logp_guide, c, gamma)


def weighted_advantages(advantages: torch.Tensor, flags: torch.Tensor, weights: torch.Tensor,
                        width: int) -> torch.Tensor:
    """(B,) advantages -> (B, T) with the guide rows' tokens scaled by `weights` (R, T).

    TRL's `_compute_loss` accepts (B, T) advantages. With one PPO update per generation batch the
    ratio is 1 and the clip inactive, so each guide token's gradient is exactly w * (-A d log p)."""
    out = advantages.unsqueeze(1).expand(-1, width).clone()
    out[flags] = out[flags] * weights.to(out.dtype)
    return out
