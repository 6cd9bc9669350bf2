"""Group statistics of GRPO and NPO's gate: pure functions over the flat reward vector of a
generation batch.

A generation batch holds G groups of n consecutive rows (TRL's RepeatSampler layout), so the
rewards of group g are `r[g*n:(g+1)*n]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GateOutcome:
    """One training generation's gate: the step, its prompts below tau, the group-accuracy histogram."""

    step: int
    failed: list[int]  # item indices of the groups below the gate
    histogram: list[float]  # fraction of groups with 0, 1, ..., n correct

    @classmethod
    def of(cls, step: int, on_policy: torch.Tensor, group_items: torch.Tensor, gated: torch.Tensor) -> "GateOutcome":
        """From a generation's (B, G) on-policy rewards, each group's item and the groups below the gate."""
        levels = on_policy.sum(1).long()
        histogram = (torch.bincount(levels, minlength=on_policy.size(1) + 1).float() / levels.numel()).tolist()
        return cls(step, group_items[gated.to(group_items.device)].tolist(), histogram)


def p_hat(rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Group accuracy p_hat(x) = mean_i r_i over each group of n rows.  (G*n,) -> (G,)"""
    if rewards.numel() % n:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {n}")
    return rewards.view(-1, n).float().mean(dim=1)


def below_gate(p: torch.Tensor, tau: float) -> torch.Tensor:
    """(G,) bool: the prompts whose group accuracy p_hat is strictly below the gate tau.

    The one definition of "below the gate": NPO's injection, AutoNPO's mistake pool and the failed
    set F of the S = Q/V estimators all use it. Strict on purpose: with n = 5 and tau = 0.6, a group
    with 3 of 5 right has p_hat = tau exactly and is left alone, as the paper's 'below 0.6' says."""
    return p < tau


def group_stats(rewards: torch.Tensor, n: int) -> dict[str, float]:
    """Per-step signals: mean group accuracy, fraction of all-wrong and of all-right groups."""
    p = p_hat(rewards, n)  # (G,)
    return {
        "signal/group_accuracy": p.mean().item(),
        "signal/all_wrong_frac": (p == 0).float().mean().item(),
        "signal/all_right_frac": (p == 1).float().mean().item(),
    }
