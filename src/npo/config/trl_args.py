"""The GRPO pass-through: `train.grpo` goes to `trl.GRPOConfig` over npo's own defaults.

`GRPO_DEFAULTS` lists every value npo sets under the user's, with why; a user's explicit value always
wins. `OWNED_GRPO_FIELDS` are set from npo's own fields (a user value would fight the run folder). A
run records the merged values in its config.yaml and every GRPOConfig value, TRL's defaults and the
derived batch shape and precision included, in trl_args.json.

Batch shape, as TRL means it: one optimizer step takes per_device_train_batch_size x processes x
gradient_accumulation_steps completions, and npo's `train.prompts_per_step` x n is that number
(`micro_batches`); precision: `npo.config.precision`.

TRL (with torch) is imported inside the functions that need it: a config with a bad field should be
refused in a fraction of a second, not after the ~6 s those imports take.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import re
import sys
from typing import Any

from npo.config.checks import Range, check_annotated, check_type
from npo.config.precision import Precision, engine_of, launcher_flags, precision
from npo.errors import UserError

# GRPOConfig fields npo sets itself; a user value would silently fight the run directory layout.
OWNED_GRPO_FIELDS = {
    "output_dir", "max_steps", "seed", "data_seed", "save_steps", "save_strategy",
    "logging_steps", "num_train_epochs", "disable_tqdm",
    "save_total_limit", "save_only_model",  # npo keeps rollback targets whole (npo.rundir.retention)
}

# TRL's own evaluation loop: npo evaluates its held-out split itself (a TRL eval without an eval_dataset
# stops the trainer at its construction, after the run folder is written)
TRL_EVAL_FIELDS = {"eval_strategy", "eval_steps", "do_eval", "load_best_model_at_end", "metric_for_best_model",
                   "eval_on_start", "per_device_eval_batch_size"}
EVAL_INSTEAD = "npo evaluates its held-out split itself: eval.every, eval.n, eval.samples (NPOConfig.heldout_*)"

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
    "gradient_checkpointing": (False, "TRL turns it on; recomputing activations only slows small models. Turn it "
                                      "on for 1.5B-8B, where activations, not weights, fill the GPU"),
    "lr_scheduler_type": ("constant", "the rate at step t does not depend on train.steps, so a 200-step and a "
                                      "600-step run share their first 200 steps; TRL's linear decays to 0"),
    "max_grad_norm": (1.0, "TRL's value, pinned so a TRL upgrade cannot change it silently"),
}


# Ranges of the numeric GRPOConfig fields that TRL or transformers would take and then crash on, or run
# meaninglessly with (a negative learning rate, top_p 0, a repetition penalty of 0 that divides by zero);
# every other number is at least finite (npo.config.checks.check_type). Keys absent from this TRL are skipped.
GRPO_RANGES = {
    "learning_rate": Range(0), "weight_decay": Range(0), "max_grad_norm": Range(0), "adam_epsilon": Range(0, lo_open=True),
    "adam_beta1": Range(0, 1, hi_open=True), "adam_beta2": Range(0, 1, hi_open=True), "warmup_steps": Range(0),
    "temperature": Range(0, lo_open=True), "top_p": Range(0, 1, lo_open=True), "top_k": Range(0), "min_p": Range(0, 1),
    "repetition_penalty": Range(0, lo_open=True), "beta": Range(0), "epsilon": Range(0), "epsilon_high": Range(0),
    "delta": Range(1, lo_open=True), "top_entropy_quantile": Range(0, 1), "max_completion_length": Range(1),
    "num_iterations": Range(1), "steps_per_generation": Range(1), "num_generations_eval": Range(1),
    "vllm_gpu_memory_utilization": Range(0, 1, lo_open=True), "vllm_tensor_parallel_size": Range(1),
}
SCALE_REWARDS = (True, False, "group", "batch", "none")  # TRL's True is "group", False "none"
# generation_kwargs keys that would override what npo and TRL set from their own fields (the completion
# length npo's context check reads, the group size, the sampling distribution guides and V assume)
GENERATION_OWNED = {
    "max_new_tokens": "max_completion_length", "max_length": "max_completion_length",
    "max_tokens": "max_completion_length", "min_new_tokens": "max_completion_length",
    "min_tokens": "max_completion_length", "num_return_sequences": "num_generations", "n": "num_generations",
    "num_beams": "num_generations", "do_sample": "temperature", "temperature": "temperature", "top_p": "top_p",
    "top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repetition_penalty", "seed": "seed (npo's)",
}


def grpo_overrides(cfg) -> dict[str, Any]:
    """The user's GRPO pass-through (`cfg`: an npo.config.run.RunConfig) merged over npo's defaults, keys
    checked against GRPOConfig (each field's value against its annotation)."""
    hints = _hints()
    merged = {key: value for key, (value, _) in GRPO_DEFAULTS.items()}
    for key, value in cfg.train.grpo.items():
        where = f"train.grpo.{key}"
        if key in OWNED_GRPO_FIELDS:
            raise UserError(f"{where}: set by npo (see train.steps, train.checkpoint_every, train.keep_checkpoints, "
                            f"seed); remove it")
        if key not in hints:
            raise UserError(f"{where}: not a field of trl.GRPOConfig")
        if key in TRL_EVAL_FIELDS:
            raise UserError(f"{where}: {EVAL_INSTEAD}; remove it")
        if key == "report_to" and isinstance(value, list):  # TRL takes a list of integrations too
            value = [check_type(v, str, f"{where}[{i}]") for i, v in enumerate(value)]
        elif key == "scale_rewards":
            if value not in SCALE_REWARDS or isinstance(value, (int, float)) and not isinstance(value, bool):
                raise UserError(f"{where}: expected one of true, false, group, batch, none, got {value!r}")
        elif key == "reward_weights" and value is not None:
            if not isinstance(value, list) or not value:
                raise UserError(f"{where}: expected a list of numbers, one per reward function")
            value = [check_type(v, float, f"{where}[{i}]") for i, v in enumerate(value)]
        elif key == "generation_kwargs" and value is not None:
            value = _generation_kwargs(value, where)
        else:  # a scalar, a mapping, a list or a union of types (chat_template_kwargs: dict | str)
            value = check_annotated(value, hints[key], where)
        merged[key] = value
    return merged


def _generation_kwargs(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping of generation settings, got {type(value).__name__}")
    for key in value:
        if key in GENERATION_OWNED:
            raise UserError(f"{where}.{key}: overrides train.grpo.{GENERATION_OWNED[key]}, which npo and TRL set and "
                            f"check; set that field instead")
    return value


def check_reward_weights(weights, functions: int) -> None:
    """TRL's reward_weights: one per reward function (TRL checks it only once the trainer is built)."""
    if weights is not None and len(weights) != functions:
        raise UserError(f"train.grpo.reward_weights: {len(weights)} weights for {functions} reward function"
                        f"{'s' if functions != 1 else ''}: give one per function")


@functools.lru_cache(maxsize=1)
def _hints() -> dict:
    import typing

    from trl import GRPOConfig

    return typing.get_type_hints(GRPOConfig)


def processes() -> int:
    """The launcher's process count (torchrun / accelerate launch set WORLD_SIZE), before any process
    group exists: validation runs first."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def micro_batches(prompts: int, n: int, world: int, micro: int | None = None,
                  accumulation: int | None = None) -> tuple[int, int]:
    """(per_device_train_batch_size, gradient_accumulation_steps): an optimizer step of `prompts` x `n`
    completions over `world` processes, in TRL's terms (micro x world x accumulation completions).
    Either one may be given (the other follows), both (they must agree), or neither (one micro-batch
    per process and step)."""
    rows, where = prompts * n, "train.grpo"
    for key, value in (("per_device_train_batch_size", micro), ("gradient_accumulation_steps", accumulation)):
        if value is not None and value < 1:
            raise UserError(f"{where}.{key}: must be >= 1, got {value}")
    if micro is None:
        accumulation = accumulation or 1
        if rows % (world * accumulation):
            raise UserError(f"train.prompts_per_step: {prompts} prompts x {n} samples do not split into {world} "
                            f"processes x {accumulation} micro-batches ({where}.gradient_accumulation_steps)")
        return rows // (world * accumulation), accumulation
    if accumulation is None:
        if rows % (world * micro):
            raise UserError(f"{where}.per_device_train_batch_size: {prompts} prompts x {n} samples per step (train."
                            f"prompts_per_step) are not whole micro-batches of {micro} on each of {world} processes")
        return micro, rows // (world * micro)
    if micro * world * accumulation != rows:
        raise UserError(f"{where}.per_device_train_batch_size x gradient_accumulation_steps: {micro} x {accumulation} "
                        f"on {world} processes is {micro * world * accumulation} completions per optimizer step, but "
                        f"train.prompts_per_step x n is {prompts} x {n} = {rows} (set one of the two fields, or make "
                        f"them agree)")
    return micro, accumulation


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A run's derived shape, resolved once per config at validation (`RunConfig.resolved`) and read
    everywhere: no module recomputes it."""

    trl: dict[str, Any]  # GRPOConfig's keyword arguments but output_dir (checked: GRPOConfig accepted them)
    n: int  # TRL's group, num_generations: npo's n, plus npo.slots with fill add
    G: int  # on-policy samples a group keeps
    processes: int
    micro: int  # per_device_train_batch_size
    accumulation: int  # gradient_accumulation_steps
    chunk_steps: int  # optimizer steps one generation batch serves: where a rollback or resume may land
    precision: Precision

    def grpo_kwargs(self, output_dir: str) -> dict[str, Any]:
        """GRPOConfig's keyword arguments, checkpointing to `output_dir`."""
        return {**self.trl, "output_dir": output_dir}


def grpo_kwargs(cfg, output_dir: str) -> dict[str, Any]:
    """Everything GRPOConfig needs (`cfg.resolved`, checkpointing to `output_dir`)."""
    return cfg.resolved.grpo_kwargs(output_dir)


def resolve(cfg) -> Resolved:
    """The run's GRPOConfig arguments, batch shape and precision; constructing a GRPOConfig here surfaces
    TRL's own checks as UserErrors."""
    import torch
    from trl import GRPOConfig

    kw = dict(cfg.resolved_grpo)  # a copy: the batch fields are popped and replaced below
    added = cfg.npo.slots if cfg.npo.fill == "add" and cfg.method != "grpo" else 0  # RLEP's G + M: TRL's group
    kw["num_generations"] += added  # holds the added guides too
    world = processes()
    micro, accumulation = micro_batches(cfg.train.prompts_per_step, kw["num_generations"], world,
                                        kw.pop("per_device_train_batch_size", None),
                                        kw.pop("gradient_accumulation_steps", None))
    if (generation := kw.pop("generation_batch_size", None)) is not None:  # TRL's other name for steps_per_generation
        if kw.get("steps_per_generation") is not None:
            raise UserError("train.grpo: generation_batch_size and steps_per_generation are one setting; set one")
        if generation % (micro * world):
            raise UserError(f"train.grpo.generation_batch_size: {generation} is not a multiple of the {micro * world} "
                            f"completions of one micro-batch on every process")
        kw["steps_per_generation"] = generation // (micro * world)
    p = run_precision(cfg, kw)
    if engine_of(kw) == "fsdp" and not torch.cuda.is_available():  # accelerate sets FSDP up for GPU-like devices only
        raise UserError("train.grpo.fsdp / the launch recipe: FSDP needs GPUs (on CPU accelerate runs it as plain DDP, "
                        "unsharded); use DeepSpeed ZeRO (configs/accelerate/zero3.yaml) or no recipe here")
    kw.update(
        max_steps=cfg.train.steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        bf16=p.bf16,
        fp16=p.fp16,
        save_strategy="steps",
        save_steps=cfg.train.checkpoint_every,
        logging_steps=1,
        disable_tqdm=True,
    )
    if not torch.cuda.is_available():
        kw.setdefault("use_cpu", True)
        # DeepSpeed would find out itself, with a warning on every run: its own switch, set to what it finds
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if kw.get("deepspeed") and importlib.util.find_spec("deepspeed") is None:  # else an ImportError deep in HF
        raise UserError("train.grpo.deepspeed: DeepSpeed is not installed here (DS_BUILD_OPS=0 pip install deepspeed)")
    try:
        args = GRPOConfig(**kw, output_dir="/nonexistent-npo-validation")  # the check; the trainer builds its own
    except (ValueError, TypeError) as exc:
        raise UserError(f"train.grpo: {str(exc).splitlines()[0]}") from None
    check_runnable(args)
    n = kw["num_generations"]
    return Resolved(trl=kw, n=n, G=n - added, processes=world, micro=micro, accumulation=accumulation,
                    chunk_steps=chunk_steps(kw), precision=p)


def chunk_steps(g: dict) -> int:
    """Optimizer steps one generation batch serves (TRL reuses it steps_per_generation x num_iterations
    micro-steps): a rollback or resume must land on a multiple, or TRL regenerates mid-batch."""
    accum = g["gradient_accumulation_steps"]
    micro_steps = (g.get("num_iterations") or 1) * (g.get("steps_per_generation") or accum)
    if micro_steps % accum:
        raise UserError(f"train.grpo.steps_per_generation: {micro_steps} micro-batches per generation batch (x "
                        f"num_iterations) must be a multiple of gradient_accumulation_steps ({accum}): a generation "
                        f"batch ends on an optimizer step, where npo rolls back")
    return micro_steps // accum


def run_precision(cfg, grpo: dict | None = None) -> Precision:
    """model.dtype resolved for this run (`grpo`: its merged train.grpo, if at hand)."""
    import torch

    grpo = cfg.resolved_grpo if grpo is None else grpo
    bf16, fp16 = launcher_flags()  # a recipe's mixed_precision, unless train.grpo says otherwise
    return precision(cfg.model.dtype, cuda=torch.cuda.is_available(), engine=engine_of(grpo), lora=bool(cfg.model.lora),
                     bf16=grpo.get("bf16", bf16), fp16=grpo.get("fp16", fp16))


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

    for key, check in GRPO_RANGES.items():
        value = getattr(args, key, None)
        if value is not None and (msg := check.error(value)):
            raise UserError(f"train.grpo.{key}: {msg}, got {value}")
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
    return cfg.eval.max_new_tokens or cfg.resolved_grpo["max_completion_length"]


def grpo_defaults_markdown() -> str:
    """docs/config.md's table of the GRPO values npo sets under the user's, beside TRL's own default."""
    from trl import GRPOConfig

    trl_default = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    lines = ["| `train.grpo` field | npo | TRL 1.16 | why |", "|---|---|---|---|"]
    for key, (value, why) in GRPO_DEFAULTS.items():
        lines.append(f"| `{key}` | `{value!r}` | `{trl_default[key]!r}` | {why} |")
    return "\n".join(lines)
