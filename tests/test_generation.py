"""Seeded sampling as greedy decoding over an exponential race (npo.generation.ExponentialRace)."""

import torch

from npo.generation import ExponentialRace


def test_the_race_samples_softmax_at_the_temperature():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    for temperature in (1.0, 0.5):
        rows = 20_000
        race = ExponentialRace(list(range(rows)), temperature)
        picks = race(None, logits.expand(rows, -1)).argmax(-1)
        freq = torch.bincount(picks, minlength=4).float() / rows
        expected = (logits / temperature).softmax(-1)
        sigma = (expected * (1 - expected) / rows).sqrt()
        assert ((freq - expected).abs() <= 4 * sigma + 1e-4).all(), (temperature, freq, expected)


def test_a_rows_draws_depend_on_its_seed_only():
    scores = torch.zeros(3, 5)
    a = ExponentialRace([7, 8, 9], 1.0)(None, scores)
    b = ExponentialRace([9, 7, 1], 1.0)(None, scores)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0]) and not torch.equal(a[1], b[2])
