"""S = Q / V estimators against hand-computed cases."""

import math

import pytest

from npo.algo.estimators import Trajectory, estimate, failed_set, q_hat

L2 = math.log(2.0)


def traj(cur, src, prompt=0):
    return Trajectory(prompt, list(cur), None if src is None else list(src))


def test_failed_set_and_q():
    assert failed_set([0.5, 0.6, 0.7, 0.0], 0.6) == [0, 3]
    assert q_hat([True, False, True, False]) == 0.5
    assert math.isnan(q_hat([]))


def test_source_equal_to_policy_has_unit_second_moment():
    trajs = [traj([-0.3, -1.2], [-0.3, -1.2], p) for p in range(3)]
    e = estimate([True, True, True, False], trajs, boot=50)
    assert e["Q"] == 0.75 and e["V"] == pytest.approx(1.0) and e["V_var"] == pytest.approx(0.0, abs=1e-12)
    assert e["V_seq"] == pytest.approx(1.0) and e["S"] == pytest.approx(0.75)


def test_known_log_probs_give_known_moments():
    # one trajectory, token log-weights [log 2, 0]: token E[w^2] = (4 + 1) / 2, E[w] = 1.5; sequence w = 2
    e = estimate([True, False], [traj([L2 - 1.0, -0.5], [-1.0, -0.5])], boot=20)
    assert e["V"] == pytest.approx(2.5) and e["V_var"] == pytest.approx(0.25)
    assert e["V_seq"] == pytest.approx(4.0) and e["V_seq_var"] == pytest.approx(0.0, abs=1e-9)
    assert e["S"] == pytest.approx(0.5 / 2.5)


def test_one_outlier_does_not_move_the_median_of_means():
    trajs = [traj([0.0], [0.0], p) for p in range(19)] + [traj([10.0], [0.0], 19)]  # one w = e^10
    e = estimate([True] * 20, trajs, boot=0)
    assert e["V"] == pytest.approx(1.0)  # a plain mean would give (19 + e^20) / 20 ~ 2.4e7
    assert e["V_seq"] == pytest.approx(1.0)


def test_no_overflow_or_nan_for_long_sequences_with_large_gaps():
    cur = [-0.01] * 200
    far = [-40.0] * 200  # the source finds the policy's tokens very unlikely: sequence log w = +7998
    e = estimate([True, True], [traj(cur, far, 0), traj(far, cur, 1)], boot=30)
    for key in ("Q", "V", "V_var", "V_seq", "V_seq_var", "S", "log_V", "log_V_seq"):
        assert not math.isnan(e[key]) and not math.isinf(e[key]), key
    assert abs(e["log_V_seq"]) > 7000  # exact in log space (saturated in linear space)


def test_traces_without_log_probs_use_the_stated_proxy():
    e = estimate([True, False], [traj([math.log(0.5)] * 4, None)], boot=20)
    assert e["V"] == pytest.approx(2.0) and "proxy" in e["V_kind"] and e["S"] == pytest.approx(0.25)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    found = [True, False, True, True, False, True, False, False]
    trajs = [traj([-0.1 * i, -0.2], [-0.1, -0.2 * i], i) for i in range(8) if found[i]]
    a = estimate(found, trajs, boot=200, seed=3)
    b = estimate(found, trajs, boot=200, seed=3)
    assert a == b
    assert a["Q_ci"][0] <= a["Q"] <= a["Q_ci"][1] and 0 <= a["Q_ci"][0] and a["Q_ci"][1] <= 1
    assert a["S_ci"][0] <= a["S_ci"][1]
    assert estimate(found, trajs, boot=200, seed=4)["Q_ci"] is not None


def test_decision_v_uses_all_samples_and_v_correct_only_the_correct_ones():
    # the policy gives the source's correct answer half the source's probability (w = 0.5), and its
    # wrong answer twice (w = 2): correct-only E[w^2] = 0.25 < 1, all-sample E[w^2] = (0.25 + 4) / 2
    right = Trajectory(0, [math.log(0.25)], [math.log(0.5)], True)
    wrong = Trajectory(0, [math.log(1.0)], [math.log(0.5)], False)
    e = estimate([True], [right, wrong], boot=0, groups=1)
    assert e["V_correct"] == pytest.approx(0.25) and e["V"] == pytest.approx(2.125)
    assert e["V_seq"] == pytest.approx(0.25) and e["n_correct"] == 1 and e["n_trajectories"] == 2


def test_q_gain_is_paired_and_its_ci_excludes_zero_only_for_a_real_gain():
    from npo.algo.estimators import q_gain

    ref = [True, False, False, True] * 25  # Q(0) = 0.5 on 100 prompts of F
    better = [True, True, False, True] * 25  # solves every prompt the reference solves, and 25 more
    g = q_gain(ref, better, boot=300, seed=1)
    assert g["dQ"] == pytest.approx(0.25)
    assert 0 < g["dQ_ci"][0] < 0.25 < g["dQ_ci"][1]
    same_rate = [False, True, True, False] * 25  # Q = 0.5 too, on other prompts: no gain, wide paired CI
    g0 = q_gain(ref, same_rate, boot=300, seed=1)
    assert g0["dQ"] == 0 and g0["dQ_ci"][0] < 0 < g0["dQ_ci"][1]
    assert q_gain(ref, better, boot=300, seed=1) == g  # seeded
    with pytest.raises(ValueError):
        q_gain(ref, better[:-1])
