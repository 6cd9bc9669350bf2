"""One YAML config per run: dataclasses per concern, every field documented once.

The methods' sections (npo, replay, autonpo) are in `npo.config.sections`. Each field's `help` says what
it does and where its default comes from: `[paper]` for a value the NPO paper states, `[ours]` for a
choice of this project (measured where it says so), a baseline's name for its setting. Its `check`
(beside it) is the range it must lie in. `python -m npo.config.run` prints docs/config.md's tables.

Loading validates every field (type and range) before any work starts; an error names the file and
the dotted field and exits with code 2 (see `npo.errors.UserError`). `train.grpo` passes through to
`trl.GRPOConfig` over npo's own defaults (`npo.config.trl_args`); `resolved(cfg)` is the config with every
GRPO value npo sets written out, which is what a run folder records.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from npo.algo.injection import GUIDE_LOSSES
from npo.algo.interventions import parse_interventions
from npo.config.checks import (
    MAX_ITEMS,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    SOURCE_KINDS,
    NonEmpty,
    OneOf,
    Range,
    check_type,
    doc,
)
from npo.config.precision import DTYPES
from npo.config.presets import apply_preset
from npo.config.sections import AutoNPOConfig, NPOSection, ReplayConfig
from npo.config.trl_args import Resolved, grpo_defaults_markdown, grpo_overrides, resolve
from npo.config.yamlfile import apply_override, parse_override, read_mapping
from npo.errors import UserError

METHODS = ("grpo", "npo", "autonpo", "luffy", "exgrpo", "rlep")  # the last three: presets (npo.config.presets)


@dataclass
class TinyModelConfig:
    """Architecture of the embedded default: a Qwen2 causal LM built from a config."""

    hidden_size: int = doc("Width of the residual stream. [ours: ~1M parameters in all]", default=128, check=POSITIVE)
    num_hidden_layers: int = doc("Transformer blocks. [ours]", default=4, check=POSITIVE)
    num_attention_heads: int = doc("Query heads. [ours]", default=4, check=POSITIVE)
    num_key_value_heads: int = doc("Key/value heads (grouped-query attention). [ours]", default=2, check=POSITIVE)
    intermediate_size: int = doc("MLP width. [ours]", default=512, check=POSITIVE)
    max_position_embeddings: int = doc("Longest prompt + completion in tokens. [ours]", default=128, check=POSITIVE)


@dataclass
class TinyVisionConfig:
    """The vision tower of `tiny-vl`: a Qwen3-VL vision encoder built from a config."""

    patch_size: int = doc("Pixels per patch side; patches are merged 2 x 2 into one vision token, so a 48 x 16 "
                          "image is 12 tokens at 4. [ours]", default=4, check=POSITIVE)
    depth: int = doc("Vision transformer blocks. [ours]", default=2, check=POSITIVE)
    hidden_size: int = doc("Width of the vision encoder. [ours]", default=64, check=POSITIVE)
    num_heads: int = doc("Attention heads of the vision encoder. [ours]", default=2, check=POSITIVE)
    intermediate_size: int = doc("MLP width of the vision encoder. [ours]", default=256, check=POSITIVE)


@dataclass
class WarmupConfig:
    """`npo warmup`: a short supervised warm start of the embedded default to a *weak* base."""

    steps: int = doc("SFT optimizer steps (cosine schedule); few on purpose, to leave room for RL. [ours]",
                     default=1000, check=NON_NEGATIVE)
    batch_size: int = doc("SFT batch size in sequences. [ours]", default=128, check=POSITIVE)
    lr: float = doc("SFT AdamW learning rate. [ours]", default=2e-3, check=POSITIVE)
    lr_floor: float = doc("Cosine decay ends at lr_floor * lr (1.0 = constant after warm-up). [ours]",
                          default=1.0, check=Range(0, 1))
    seed: int = doc("Seed of the warm start; shared by all RL seeds so they start from one base. [ours]", default=0,
                     check=SEED)


@dataclass
class ModelConfig:
    path: str = doc(
        "'tiny' for the embedded default (built, warmed up and cached on first use), 'tiny-vl' for its "
        "vision-language sibling (a Qwen3-VL model, for image tasks), or a local Hugging Face model folder "
        "(config.json + weights + tokenizer; a VLM folder loads with AutoModelForImageTextToText and its "
        "processor). Nothing is downloaded.",
        default="tiny", check=NonEmpty(),
    )
    dtype: str = doc("Precision: auto (bf16 on a GPU, fp32 on CPU), fp32, bf16 or fp16. bf16/fp16 is TRL's mixed "
                     "precision over fp32 master weights: under DeepSpeed or FSDP, and for LoRA's frozen base, the "
                     "policy is loaded (and checkpointed) in bf16/fp16 and the engine keeps the fp32 masters; under DDP "
                     "or in one process the weights themselves are the fp32 masters (npo.config.precision). Teachers and "
                     "npo eval sample in bf16/fp16 too. [ours]", default="auto", check=OneOf(DTYPES))
    score_memory_mb: int = doc("Memory (MiB) one block of npo's own sampling or scoring beside TRL's step may take "
                               "(guides, their rescoring, AutoNPO's and npo signal's V, the replay buffer, evaluation "
                               "prompts): it sizes the rows of each generate call and forward and the positions the LM "
                               "head scores at once, so that no tensor grows as rows x length x vocabulary. [ours]",
                               default=2048, check=POSITIVE)
    lora: dict = doc("LoRA adapters, trained instead of the model (TRL's peft_config): peft.LoraConfig fields, e.g. "
                     "{r: 16, lora_alpha: 32, target_modules: all-linear}; empty: full fine-tuning. Checkpoints, "
                     "rollbacks and guides are then the adapters' (the base model is loaded once). Needs the peft "
                     "extra. [ours]", default_factory=dict)
    tiny: TinyModelConfig = doc("Architecture of the embedded default (the language model of tiny-vl too).",
                                default_factory=TinyModelConfig)
    vision: TinyVisionConfig = doc("Vision tower of tiny-vl.", default_factory=TinyVisionConfig)
    warmup: WarmupConfig = doc("Warm start of the embedded default.", default_factory=WarmupConfig)


@dataclass
class TaskConfig:
    spec: str = doc(
        "Task: 'arith', 'scratch', 'vis-arith', 'vis-count' (built in; the last two are image prompts), "
        "'rg:NAME' (reasoning-gym), 'jsonl:PATH' or 'parquet:PATH' (question/answer rows, with an optional "
        "image column, verified with math-verify).",
        default="arith", check=NonEmpty(),
    )
    options: dict = doc(
        "Task options: for arith {terms, digits, ops}; for rg:NAME passed to reasoning_gym.create_dataset.",
        default_factory=dict,
    )
    train_size: int = doc(f"Training prompts (procedural tasks; files use all rows not in eval); at most {MAX_ITEMS:,}.",
                          default=20000, check=Range(1, MAX_ITEMS))
    eval_size: int = doc(f"Held-out prompts, never shared with the training split; at most {MAX_ITEMS:,}.",
                         default=300, check=Range(1, MAX_ITEMS))
    split_seed: int = doc("Seed that draws the train/eval split; fixed so every run sees the same split.",
                          default=1234, check=SEED)
    question_key: str = doc("Column of the question in jsonl/parquet rows.", default="question")
    answer_key: str = doc("Column of the reference answer in jsonl/parquet rows.", default="answer")
    image_key: str = doc("Column of an image prompt's image in jsonl/parquet rows: a path relative to the file, "
                         "or base64. Rows without it are text prompts.", default="image")
    reward_threshold: float = doc(
        "Reward is 1 when the verifier's score is >= this, else 0 (binary rewards). [paper: r in {0,1}]",
        default=1.0, check=Range(0, 1, lo_open=True),
    )
    verifier_timeout: float = doc(
        "Seconds one verification may take before it scores 0 (a hanging or raising verifier never "
        "kills a run); at most a day. [ours]",
        default=5.0, check=Range(0, 86400, lo_open=True),
    )
    max_failed_share: float = doc(
        "The run stops (one line, exit 1) when more than this share of one step's (or one evaluation's) "
        "verifications raise or time out: their zero rewards would say nothing about the answers. 1 never "
        "stops. [ours]", default=0.5, check=Range(0, 1),
    )


@dataclass
class TrainConfig:
    steps: int = doc("Optimizer steps of the run (its final trajectory).", default=300, check=POSITIVE)
    prompts_per_step: int = doc("Prompts per optimizer step (B), over all processes; each gets a group of n "
                                "samples, and a group may straddle two processes or micro-batches. The B x n "
                                "completions are train.grpo.per_device_train_batch_size x processes x "
                                "gradient_accumulation_steps, as in TRL: set either field (the other follows), or "
                                "neither (one micro-batch per process).", default=16, check=POSITIVE)
    checkpoint_every: int = doc("Save a full checkpoint (weights, optimizer, scheduler, RNG, data position) "
                                "every this many steps; rollback targets (AutoNPO's candidate look-aheads are "
                                "multiples of it). [ours]", default=20, check=POSITIVE)
    keep_checkpoints: int = doc("Weights-only checkpoints kept per folder, the newest (TRL's save_total_limit; 0: "
                                "all). A checkpoint where a rollback or a resume can land is kept whole and never "
                                "counted: docs/run-directory.md \"The run directory\". [ours]", default=0, check=NON_NEGATIVE)
    grpo: dict = doc(
        "Fields passed through to trl.GRPOConfig (num_generations = n, learning_rate, temperature, "
        "max_completion_length, beta, epsilon, loss_type, report_to, per_device_train_batch_size, "
        "gradient_accumulation_steps, gradient_checkpointing, ...), each meaning what it means in TRL. Fields that "
        "npo owns (output_dir, max_steps, seed, save_steps, save_total_limit, save_only_model, logging_steps, "
        "num_train_epochs) are refused here.",
        default_factory=dict,
    )


@dataclass
class EvalConfig:
    every: int = doc("Evaluate every this many steps (0: only at start and end).", default=50, check=NON_NEGATIVE)
    n: int = doc("Held-out items evaluated (at most task.eval_size).", default=300, check=POSITIVE)
    samples: int = doc("K sampled answers per item for mean@K (0 disables sampling).", default=4, check=NON_NEGATIVE)
    temperature: float = doc("Sampling temperature of mean@K.", default=1.0, check=POSITIVE)
    max_new_tokens: int = doc("Longest answer generated at evaluation (0: train.grpo.max_completion_length).",
                              default=0, check=NON_NEGATIVE)
    batch_size: int = doc("Items per generate() call.", default=256, check=POSITIVE)
    seed: int = doc("Seed of the sampled evaluation; the training RNG is not touched.", default=999, check=SEED)


@dataclass
class RunConfig:
    seed: int = doc("Seed of the RL run: data order, sampling, initialisation of anything random.",
                    default=0, check=SEED)
    method: str = doc(f"Training method, one of {', '.join(METHODS)}; luffy, exgrpo and rlep are presets of the "
                      "npo section (docs/baselines.md).", default="grpo", check=OneOf(METHODS))
    model: ModelConfig = doc("Which policy to train.", default_factory=ModelConfig)
    task: TaskConfig = doc("Which prompts and which verifier.", default_factory=TaskConfig)
    train: TrainConfig = doc("The RL run.", default_factory=TrainConfig)
    eval: EvalConfig = doc("Held-out evaluation.", default_factory=EvalConfig)
    npo: NPOSection = doc("NPO: gate, guide source, injection rules and interventions.", default_factory=NPOSection)
    replay: ReplayConfig = doc("The replay buffer of npo.source replay (ExGRPO).", default_factory=ReplayConfig)
    autonpo: AutoNPOConfig = doc("AutoNPO's controller (method: autonpo).", default_factory=AutoNPOConfig)


# ----------------------------------------------------------------------------- validation

    @functools.cached_property
    def resolved_grpo(self) -> dict[str, Any]:
        """`train.grpo` merged over npo's GRPO defaults and checked against trl.GRPOConfig, resolved once
        per config (`npo.config.trl_args.grpo_overrides`): every module reads it here. Read it; a caller
        that changes what it reads takes a copy."""
        return grpo_overrides(self)

    @functools.cached_property
    def resolved(self) -> Resolved:
        """The run's derived shape (TRL's arguments, n, G, processes, batch, chunk steps, precision),
        resolved once per config, at validation (`npo.config.trl_args.resolve`)."""
        return resolve(self)


def _build(cls, data: Any, where: str):
    """Build dataclass `cls` from a mapping, checking every key, type and range."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise UserError(f"{_join(where, key)}: unknown field (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp, at = hints[f.name], _join(where, f.name)
        kwargs[f.name] = _build(tp, data[f.name], at) if dataclasses.is_dataclass(tp) else check_type(
            data[f.name], tp, at)
    built = cls(**kwargs)
    for f in dataclasses.fields(cls):  # defaults too: a field's range holds whatever set it
        check = f.metadata.get("check")
        if check is not None and (msg := check.error(getattr(built, f.name))):
            raise UserError(f"{_join(where, f.name)}: {msg}")
    return built


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _require(cond: bool, where: str, msg: str):
    if not cond:
        raise UserError(f"{where}: {msg}")


def validate(cfg: RunConfig) -> RunConfig:
    """The rules that tie fields together (each field's own range was checked when it was built),
    then the GRPO pass-through against trl.GRPOConfig."""
    t = cfg.model.tiny
    _require(t.hidden_size % t.num_attention_heads == 0, "model.tiny.hidden_size",
             "must be divisible by num_attention_heads")
    _require(t.num_attention_heads % t.num_key_value_heads == 0, "model.tiny.num_key_value_heads",
             "must divide num_attention_heads")
    _require(cfg.eval.n <= cfg.task.eval_size, "eval.n", f"{cfg.eval.n} > task.eval_size ({cfg.task.eval_size}): "
             f"set eval.n to at most {cfg.task.eval_size}, or raise task.eval_size")
    n = cfg.resolved.n  # checks the pass-through; TRL's group: n + slots with fill add
    p = cfg.npo
    _require(-n <= p.replace_slot < n, "npo.replace_slot", f"must be in -{n}..{n - 1} (a slot of a group of {n})")
    _check_injection(cfg, n)
    interventions = parse_interventions(p.interventions, cfg.train.steps, ahead=p.source == "near_future")
    if cfg.method == "npo":
        _require(bool(p.interventions) or p.inject_when == "always", "npo.interventions",
                 "method npo needs at least one intervention (or npo.inject_when: always)")
    else:
        _require(not p.interventions, "npo.interventions", f"only method npo intervenes (method is {cfg.method})")
    _check_boundaries(cfg, interventions, cfg.resolved.chunk_steps)
    return cfg


def _check_injection(cfg: RunConfig, n: int) -> None:
    """The injection rules against each other and the source (docs/methods.md "NPO" says what each one does)."""
    p, kind = cfg.npo, cfg.npo.source.partition(":")[0]
    _require(kind != "near_future" or p.guide_mode == "ahead", "npo.guide_mode",
             "near-future guides are made ahead, from the live policy at the end of the look-ahead (use ahead)")
    _require(not (kind == "near_future" and p.inject_when == "always"), "npo.inject_when",
             "near_future guides come from an intervention's look-ahead: inject_when always needs another source")
    _require(not (p.inject_when == "always" and p.interventions), "npo.inject_when",
             "always injects on every step: remove npo.interventions, or use windows")
    _require(not (cfg.method == "autonpo" and kind != "near_future"), "npo.source",
             "AutoNPO's guide is its own checkpoint T (near_future)")
    _require(p.fill == "add" or p.slots <= n - 1, "npo.slots",
             f"replace keeps at least one on-policy sample: at most {n - 1} of a group of {n}")
    _require(p.targets == "batch" or (kind == "replay" and cfg.replay.share > 0), "npo.targets",
             "replayed groups exist only with npo.source replay and replay.share > 0")
    _require(p.controls == 0 or cfg.method != "grpo", "npo.controls",
             "controls are guided prompts whose guide is withheld: method grpo has no guides")
    _require(not p.effect_at_end or p.controls > 0, "npo.effect_at_end",
             "measures the windows' controls again at the end: set npo.controls > 0")
    if why := p.arms_error(cfg.method, cfg.train.checkpoint_every):
        _require(False, *why)
    _require(cfg.replay.share == 0 or kind == "replay", "replay.share",
             "questions are drawn from the replay buffer only with npo.source replay")
    _require(not (GUIDE_LOSSES[p.guide_loss].needs_logps and not SOURCE_KINDS[kind].logps),
             "npo.guide_loss", f"{p.guide_loss} needs the guide's behaviour log-probs over the policy's tokens; "
             f"{kind} guides have none (use shaping or on_policy)")


def _check_boundaries(cfg: RunConfig, interventions, chunk: int) -> None:
    why = f"must be a multiple of {chunk}, the optimizer steps one generation batch serves (a rollback lands there)"
    _require(cfg.train.checkpoint_every % chunk == 0, "train.checkpoint_every", why)
    for i, iv in enumerate(interventions):
        for key in ("at_step", "lookahead", "window"):
            value = getattr(iv, key)
            _require(not isinstance(value, int) or value % chunk == 0, f"npo.interventions[{i}].{key}", why)
    if cfg.method == "autonpo":
        every = cfg.train.checkpoint_every
        _require(all(d % every == 0 for d in cfg.autonpo.deltas), "autonpo.deltas",
                 f"must be multiples of train.checkpoint_every ({every}): T - Delta must be a checkpoint")
        _require(cfg.autonpo.window % chunk == 0, "autonpo.window", why)


def resolved(cfg: RunConfig) -> RunConfig:
    """The config as it ran: `train.grpo` with npo's defaults written out beside the user's values."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, grpo=dict(cfg.resolved_grpo)))


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read YAML (or start from defaults when `path` is None), apply `--set` overrides, validate."""
    data = read_mapping(path) if path is not None else {}
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value)
    return build_config(data, str(path) if path is not None else "defaults")


def build_config(data: dict, source: str) -> RunConfig:
    """The RunConfig of a YAML mapping (or the Python API's, `npo.api.run_config`), every field
    checked; errors are prefixed with `source`."""
    try:
        cfg = _build(RunConfig, apply_preset(data), "")
        return validate(cfg)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def field_docs(cls=RunConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted name, help, default) for every field, recursively: the source of docs/config.md's table."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = _join(prefix, f.name)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(field_docs(tp, name))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((name, f.metadata.get("help", ""), default))
    return rows


def fields_markdown() -> str:
    """docs/config.md's table of config fields, generated from the dataclasses (never edited by hand)."""
    lines = ["| field | default | meaning |", "|---|---|---|"]
    for name, help_text, default in field_docs():
        lines.append(f"| `{name}` | `{default!r}` | {help_text} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m npo.config.run: docs/config.md's blocks between the fields and grpo markers
    print(fields_markdown(), grpo_defaults_markdown(), sep="\n\n")
