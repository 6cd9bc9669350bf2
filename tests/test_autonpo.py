"""AutoNPO's controller on synthetic streams: triggers exactly when the rules say, never inside a
cooldown, honours the caps, chooses argmax S, declines when S is too small."""

from npo.algo.controller import Controller, StepRecord
from npo.config.run import AutoNPOConfig

RULES = AutoNPOConfig(ema=0.0, warmup_steps=10, r_low=0.2, stagnation_window=5, stagnation_eps=0.01,
                  entropy_fraction=0.5, cooldown=8, max_interventions=2, max_extra_fraction=0.5,
                  min_s=0.1, min_q=0.0, pool_size=100, pool_age=20)


def feed(ctrl, rewards, entropies, start=1, failed=lambda s: []):
    fired = []
    for i, (r, e) in enumerate(zip(rewards, entropies)):
        t = ctrl.observe(StepRecord(start + i, r, e, failed(start + i)))
        if t:
            fired.append(t)
    return fired


def test_early_trigger_after_warmup_only_and_once():
    c = Controller(RULES, total_steps=100)
    fired = feed(c, [0.1] * 30, [1.0] * 30)  # low reward from the start, entropy steady
    assert [(t.kind, t.step) for t in fired] == [("bootstrap", 10)]
    assert fired[0].signals["reward_ema"] == 0.1


def test_no_early_trigger_when_reward_is_high():
    c = Controller(RULES, total_steps=100)
    assert feed(c, [0.5] * 30, [1.0] * 30) == []


def test_plateau_needs_stagnation_and_entropy_collapse():
    flat_high_entropy = Controller(RULES, 100)
    assert feed(flat_high_entropy, [0.5] * 40, [1.0] * 40) == []  # stagnating, entropy not collapsed
    climbing = Controller(RULES, 100)
    assert feed(climbing, [0.3 + 0.02 * i for i in range(30)], [1.0] * 5 + [0.2] * 25) == []  # still climbing
    both = Controller(RULES, 100)
    fired = feed(both, [0.5] * 30, [1.0] * 10 + [0.4] * 20)
    # reward flat from step 1; entropy below 0.5 x peak from step 11; 6 records of history needed
    assert [(t.kind, t.step) for t in fired][0] == ("plateau", 11)


def test_never_inside_a_cooldown_and_at_most_max_interventions():
    c = Controller(RULES, total_steps=100)
    stream = ([0.5] * 60, [1.0] * 5 + [0.3] * 55)
    steps = []
    for i, (r, e) in enumerate(zip(*stream), start=1):
        t = c.observe(StepRecord(i, r, e))
        if t:
            steps.append(i)
            c.record(c.decide(t, [{"delta": 5, "Q": 0.5, "V": 1.0, "S": 0.5}]), window_end=i)
    assert steps == [6, 14]  # cooldown 8 after each, then the cap of 2
    assert c.state.made.interventions == 2 and c.state.made.extra_steps == 10


def test_chooses_argmax_s_and_declines_small_s():
    c = Controller(RULES, 100)
    t = feed(c, [0.1] * 10, [1.0] * 10)[0]
    table = [{"delta": 5, "Q": 0.6, "V": 1.2, "S": 0.5}, {"delta": 10, "Q": 0.7, "V": 1.0, "S": 0.7},
             {"delta": 20, "Q": 0.8, "V": 4.0, "S": 0.2}]
    d = c.decide(t, table)
    assert d.delta == 10 and "argmax" in d.reason
    low = c.decide(t, [{"delta": 5, "Q": 0.1, "V": 2.0, "S": 0.05}])
    assert low.delta is None and "min_s" in low.reason
    assert c.state.made.cooldown_until == t.step + RULES.cooldown  # a declined trigger cools down too


def test_candidates_need_a_checkpoint_and_fit_the_compute_cap():
    c = Controller(RULES, total_steps=100)  # cap: 50 extra steps
    assert c.candidates(60, [10, 20, 40, 80], checkpoints=[20, 40, 50]) == [10, 20, 40]
    c.state.made.extra_steps = 35
    assert c.candidates(60, [10, 20, 40, 80], checkpoints=[20, 40, 50]) == [10]
    assert c.candidates(60, [60], checkpoints=[]) == []  # 60 > the 15 steps left of the cap
    c.state.made.extra_steps = 0
    assert c.candidates(57, [10, 20], checkpoints=[20, 40, 50]) == [17, 37]  # rounded to checkpoints 40, 20
    c.state.made.floor = 30  # the last guided window ended at 30: never roll back into it
    assert c.candidates(57, [10, 20], checkpoints=[20, 40, 50]) == [17]


def test_mistake_pool_is_bounded_and_ages_out():
    c = Controller(RULES, total_steps=100)
    feed(c, [0.5] * 30, [1.0] * 30, failed=lambda s: [s, 1000 + s])
    pool = c.state.seen.pool
    assert all(step >= 30 - RULES.pool_age for _, step in pool) and len(pool) <= RULES.pool_size
    assert c.pool_prompts(around=25, width=1) == [24, 1024, 25, 1025, 26, 1026]
    small = Controller(AutoNPOConfig(pool_size=3, pool_age=1000), 100)
    feed(small, [0.5] * 5, [1.0] * 5, failed=lambda s: [s])
    assert [p for p, _ in small.state.seen.pool] == [3, 4, 5]
