"""Pins the private TRL, transformers and accelerate methods `npo.trl_seam.trainer.GuidedGRPOTrainer` and
`npo.trl_seam.engine` override or rely on.

If this fails after an upgrade, re-read the new source and re-check the seam described at the top of
`npo/trl_seam/trainer.py` before updating the pins: `_generate` / `_generate_and_score_completions` (the gate
and the flag), `_compute_loss` ((B, T) advantages for guide_loss importance/shaping), the sampler
(npo's is TRL's seeded per epoch), HF's `train` / `_prepare_for_training` / loaders (the in-place
re-entry), accelerate's `free_memory` (it destroys the DeepSpeed engine), TRL's vLLM sync and its
`_last_loaded_step` tag (npo marks the engine stale after an in-place load).
"""

import hashlib
import inspect

import trl
from accelerate import Accelerator
from transformers import Trainer
from transformers.integrations.deepspeed import deepspeed_load_checkpoint, is_deepspeed_zero3_enabled
from trl import GRPOTrainer
from trl.generation.vllm_generation import VLLMGeneration
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.utils import RepeatSampler, maybe_gather_lm_head_ctx

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
    # the sampler npo replaces with its epoch-seeded subclass, and the `_last_loaded_step` sync tag
    "_get_train_sampler": "36497afb4d311dc9a80d914d27893fe075c5bbc7edde8586edfa60125e980799",
    "_generate_single_turn": "e0f02e4fc094cefdb306c6f04da26a2547c8b8225161a90e87a6803b21989b8e",
    "_save_checkpoint": "ec91bde1236491119dc68afed1d02f087b62b17f910521f8e4ba1360cc0b0e20",
}
# one trainer per run, re-entered in place (npo.trl_seam.trainer.GuidedGRPOTrainer.train / _prepare_for_training);
# the transformers hashes are of 5.17.0 (the release vLLM 0.31 accepts), re-recorded after reading its diff to
# 5.24.0: FSDP2 reshard before the optimizer, distributed loading by transformers, PEFT multi-adapter
# loading, a CPU map_location fix (npo.trl_seam.setup.plain_cpu_device does its work), the checkpointing rename
PINNED_OTHERS = {
    "transformers Trainer._prepare_for_training": (Trainer._prepare_for_training,
                                                   "0a4d89b3fdfdd070be7eee6b5cf84909fdb26d1b5668621b485d4f16cdfb357e"),
    "transformers Trainer._inner_training_loop": (Trainer._inner_training_loop,
                                                  "59b69168df6552465fa88c5ea56fe6c31ac28dee1e756b1061cd502d62edafab"),
    "transformers Trainer.train": (Trainer.train, "f2ab74639cb0528db6759e7ec4f9c3e1abba652795fade99aa61a3e2c1fe1e24"),
    "transformers Trainer._run_epoch": (Trainer._run_epoch,
                                        "ebe374933064ecd6fde3407599c2847c3d2fa3c4638bb976e2759299aa752b14"),
    "transformers Trainer._load_from_checkpoint": (Trainer._load_from_checkpoint,
                                                   "4711d0506786db15dd0b1efe274af4966ddb9c229de9e08cd2c35548e3a975c9"),
    "transformers Trainer._load_optimizer_and_scheduler": (
        Trainer._load_optimizer_and_scheduler, "bdcb956f06c459ab57c5f71b38263e0d4293c12b07956db0f44f32d34106c56e"),
    "transformers Trainer._load_scaler": (Trainer._load_scaler,
                                          "c0695f79116426e284697a7c7607830d0805db8f91465849f5585249042f92e0"),
    "transformers Trainer._save_checkpoint": (Trainer._save_checkpoint,
                                              "a9111e30faa9933986e022e56b5af81fd990356db64d727b4c320c852283bf3b"),
    "transformers deepspeed_load_checkpoint": (deepspeed_load_checkpoint,
                                               "c726e2c57f174feab411456a10b8d05a43a860cf29eb97885ab1970ce0b3e24a"),
    "accelerate Accelerator.free_memory": (Accelerator.free_memory,
                                           "f61b2373c6b0dff1b0aa0447c5972a759b38eb299d3075e120df1cefad882c1f"),
    "trl RepeatSampler.__init__": (RepeatSampler.__init__,
                                   "7898b11a3b9e9e07f4d43240092d839191ee2a7be2997704b3b0326a12fe65ff"),
    "trl RepeatSampler.__iter__": (RepeatSampler.__iter__,
                                   "d80412d80424bd645f7d74cdb8bdc1994c789d8ba03111ffe6eea20f789dea58"),
    "trl VLLMGeneration.sync_weights": (VLLMGeneration.sync_weights,
                                        "63d669fb32304ff5e275443abc5e4a2c1e6974ba196d30074bc0f2519f98644c"),
    # npo's guides through TRL's vLLM engine mirror its generate (sleep level 2, TP groups, server features)
    "trl VLLMGeneration.generate": (VLLMGeneration.generate,
                                    "2d2ac2be5b1309c4cc5e084e238f63d82d65c4d7ecc7cdb8e94ebb2c3a5eee76"),
    "trl VLLMGeneration._place_features": (VLLMGeneration._place_features,
                                           "5150ee5f57eb83d03bdb6a119ae9209d955a7f6f3754d9c1d8ad6c9ad74b36d3"),
    # npo.models.generation.head_logps gathers a ZeRO-3 head once; npo.models.load.outside_zero3 clears the weak
    # reference HF's loader reads
    "trl maybe_gather_lm_head_ctx": (maybe_gather_lm_head_ctx,
                                     "d4d59d01150623ce15106e71fcf519a2aef7ae5a7b55a4faebb762fb3352231a"),
    "transformers is_deepspeed_zero3_enabled": (is_deepspeed_zero3_enabled,
                                                "3e3f9ededb3d709ad6d10982c4b8cfbca85e313c524819af24a759fb97e898f6"),
    "trl unwrap_model_for_generation": (unwrap_model_for_generation,
                                        "583d1303c5c55405c0c7b62819e64a1909c533a07cee740ed59b276a1b82375e"),
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


def test_engine_sources_unchanged():
    changed = [name for name, (fn, h) in PINNED_OTHERS.items()
               if hashlib.sha256(inspect.getsource(fn).encode()).hexdigest() != h]
    assert not changed, f"the in-place engine relies on these, and they changed: {changed}"


def test_the_device_is_a_cached_property():
    """`npo.trl_seam.setup.plain_cpu_device` replaces the cached value of `TrainingArguments._setup_devices`."""
    import functools

    from transformers import TrainingArguments

    assert isinstance(TrainingArguments.__dict__["_setup_devices"], functools.cached_property)
    assert "return self._setup_devices" in inspect.getsource(TrainingArguments.device.fget)


def test_the_vllm_engine_state_npo_reads_is_there():
    """`npo.trl_seam.vllm` reads TRL's sleep flag and TP group (set in `_init_vllm`)."""
    src = inspect.getsource(VLLMGeneration._init_vllm) + inspect.getsource(VLLMGeneration.generate)
    assert "self._llm_weights_sleeping = self.enable_sleep_mode" in src and "self.tp_group, _ =" in src
    assert "_hf_deepspeed_config_weak_ref()" in inspect.getsource(is_deepspeed_zero3_enabled)


def test_a_batch_has_one_group_size():
    """Why `fill: add` (RLEP's G + M) is TRL's group of n = G + M rows whose last M are generated and then
    overwritten (docs/baselines.md "Injection rules"): TRL views each batch's rewards as groups of one size."""
    src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert "rewards.view(-1, num_generations)" in src and "num_generations = self.num_generations" in src


def test_the_seams_header_lists_exactly_what_is_pinned():
    """The header of npo.trl_seam.trainer names every private TRL / transformers method and attribute it
    touches; each named method is pinned above, and each attribute is one TRL's GRPOTrainer sets."""
    import re

    import npo.trl_seam.trainer as seam

    header = seam.__doc__.split("exactly")[1]
    named = set(re.findall(r"(GRPOTrainer|Trainer)\.(\w+)", header))
    attributes = {m for kind, m in named if kind == "GRPOTrainer" and not callable(getattr(GRPOTrainer, m, None))}
    methods = {m for _, m in named} - attributes
    pinned = set(PINNED_SOURCES) | {name.split(".")[-1] for name in PINNED_OTHERS if name.startswith("transformers Trainer.")}
    assert methods - {"train"} <= pinned, methods - pinned
    assert "train" in {n.split(".")[-1] for n in PINNED_OTHERS}
    init = inspect.getsource(GRPOTrainer)
    assert attributes == {"_metrics", "_step", "_buffered_inputs", "_last_loaded_step"}
    assert all(f"self.{a} =" in init for a in attributes)
    # and the module reaches no other private TRL method: every super()._x and self._x it calls is listed
    called = set(re.findall(r"super\(\)\.(_[a-z]\w*)|self\.(_load_\w+|_save_checkpoint)\(", inspect.getsource(seam)))
    assert {a or b for a, b in called} <= methods
