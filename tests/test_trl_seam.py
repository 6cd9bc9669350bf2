"""Pins the private TRL methods `npo.trainer.NPOTrainer` overrides or relies on.

If this fails after a TRL upgrade, re-read the new `_generate` / `_generate_and_score_completions`
and re-check the seam described at the top of `npo/trainer.py` before updating the pins (and
`_compute_loss`: NPO's guide rows pass it (B, T) advantages for guide_loss importance/shaping).
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
    # NPO's guide rows: the loss must accept (B, T) advantages and ignore the extra `npo_guide` key;
    # the guide log-probs use TRL's own per-token log-prob path
    "_compute_loss": "80295546bbdbf6f711acce7f6e69b0100ab40aa8f23ed8052cc564ff024e3e40",
    "_get_per_token_logps_and_entropies": "ea73c3909275851d0cd664b1e7694905fdcd9c285e848ae923d7402234f2edce",
}
# the row-wise shuffle and split `_prepare_inputs` applies to the generation batch (the guide flag rides it)
PINNED_UTILS = {
    "shuffle_sequence_dict": "bab038755e57ed2b537885296273850223db4d14c728fc2f6e4b1216eb5a9f30",
    "split_tensor_dict": "b61a5760a03e95dbceddcc1e8e78c3db6d9303f01c0b1ced19b745271e56d079",
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


def test_batch_utilities_unchanged():
    import trl.trainer.utils as utils

    changed = [n for n, h in PINNED_UTILS.items()
               if hashlib.sha256(inspect.getsource(getattr(utils, n)).encode()).hexdigest() != h]
    assert not changed, f"TRL changed how the generation batch is shuffled/split: {changed}"


def test_loss_accepts_per_token_advantages():
    src = inspect.getsource(GRPOTrainer._compute_loss)
    assert "if advantages.dim() == 1:" in src and "advantages.unsqueeze(1)" in src


def test_generate_returns_the_8_tuple_the_seam_unpacks():
    src = inspect.getsource(GRPOTrainer._generate)
    assert "return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images" in src
