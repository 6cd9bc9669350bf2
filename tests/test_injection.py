"""NPO's gate and injection on constructed groups (pure functions, no model)."""

import math

import pytest
import torch
from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

from npo.algo.groups import p_hat
from npo.algo.injection import (
    Trajectory,
    guide_token_weights,
    guided_groups,
    importance_weights,
    inject,
    local_rows,
    shaping_weights,
    slot_rows,
    weighted_advantages,
)

R = lambda *xs: torch.tensor(xs, dtype=torch.float)  # noqa: E731


def gate(rewards: torch.Tensor, n: int, tau: float) -> torch.Tensor:
    """The groups NPO's trainer lets a guide enter (`guided_groups` over p_hat, gated as the paper)."""
    return guided_groups(p_hat(rewards, n), tau, gated=True)


def rows_to_overwrite(gated: torch.Tensor, has_guide: torch.Tensor, n: int, slot: int) -> list[int]:
    """What `GuidedGRPOTrainer._inject` overwrites with one guide per chosen group that has one."""
    return [r for g in torch.nonzero(gated).flatten().tolist() if has_guide[g]
            for r in slot_rows(g, 1, n, n, "replace", slot)]


def test_gate_is_strictly_below_tau():
    # groups of 5: p_hat = 0, 0.4, 0.6 (= tau exactly: not gated), 0.8, 1.0
    rewards = R(0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1)
    assert gate(rewards, 5, 0.6).tolist() == [True, True, False, False, False]


def test_ungated_rules_and_eligible_groups():
    p = torch.tensor([0.0, 0.5, 1.0])
    assert guided_groups(p, 0.6, gated=False).tolist() == [True, True, True]  # LUFFY, RLEP: every group
    eligible = torch.tensor([False, True, True])  # ExGRPO: only the replayed questions' groups
    assert guided_groups(p, 0.6, gated=True, eligible=eligible).tolist() == [False, True, False]


def test_all_correct_group_is_untouched():
    rewards = R(1, 1, 1, 1)
    rows = rows_to_overwrite(gate(rewards, 4, 0.6), torch.tensor([True]), 4, -1)
    assert rows == []
    ids, texts, _, flags = inject([[1], [2], [3], [4]], ["a", "b", "c", "d"], None, rows, [])
    assert ids == [[1], [2], [3], [4]] and texts == ["a", "b", "c", "d"] and not any(flags)


def test_no_guide_means_no_change():
    rewards = R(0, 0, 0, 0, 0, 1, 0, 0)
    gated = gate(rewards, 4, 0.6)
    assert gated.tolist() == [True, True]
    assert rows_to_overwrite(gated, torch.tensor([False, False]), 4, -1) == []


def test_replaces_the_configured_slot_of_gated_groups_with_a_guide():
    rewards = R(0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 0)  # gated, not gated, gated
    gated = gate(rewards, 4, 0.6)
    has = torch.tensor([True, True, False])
    assert rows_to_overwrite(gated, has, 4, -1) == [3]  # the n-th slot of group 0
    assert rows_to_overwrite(gated, torch.tensor([True, True, True]), 4, 0) == [0, 8]
    assert rows_to_overwrite(gated, torch.tensor([True, True, True]), 4, -2) == [2, 10]
    with pytest.raises(ValueError):
        rows_to_overwrite(gated, has, 4, 4)


def test_several_guides_and_added_slots():
    assert slot_rows(1, 2, 4, 4, "replace") == [7, 6]  # the last two slots of group 1
    assert slot_rows(1, 2, 6, 4, "add") == [10, 11]  # past the 4 kept of a group TRL generated as 6
    with pytest.raises(ValueError):
        slot_rows(0, 4, 4, 4, "replace")  # a group of guides only


def test_n_equals_two():
    rewards = R(0, 0, 1, 0, 1, 1)  # p_hat 0, 0.5, 1
    gated = gate(rewards, 2, 0.6)
    assert gated.tolist() == [True, True, False]
    rows = rows_to_overwrite(gated, torch.tensor([True, True, True]), 2, -1)
    assert rows == [1, 3]
    guide = Trajectory([7, 2], "7", logps=[-0.1, -0.2])
    ids, texts, logps, flags = inject([[5, 2]] * 6, ["5"] * 6, [[-1.0, -1.0]] * 6, rows, [guide, guide])
    assert flags == [False, True, False, True, False, False]
    assert ids[1] == [7, 2] and texts[3] == "7" and ids[0] == [5, 2]
    assert all(math.isnan(x) for x in logps[1]) and logps[0] == [-1.0, -1.0]  # vLLM IS ratio -> 1


def test_local_rows_when_a_group_straddles_two_processes():
    # 3 groups of 4 over 2 processes of 6 rows: group 1 = rows 4..7 straddles both
    rows = [3, 4, 7]
    assert local_rows(rows, 0, 6) == [(0, 3), (1, 4)]
    assert local_rows(rows, 1, 6) == [(2, 1)]


def test_message_list_completions_keep_their_shape():
    ids, texts, _, _ = inject([[1]], [[{"role": "assistant", "content": "x"}]], None, [0], [Trajectory([9], "y")])
    assert texts == [[{"role": "assistant", "content": "y"}]]


def test_flag_survives_trl_shuffle_and_split():
    torch.manual_seed(0)
    b, t = 12, 5
    completion_ids = torch.arange(b * t).view(b, t)
    flags = torch.zeros(b, dtype=torch.bool)
    flags[[3, 7, 11]] = True
    batch = {"completion_ids": completion_ids, "advantages": torch.randn(b), "npo_guide": flags,
             "num_items_in_batch": torch.tensor(60)}
    chunks = split_tensor_dict(shuffle_sequence_dict(batch), 3)
    seen = torch.cat([c["completion_ids"][c["npo_guide"]][:, 0] // t for c in chunks]).sort().values
    assert seen.tolist() == [3, 7, 11]
    assert all(c["npo_guide"].shape == (4,) for c in chunks)


def test_importance_weight_is_truncated_ratio():
    lp = torch.log(torch.tensor([[0.5, 0.9, 0.01]]))
    lg = torch.log(torch.tensor([[0.25, 0.9, 0.5]]))
    w = importance_weights(lp, lg, c=1.5)
    assert torch.allclose(w, torch.tensor([[1.5, 1.0, 0.02]]), atol=1e-6)


def test_shaping_weight_is_luffy_derivative():
    p = torch.tensor([[0.1, 0.5, 1.0]])
    w = shaping_weights(p.log(), gamma=0.1)
    expected = torch.tensor([[0.1 * 0.1 / 0.2 ** 2, 0.1 * 0.5 / 0.6 ** 2, 0.1 / 1.1 ** 2]])
    assert torch.allclose(w, expected)
    # it is d f(p) / d log p for f(p) = p / (p + gamma)
    x = p.log().clone().requires_grad_(True)
    f = x.exp() / (x.exp() + 0.1)
    f.sum().backward()
    assert torch.allclose(x.grad, w)


def test_no_overflow_with_large_log_prob_gaps():
    lp = torch.full((1, 200), -50.0)
    lg = torch.full((1, 200), -0.01)
    assert torch.isfinite(guide_token_weights("importance", lp, lg, 2.0, 0.1)).all()
    assert torch.isfinite(guide_token_weights("importance", lg, lp, 2.0, 0.1)).all()
    assert torch.isfinite(guide_token_weights("shaping", lp, None, 2.0, 0.1)).all()
    assert guide_token_weights("on_policy", lp, None, 2.0, 0.1).eq(1).all()


def test_weighted_advantages_touch_only_flagged_rows():
    adv = torch.tensor([1.0, -0.5, 2.0])
    flags = torch.tensor([False, True, False])
    out = weighted_advantages(adv, flags, torch.tensor([[0.5, 2.0]]), width=2)
    assert out.tolist() == [[1.0, 1.0], [-0.25, -1.0], [2.0, 2.0]]
