"""Pins the private TRL methods `npo.trainer.NPOTrainer` overrides or relies on.

If this fails after a TRL upgrade, re-read the new `_generate` / `_generate_and_score_completions`
and re-check the seam described at the top of `npo/trainer.py` before updating the pins.
"""

import hashlib
import inspect

import trl
from trl import GRPOTrainer

PINNED_TRL = "1.16.0"
# sha256 of inspect.getsource(...) of the methods whose behaviour the seam depends on, at trl 1.16.0
PINNED_SOURCES = {
    "_generate": "2a27fdf8f5e6f3562508eec3efb9e9dade2e0bf810de5031cdfab429d0a048f2",
    "_generate_and_score_completions": "1fa48922792dcd5c72da155cfe99db477771a7c61cde15519fe8c86d0cdc0b65",
    "_prepare_inputs": "f824e7fb0714795697c9b4d574de1e139dd5f4404c2554e92cf1db7f60fa6c96",
}


def source_hash(name):
    return hashlib.sha256(inspect.getsource(getattr(GRPOTrainer, name)).encode()).hexdigest()


def test_trl_version_is_pinned():
    assert trl.__version__ == PINNED_TRL


def test_signatures():
    assert list(inspect.signature(GRPOTrainer._generate).parameters) == ["self", "prompts"]
    assert list(inspect.signature(GRPOTrainer._generate_and_score_completions).parameters) == ["self", "inputs"]


def test_overridden_sources_unchanged():
    changed = {n: source_hash(n) for n, h in PINNED_SOURCES.items() if source_hash(n) != h}
    assert not changed, f"TRL changed the methods npo's seam relies on: {changed}"


def test_generate_returns_the_8_tuple_the_seam_unpacks():
    src = inspect.getsource(GRPOTrainer._generate)
    assert "return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images" in src
