"""Seeded sampling as greedy decoding over an exponential race (npo.models.generation.ExponentialRace)."""

import torch

from npo.models.generation import ExponentialRace


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


def test_the_race_keeps_trls_truncation_and_the_chosen_tokens_log_probs():
    from npo.models.generation import Sampling

    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]]).expand(4000, -1)
    race = ExponentialRace(list(range(4000)), 1.0, Sampling(top_k=2))
    picks = race(None, logits).argmax(-1)
    assert set(picks.tolist()) == {0, 1}  # top_k = 2: only the two most likely tokens are ever sampled
    kept = torch.tensor([3.0, 2.0]).log_softmax(-1)  # ... under the truncated distribution
    assert torch.allclose(race.logps[0], kept[picks])


def test_prompts_take_trls_chat_template_kwargs():
    """Guides and evaluation build prompts as TRL builds them, chat_template_kwargs included (Qwen3's
    enable_thinking, say)."""
    from npo.models.generation import prompt_ids
    from npo.models.tiny import build_tokenizer
    from npo.tasks.base import Item

    tok = build_tokenizer()
    tok.chat_template = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                         "{% if enable_thinking %}<think>{% else %}={% endif %}")
    item = [Item("1+1", "2")]
    think, plain = (tok.decode(prompt_ids(tok, item, "chat", {"enable_thinking": on})[0]) for on in (True, False))
    assert think.endswith("<think>") and plain.endswith("=")
