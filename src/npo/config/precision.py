"""What `model.dtype` means: the dtype the policy is loaded in, and TRL's mixed-precision flags.

A low-precision optimizer step is only safe over fp32 master weights: at lr 1e-6 most updates of a
bf16 weight fall below its resolution (ulp 2^-8 relative). So the low precision h (bf16 or fp16) is
always TRL's mixed precision (`bf16` / `fp16` true), and the weights are loaded

- in h where something else holds the fp32 masters: DeepSpeed (its bf16/fp16 optimizer keeps fp32
  partitions), FSDP2 (accelerate keeps the sharded parameters in fp32), or LoRA (the frozen base never
  steps; peft keeps the adapters in fp32, DeepSpeed ZeRO-3 its masters of them);
- in fp32 otherwise (DDP, one process): the weights are the master copy, h is the autocast of the
  forward, and checkpoints hold fp32 weights, so that a rollback restores them exactly.

Pure: from the config's fields and where the run runs (tests/test_precision.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from npo.errors import UserError

DTYPES = ("auto", "fp32", "bf16", "fp16")  # model.dtype
LOW = ("bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    load: str  # the dtype the policy's weights are loaded in: fp32, bf16 or fp16
    bf16: bool  # TRL's (and accelerate's) mixed precision
    fp16: bool


def engine_of(grpo: Mapping, env: Mapping = os.environ) -> str | None:
    """'deepspeed' or 'fsdp' when the run's engine shards the model (a `train.grpo` field, or an
    `accelerate launch` recipe's environment), else None (one process, DDP)."""
    if grpo.get("deepspeed") or env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes"):
        return "deepspeed"
    if grpo.get("fsdp") or env.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes"):
        return "fsdp"
    return None


def launcher_flags(env: Mapping = os.environ) -> tuple[bool | None, bool | None]:
    """(bf16, fp16) as an `accelerate launch` recipe's `mixed_precision` asks (None: not asked)."""
    asked = env.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    return (True if asked == "bf16" else None), (True if asked == "fp16" else None)


def precision(dtype: str, *, cuda: bool, engine: str | None, lora: bool, bf16: bool | None = None,
              fp16: bool | None = None) -> Precision:
    """model.dtype (`dtype`) resolved, with TRL's `bf16` / `fp16` as the user set them (None: not set).

    auto: bf16 on a GPU, fp32 on CPU (where autocast only slows the embedded default); an explicit
    `train.grpo.bf16` / `fp16` decides instead. fp32: fp32 everywhere, unless `train.grpo.bf16` (or
    fp16) asks for mixed precision over the fp32 weights."""
    if bf16 and fp16:
        raise UserError("train.grpo: bf16 and fp16 are both true; set one")
    if dtype == "auto":
        dtype = "fp16" if fp16 else "bf16" if bf16 else "fp32" if bf16 is False or not cuda else "bf16"
    if dtype == "fp32":
        return Precision("fp32", bool(bf16), bool(fp16))
    flags, other = {"bf16": bf16, "fp16": fp16}, "fp16" if dtype == "bf16" else "bf16"
    if flags[dtype] is False:
        raise UserError(f"model.dtype: {dtype} trains with TRL's {dtype} mixed precision, and train.grpo.{dtype} is "
                        f"false (remove it, or set model.dtype: fp32)")
    if flags[other]:
        raise UserError(f"model.dtype: {dtype}, and train.grpo.{other} is true: choose one precision")
    if dtype == "fp16" and not cuda:
        raise UserError("model.dtype: fp16 mixed precision needs a GPU (its loss scaling is CUDA's); use bf16 or fp32 "
                        "on CPU")
    master_elsewhere = engine is not None or lora
    return Precision(dtype if master_elsewhere else "fp32", dtype == "bf16", dtype == "fp16")

