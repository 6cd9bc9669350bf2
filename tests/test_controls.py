"""Randomized controls (npo.algo.controls) and their place in a window (npo.guides.bank.Guidance.given):
the coin, the estimate, the assignment. Pure: nothing is trained."""

import math

import pytest

from npo.algo.controls import Assignment, arm_summary, coin, draw_arm, effect, is_control
from npo.algo.injection import Trajectory
from npo.guides.bank import Guidance, GuideBank


def test_the_coin_is_balanced_within_binomial_bounds_for_every_share():
    keys = [f"{a}+{b}=" for a in range(100) for b in range(40)]  # 4,000 prompts
    for share in (0.1, 0.5, 0.8):
        controls = sum(is_control(share, 0, 1, k) for k in keys)
        sd = math.sqrt(len(keys) * share * (1 - share))
        assert abs(controls - share * len(keys)) < 4 * sd, (share, controls)  # 4 sigma: fails 1 in 16,000
    assert not any(is_control(0.0, 0, 1, k) for k in keys)  # share 0: nobody is a control


def test_the_coin_is_a_pure_function_of_seed_intervention_and_prompt():
    keys = [f"q{i}" for i in range(2000)]
    first = [coin(3, 2, k) for k in keys]
    assert first == [coin(3, 2, k) for k in keys]  # the same on every process, at every resume
    assert all(0 <= u < 1 for u in first)
    for other in ([coin(4, 2, k) for k in keys], [coin(3, 1, k) for k in keys]):  # another seed, intervention
        agree = sum((a < 0.5) == (b < 0.5) for a, b in zip(first, other))
        assert 900 < agree < 1100  # independent draws: about half agree


def test_the_effect_pairs_each_prompt_with_its_own_p_hat_by_hand():
    treated = [(0.0, 0.5), (0.25, 1.0)]  # gains 0.5, 0.75: mean 0.625
    control = [(0.5, 0.5), (0.0, 0.25)]  # gains 0, 0.25: mean 0.125
    out = effect(treated, control, boot=200, seed=0)
    assert out["effect"] == pytest.approx(0.5)
    assert out["after_difference"] == pytest.approx(0.75 - 0.375)
    lo, hi = out["ci"]
    assert lo <= out["effect"] <= hi and lo >= 0.125 and hi <= 0.875  # every resample lies in [min, max] of diffs
    assert effect(treated, control, boot=200, seed=0) == out  # seeded
    assert effect(treated, [], boot=10)["effect"] is None


def test_a_null_effect_has_an_interval_that_covers_zero_and_a_real_one_does_not():
    import random

    rng = random.Random(0)
    prompts = [(rng.random(), rng.random()) for _ in range(400)]
    null = effect(prompts[:200], prompts[200:], boot=500, seed=1)
    assert null["ci"][0] < 0 < null["ci"][1]
    helped = [(b, min(1.0, a + 0.3)) for b, a in prompts[:200]]
    real = effect(helped, prompts[200:], boot=500, seed=1)
    assert real["ci"][0] > 0


def test_arm_summary_compares_each_arm_with_its_own_controls():
    assigned = [Assignment(0, "near_future", True, 0.0, 3), Assignment(1, "near_future", False, 0.25, 3),
                Assignment(2, "near_future", True, 0.5, 4), Assignment(3, "near_future", False, 0.0, 5),
                Assignment(4, "self", True, 0.5, 5), Assignment(5, "self", False, 0.5, 5)]
    out = arm_summary(assigned, {0: 1.0, 1: 0.25, 2: 0.5, 3: 0.5, 4: 1.0, 5: 0.5}, first="near_future", boot=50)
    nf = out["near_future"]
    assert nf["control"] == {"n": 2, "p_hat": 0.125, "after": 0.375}
    assert (nf["n"], nf["p_hat"], nf["after"]) == (2, 0.25, 0.75)
    assert nf["effect"] == pytest.approx(0.5 - 0.25)  # gains (1.0, 0.0) vs (0.0, 0.5)
    assert out["self"]["effect"] == pytest.approx(0.5) and out["self"]["control"]["n"] == 1
    assert out["self"]["versus_first"]["effect"] == pytest.approx(0.5 - 0.5)  # self's gain 0.5 vs near future's
    assert "versus_first" not in nf


def test_the_arm_coin_draws_every_arm_alike_and_independently_of_the_control_coin():
    arms, keys = ["near_future:25", "near_future:50", "self", "teacher:reference"], [f"q{i}" for i in range(4000)]
    drawn = [draw_arm(arms, 0, 1, k) for k in keys]
    assert all(abs(drawn.count(a) - 1000) < 4 * (4000 * 0.25 * 0.75) ** 0.5 for a in arms)
    controls = [is_control(0.5, 0, 1, k) for k in keys]
    for a in arms:  # within every arm, about half are controls
        within = [c for c, d in zip(controls, drawn) if d == a]
        assert abs(sum(within) - len(within) / 2) < 4 * (len(within) / 4) ** 0.5


class Named:
    kind, name, step, caches, generates = "near_future", "lookahead/0", 10, True, True


def test_a_window_withholds_the_guide_of_its_controls_and_keeps_each_prompts_first_assignment():
    bank = GuideBank()
    for i in range(200):
        bank.add(i, [Trajectory([5, 2], "7", "near_future", 10, None)])
    g = Guidance(Named(), None, bank, 0, 10, seed=0, controls=0.5, index=1)
    keys = [f"{i}+1=" for i in range(200)]
    given, controls = g.given(list(range(200)), keys, [0.25] * 200, step=2)
    assert controls == sum(not x for x in given) and 60 < controls < 140
    assert all(g.assigned[i].treated == bool(given[i]) and g.assigned[i].arm == "near_future" for i in range(200))
    assert [not x for x in given] == [is_control(0.5, 0, 1, k) for k in keys]  # the coin decides, nothing else
    again, _ = g.given([3, 4], keys[3:5], [0.75, 0.75], step=5)  # a later step of the window
    assert again == given[3:5] and g.assigned[3].p_hat == 0.25 and g.assigned[3].step == 2  # the first assignment
    restored = Guidance(Named(), None, bank, 0, 10, seed=0, controls=0.5, index=1)
    restored.restore(g.snapshot())  # a resume inside the window
    assert restored.assigned == g.assigned
    plain = Guidance(Named(), None, bank, 0, 10, seed=0)
    assert plain.given([0, 1], keys[:2], [0.0, 0.0], 2) == ([bank.get(0), bank.get(1)], 0)
    assert "assigned" not in plain.snapshot() and plain.assigned == {}  # without controls: today's run


@pytest.mark.parametrize("sets, where", [
    (["npo.arms=[self]"], "npo.arms"),  # no controls
    (["npo.controls=0.5", "npo.arms=[near_future:7]"], "npo.arms (near_future:7)"),  # not on a look-ahead checkpoint
    (["npo.controls=0.5", "npo.arms=[near_future:200]"], "npo.arms (near_future:200)"),  # past the look-ahead
    (["npo.controls=0.5", "npo.arms=[replay]"], "npo.arms"),  # no replay buffer with npo.source near_future
    (["npo.controls=0.5", "npo.arms=[near_future:x]"], "npo.arms"),
    (["method=grpo", "npo.interventions=[]", "npo.controls=0.5"], "npo.controls"),
    (["npo.effect_at_end=true"], "npo.effect_at_end"),  # no controls to measure again
])
def test_arms_and_controls_that_do_not_fit_the_run_are_refused_in_one_line(sets, where):
    from npo.config.run import load_config
    from npo.errors import UserError

    from conftest import ROOT

    with pytest.raises(UserError) as err:
        load_config(ROOT / "configs" / "tiny-npo-bootstrap.yaml", sets)
    assert f"tiny-npo-bootstrap.yaml: {where}: " in str(err.value) and "\n" not in str(err.value)


def test_arms_that_fit_are_taken():
    from npo.config.run import load_config

    from conftest import ROOT

    cfg = load_config(ROOT / "configs" / "demo.yaml",
                      ["npo.controls=0.5", "npo.arms=[near_future:25, near_future:50, self, teacher:reference]"])
    assert cfg.npo.arms == ["near_future:25", "near_future:50", "self", "teacher:reference"]
