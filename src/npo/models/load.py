"""Resolve `model.path` to a local Hugging Face folder and load a policy from it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import typing
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

from npo.config.checks import Range, check_annotated
from npo.errors import UserError
from npo.models.check import check_model_folder
from npo.models.tiny import warmed_up_path
from npo.models.tiny_vl import is_vision_folder, load_processor, vl_recipe
from npo.tasks import run_task

TINY, TINY_VL = "tiny", "tiny-vl"
EMBEDDED = (TINY, TINY_VL)  # built and warmed up by npo (cached), not read from a folder


def resolve_model_path(cfg, train_items, progress=None, task=None) -> Path:
    """'tiny' / 'tiny-vl' -> the cached warm start (built on first use); anything else must be a local
    folder. `task`: the run's task when it is not the config's (rows given from Python)."""
    if cfg.model.path in EMBEDDED:
        task_cfg = cfg.task
        if task is None:
            task = run_task(cfg)
        elif cfg.task.spec == "python":  # the warm start learns these rows: they key it
            task_cfg = replace(cfg.task, options={"rows": rows_digest(train_items)})
        recipe = vl_recipe(cfg.model.tiny, cfg.model.vision, cfg.task.image_key) if cfg.model.path == TINY_VL else None
        return warmed_up_path(cfg.model.tiny, cfg.model.warmup, task_cfg, train_items, progress,
                              getattr(task, "demonstration", None), recipe)
    return check_model_folder(cfg.model.path)


def rows_digest(items: list) -> str:
    blob = json.dumps([[it.key, it.answer] for it in items])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load_adapters(path: Path, dtype, tokenizer):
    from peft import PeftModel

    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise UserError(f"{path}: LoRA adapters of a base model that is not here ({base})")
    model, tokenizer = load_policy(base, dtype, tokenizer or AutoTokenizer.from_pretrained(path))
    return PeftModel.from_pretrained(model, path).merge_and_unload(), tokenizer


def name_tied_weights(model) -> None:
    """A tied output layer is not in a checkpoint (it is the embedding): naming it lets HF's loader
    re-tie it at every rollback instead of warning "missing keys: ['lm_head.weight']"."""
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    if tied and not model._keys_to_ignore_on_save:
        model._keys_to_ignore_on_save = tied


def lora_config(fields: dict):
    """TRL's peft_config of `model.lora` (None when empty); bad fields are a UserError."""
    if not fields:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        raise UserError("model.lora: LoRA needs peft (pip install 'npo[peft]')") from None
    hints = typing.get_type_hints(LoraConfig)
    for key, value in fields.items():  # peft takes r: .nan, and the first layer it builds crashes
        if key in hints:
            check_annotated(value, hints[key], f"model.lora.{key}")
        if (check := LORA_RANGES.get(key)) and isinstance(value, (int, float)) and (msg := check.error(value)):
            raise UserError(f"model.lora.{key}: {msg}, got {value}")
    try:
        return LoraConfig(**{"task_type": "CAUSAL_LM", **fields})
    except (TypeError, ValueError) as exc:
        raise UserError(f"model.lora: {str(exc).splitlines()[0]}") from None


LORA_RANGES = {"r": Range(1), "lora_alpha": Range(0, lo_open=True), "lora_dropout": Range(0, 1, hi_open=True)}


def lora_fields(peft_config) -> dict:
    """`model.lora` of a peft.LoraConfig: the fields that differ from LoraConfig's defaults."""
    from peft import LoraConfig

    if not isinstance(peft_config, LoraConfig):
        raise UserError(f"peft_config: npo trains LoRA adapters (a peft.LoraConfig), got {type(peft_config).__name__}")
    default = LoraConfig(task_type="CAUSAL_LM").to_dict()
    out = {}
    for key, value in peft_config.to_dict().items():
        if key == "task_type":  # npo's: a causal LM
            continue
        value = sorted(value) if isinstance(value, (set, frozenset)) else value
        if value != (sorted(default[key]) if isinstance(default.get(key), (set, frozenset)) else default.get(key)):
            out[key] = value
    return out


@contextlib.contextmanager
def outside_zero3():
    """Models loaded inside the block are built whole on this process, even while the run's ZeRO-3
    config is alive (HF's loader partitions every model it builds then): a teacher npo only samples from."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref, hf_deepspeed._hf_deepspeed_config_weak_ref = hf_deepspeed._hf_deepspeed_config_weak_ref, None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = ref


TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # npo.config.precision's names


def load_policy(path: str | Path, dtype=None, tokenizer=None):
    """(model, tokenizer) from a local folder; the tokenizer pads on the left for generation. For a
    vision-language folder the "tokenizer" is its processor (what TRL takes as processing_class).
    `dtype`: fp32, bf16, fp16, auto (model.dtype's: bf16 on a GPU, else fp32), or None: the dtype the
    folder was saved in (a checkpoint is read as the run held it).
    `tokenizer`: the user's own (another chat template, say) instead of the folder's. A LoRA run's
    checkpoint (adapters only) loads onto its base model, merged."""
    if dtype == "auto":
        dtype = "bf16" if torch.cuda.is_available() else "fp32"
    if (Path(path) / "adapter_config.json").is_file() and not (Path(path) / "config.json").is_file():
        return _load_adapters(Path(path), dtype, tokenizer)
    path = check_model_folder(path)
    if is_vision_folder(path):
        processor = tokenizer or load_processor(path)
        text = processor.tokenizer
        tokenizer, model_class = processor, AutoModelForImageTextToText
    else:
        text = tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        model_class = AutoModelForCausalLM
    text.padding_side = "left"
    if text.pad_token is None:
        text.pad_token = text.eos_token
    model = model_class.from_pretrained(path, dtype=TORCH_DTYPES[dtype] if dtype else "auto")
    return model, tokenizer
