"""The GRPO pass-through: `train.grpo` goes to `trl.GRPOConfig` over npo's own defaults.

`GRPO_DEFAULTS` lists every value npo sets under the user's, with why; `OWNED_GRPO_FIELDS` are set
from npo's own fields (a user value would fight the run folder). A run records the merged values in
its config.yaml and every GRPOConfig value, TRL's defaults included, in trl_args.json.

TRL (with torch) is imported inside the functions that need it: a config with a bad field should be
refused in a fraction of a second, not after the ~6 s those imports take.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys
from typing import Any

from npo.checks import check_type
from npo.errors import UserError

# GRPOConfig fields npo sets itself; a user value would silently fight the run directory layout.
OWNED_GRPO_FIELDS = {
    "output_dir", "max_steps", "seed", "data_seed", "save_steps", "save_strategy",
    "per_device_train_batch_size", "logging_steps", "num_train_epochs", "disable_tqdm",
    "save_total_limit", "save_only_model",  # npo keeps rollback targets whole (npo.retention)
}

# npo's defaults for the pass-through, applied under the user's values: (value, why). Every one is
# written into the run's config.yaml; trl_args.json holds every other GRPOConfig value, TRL's own.
GRPO_DEFAULTS: dict[str, tuple[Any, str]] = {
    "num_generations": (8, "n, the group size the gate averages over; set explicitly because p_hat < tau "
                           "depends on it"),
    "learning_rate": (1e-4, "TRL's 1e-6 is for billion-parameter models; the embedded ~1M-parameter default "
                            "barely moves at it (its configs use 3e-4: 6e-4 collapsed the policy, 1e-4 climbs "
                            "slowly)"),
    "temperature": (1.0, "sampling at the policy's own distribution, which the guide log-probs and V assume"),
    "max_completion_length": (8, "the embedded default answers arith in a few characters and EOS; TRL's 512 "
                                 "would pad every tiny step to 64x the length. Set it for real models"),
    "beta": (0.0, "no KL penalty to a reference model, as in recent GRPO recipes (DAPO, Dr. GRPO) and the "
                  "open repos of the paper's group"),
    "loss_type": ("grpo", "GRPO's per-sequence token mean (the paper's objective); TRL defaults to dapo"),
    "report_to": ("none", "npo writes metrics.jsonl itself; set wandb or tensorboard to add them"),
    "activation_checkpointing": (False, "TRL turns it on (through gradient_checkpointing=True); recomputing "
                                        "activations only slows small models. Turn it on for 8B"),
    "lr_scheduler_type": ("constant", "the rate at step t does not depend on train.steps, so a 200-step and a "
                                      "600-step run share their first 200 steps; TRL's linear decays to 0"),
    "max_grad_norm": (1.0, "TRL's value, pinned so a TRL upgrade cannot change it silently"),
}


def grpo_overrides(cfg) -> dict[str, Any]:
    """The user's GRPO pass-through (`cfg`: an npo.config.RunConfig) merged over npo's defaults, keys
    checked against GRPOConfig."""
    from trl import GRPOConfig

    fields = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    merged = {key: value for key, (value, _) in GRPO_DEFAULTS.items()}
    for key, value in cfg.train.grpo.items():
        where = f"train.grpo.{key}"
        if key in OWNED_GRPO_FIELDS:
            raise UserError(f"{where}: set by npo (see train.steps, train.prompts_per_step, "
                            f"train.checkpoint_every, train.keep_checkpoints, seed); remove it")
        if key not in fields:
            raise UserError(f"{where}: not a field of trl.GRPOConfig")
        default = fields[key].default
        if key == "report_to" and isinstance(value, list):  # TRL takes a list of integrations too
            value = [check_type(v, str, f"{where}[{i}]") for i, v in enumerate(value)]
        elif isinstance(default, (bool, int, float, str)) and value is not None:
            value = check_type(value, type(default), where)
        merged[key] = value
    return merged


def grpo_kwargs(cfg, output_dir: str) -> dict[str, Any]:
    """Everything GRPOConfig needs; constructing it here surfaces TRL's own checks as UserErrors."""
    import torch
    from trl import GRPOConfig

    kw = grpo_overrides(cfg)
    if cfg.npo.fill == "add" and cfg.method != "grpo":  # RLEP's G + M: TRL's group holds the added guides too
        kw["num_generations"] += cfg.npo.slots
    n = kw["num_generations"]
    # prompts_per_step is global: each of the launcher's processes holds an equal share of its rows
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.train.prompts_per_step * n % processes:
        raise UserError(f"train.prompts_per_step: {cfg.train.prompts_per_step} prompts x {n} samples do not "
                        f"split over {processes} processes")
    kw.update(
        output_dir=output_dir,
        max_steps=cfg.train.steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        per_device_train_batch_size=cfg.train.prompts_per_step * n // processes,
        save_strategy="steps",
        save_steps=cfg.train.checkpoint_every,
        logging_steps=1,
        disable_tqdm=True,
    )
    if not torch.cuda.is_available():
        kw.setdefault("use_cpu", True)
        kw.setdefault("bf16", False)
        # DeepSpeed would find out itself, with a warning on every run: its own switch, set to what it finds
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if kw.get("deepspeed") and importlib.util.find_spec("deepspeed") is None:  # else an ImportError deep in HF
        raise UserError("train.grpo.deepspeed: DeepSpeed is not installed here (DS_BUILD_OPS=0 pip install deepspeed)")
    try:
        args = GRPOConfig(**kw)
    except (ValueError, TypeError) as exc:
        raise UserError(f"train.grpo: {str(exc).splitlines()[0]}") from None
    check_runnable(args)
    return kw


def supported(field: str) -> list[str]:
    """The values GRPOConfig's help says `field` supports ("Supported values are 'a', 'b' and 'c'")."""
    from trl import GRPOConfig

    help_text = next(f for f in dataclasses.fields(GRPOConfig) if f.name == field).metadata["help"]
    return re.findall(r"'([a-z_]+)'", help_text.split("Supported values are")[1].split(".")[0])


def check_runnable(args) -> None:
    """What GRPOConfig accepts but GRPOTrainer or generation refuses later, once files are written (each
    found by running the value: tests/test_bad_input.py)."""
    from transformers import Trainer
    from transformers.integrations import get_reporting_integration_callbacks

    for key in ("max_completion_length", "num_iterations", "steps_per_generation"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise UserError(f"train.grpo.{key}: must be >= 1, got {value}")
    if args.temperature <= 0:
        raise UserError(f"train.grpo.temperature: must be > 0 (GRPO samples its groups), got {args.temperature}")
    if args.top_k is not None and args.top_k < 0:
        raise UserError(f"train.grpo.top_k: must be >= 0 (0: no top-k filtering), got {args.top_k}")
    if args.loss_type not in (known := supported("loss_type")):
        raise UserError(f"train.grpo.loss_type: expected one of {', '.join(known)}, got {args.loss_type!r}")
    if args.importance_sampling_level not in ("token", "sequence"):
        raise UserError(f"train.grpo.importance_sampling_level: expected token or sequence, got "
                        f"{args.importance_sampling_level!r}")
    if args.use_vllm and "vllm" not in sys.modules and importlib.util.find_spec("vllm") is None:
        raise UserError("train.grpo.use_vllm: vLLM is not installed here (pip install 'trl[vllm]')")
    try:
        for callback in get_reporting_integration_callbacks(args.report_to):
            callback()  # each integration's callback checks that its library is installed
    except (RuntimeError, ImportError, ValueError) as exc:
        raise UserError(f"train.grpo.report_to: {str(exc).splitlines()[0]}") from None
    try:
        Trainer.get_optimizer_cls_and_kwargs(args)  # e.g. an 8-bit optim without bitsandbytes
    except (RuntimeError, ImportError, ValueError) as exc:
        raise UserError(f"train.grpo.optim: {str(exc).splitlines()[0]}") from None


def eval_max_new_tokens(cfg) -> int:
    """The longest answer generated at evaluation: eval.max_new_tokens, or TRL's completion length."""
    return cfg.eval.max_new_tokens or grpo_overrides(cfg)["max_completion_length"]


def grpo_defaults_markdown() -> str:
    """The README's table of the GRPO values npo sets under the user's, beside TRL's own default."""
    from trl import GRPOConfig

    trl_default = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    lines = ["| `train.grpo` field | npo | TRL 1.16 | why |", "|---|---|---|---|"]
    for key, (value, why) in GRPO_DEFAULTS.items():
        lines.append(f"| `{key}` | `{value!r}` | `{trl_default[key]!r}` | {why} |")
    return "\n".join(lines)
