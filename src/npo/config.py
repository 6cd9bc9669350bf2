"""One YAML config per run: dataclasses per concern, every field documented once.

Each field's `help` says what it does and where its default comes from: `[paper]` for a value the
NPO paper states, `[ours]` for a choice of this project (measured where it says so), `[trl]` for a
value passed through to TRL. `npo config --help-fields` prints them all.

Loading validates every field (type and range) before any work starts; an error names the file and
the dotted field and exits with code 2 (see `npo.errors.UserError`).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from npo.errors import UserError

METHODS = ("grpo", "npo", "autonpo")
GUIDE_SOURCES = ("near_future", "self")
GUIDE_MODES = ("on_demand", "ahead")
GUIDE_LOSSES = ("on_policy", "importance", "shaping")


def doc(help: str, **kwargs):
    """A dataclass field with its documentation attached."""
    return field(metadata={"help": help}, **kwargs)


@dataclass
class TinyModelConfig:
    """Architecture of the embedded default: a Qwen2 causal LM built from a config."""

    hidden_size: int = doc("Width of the residual stream. [ours: ~1M parameters in all]", default=128)
    num_hidden_layers: int = doc("Transformer blocks. [ours]", default=4)
    num_attention_heads: int = doc("Query heads. [ours]", default=4)
    num_key_value_heads: int = doc("Key/value heads (grouped-query attention). [ours]", default=2)
    intermediate_size: int = doc("MLP width. [ours]", default=512)
    max_position_embeddings: int = doc("Longest prompt + completion in tokens. [ours]", default=128)


@dataclass
class WarmupConfig:
    """`npo warmup`: a short supervised warm start of the embedded default to a *weak* base."""

    steps: int = doc("SFT optimizer steps (cosine schedule); few on purpose, to leave room for RL. [ours]", default=1000)
    batch_size: int = doc("SFT batch size in sequences. [ours]", default=128)
    lr: float = doc("SFT AdamW learning rate. [ours]", default=2e-3)
    lr_floor: float = doc("Cosine decay ends at lr_floor * lr (1.0 = constant after warm-up). [ours]",
                          default=1.0)
    seed: int = doc("Seed of the warm start; shared by all RL seeds so they start from one base. [ours]", default=0)


@dataclass
class ModelConfig:
    path: str = doc(
        "'tiny' for the embedded default (built, warmed up and cached on first use), or a local Hugging "
        "Face model folder (config.json + weights + tokenizer). Nothing is downloaded.",
        default="tiny",
    )
    tiny: TinyModelConfig = doc("Architecture of the embedded default.", default_factory=TinyModelConfig)
    warmup: WarmupConfig = doc("Warm start of the embedded default.", default_factory=WarmupConfig)


@dataclass
class TaskConfig:
    spec: str = doc(
        "Task: 'arith' (built in), 'rg:NAME' (reasoning-gym), 'jsonl:PATH' or 'parquet:PATH' "
        "(question/answer rows verified with math-verify).",
        default="arith",
    )
    options: dict = doc(
        "Task options: for arith {terms, digits, ops}; for rg:NAME passed to reasoning_gym.create_dataset.",
        default_factory=dict,
    )
    train_size: int = doc("Training prompts (procedural tasks; files use all rows not in eval).", default=20000)
    eval_size: int = doc("Held-out prompts, never shared with the training split.", default=300)
    split_seed: int = doc("Seed that draws the train/eval split; fixed so every run sees the same split.", default=1234)
    question_key: str = doc("Column of the question in jsonl/parquet rows.", default="question")
    answer_key: str = doc("Column of the reference answer in jsonl/parquet rows.", default="answer")
    reward_threshold: float = doc(
        "Reward is 1 when the verifier's score is >= this, else 0 (binary rewards). [paper: r in {0,1}]",
        default=1.0,
    )
    verifier_timeout: float = doc(
        "Seconds one verification may take before it scores 0 (a hanging or raising verifier never "
        "kills a run). [ours]",
        default=5.0,
    )


@dataclass
class TrainConfig:
    steps: int = doc("Optimizer steps of the run (its final trajectory).", default=300)
    prompts_per_step: int = doc("Prompts per optimizer step (B), over all processes; each gets a group of n "
                                "samples, and a group may straddle two processes.", default=16)
    checkpoint_every: int = doc("Save a full checkpoint (weights, optimizer, scheduler, RNG, data position) "
                                "every this many steps; rollback targets. [ours]", default=50)
    grpo: dict = doc(
        "Fields passed through to trl.GRPOConfig (num_generations = n, learning_rate, temperature, "
        "max_completion_length, beta, epsilon, loss_type, report_to, ...). Fields that npo owns "
        "(output_dir, max_steps, seed, save_steps, per_device_train_batch_size) are refused here.",
        default_factory=dict,
    )


@dataclass
class EvalConfig:
    every: int = doc("Evaluate every this many steps (0: only at start and end).", default=50)
    n: int = doc("Held-out items evaluated (at most task.eval_size).", default=300)
    samples: int = doc("K sampled answers per item for mean@K (0 disables sampling).", default=4)
    temperature: float = doc("Sampling temperature of mean@K.", default=1.0)
    max_new_tokens: int = doc("Longest answer generated at evaluation (0: train.grpo.max_completion_length).",
                              default=0)
    batch_size: int = doc("Items per generate() call.", default=256)
    seed: int = doc("Seed of the sampled evaluation; the training RNG is not touched.", default=999)


@dataclass
class NPOConfig:
    """Near-Future Policy Optimization (method: npo). Symbols as in NPO_METHOD.md."""

    interventions: list = doc(
        "The interventions, in order: {kind: bootstrap, lookahead: Delta} (scout 0 -> Delta, restart at "
        "0 guided by the scout) and {kind: plateau, at_step: t, lookahead: Delta, window: W} (train on to "
        "t + Delta, roll back to t, retrain W steps guided; at_step may be 'auto-plateau'). W defaults "
        "to Delta. [paper: the two manual interventions]",
        default_factory=list,
    )
    tau: float = doc("Gate tau: a group is guided when its on-policy accuracy p_hat < tau. [paper: 0.6]",
                     default=0.6)
    replace_slot: int = doc("Which slot of a gated group the guide replaces (-1: the last). [paper: the n-th]",
                            default=-1)
    source: str = doc(f"Guide source, one of {', '.join(GUIDE_SOURCES)}: the run's checkpoint Delta steps "
                      "ahead, or the current policy itself (Delta = 0, best-of-k: the control). [ours]",
                      default="near_future")
    k: int = doc("Guide tries per prompt: the source samples up to k completions and keeps the first "
                 "verified-correct one. [ours: small, so Q measures the guide, not resampling luck]", default=4)
    guide_mode: str = doc(f"When guides are made, one of {', '.join(GUIDE_MODES)}: for the prompts that fail "
                          "the gate, as they come; or for all the window's prompts right after the rollback "
                          "(the look-ahead pass saw them; the self source is always on_demand). [ours]",
                          default="on_demand")
    guide_temperature: float = doc("Sampling temperature of the guide source. [ours]", default=1.0)
    guide_loss: str = doc(f"Loss on guide rows, one of {', '.join(GUIDE_LOSSES)}: as if on-policy (no "
                          "importance weight) [paper], min(pi_theta / pi_guide, c) per token, or LUFFY's "
                          "f(p) = p / (p + gamma).", default="on_policy")
    importance_cap: float = doc("c: truncation of the importance weight of guide_loss importance. [ours]",
                                default=2.0)
    shaping_gamma: float = doc("gamma of guide_loss shaping. [LUFFY: 0.1]", default=0.1)
    plateau_window: int = doc("auto-plateau: a plateau is when the mean reward of the last plateau_window "
                              "steps beats the window before by less than plateau_min_gain. [ours]", default=50)
    plateau_min_gain: float = doc("auto-plateau: see plateau_window. [ours]", default=0.01)
    plateau_min_step: int = doc("auto-plateau: no plateau is declared before this step. [ours]", default=100)


@dataclass
class AutoNPOConfig:
    """AutoNPO (method: autonpo): when to intervene and how far to look ahead (npo.autonpo.Controller).
    Gate, guide source settings and guide_loss come from the npo section."""

    deltas: list = doc("Candidate look-aheads Delta (each rounded to the checkpoint at or before T - Delta); "
                       "Delta* = argmax S among them. [ours]", default_factory=lambda: [20, 40, 80])
    window: int = doc("W: guided steps after the rollback to T - Delta*. [ours]", default=40)
    ema: float = doc("EMA decay of the reward and entropy signals. [ours]", default=0.9)
    warmup_steps: int = doc("Early trigger: not before this step. [ours]", default=30)
    r_low: float = doc("Early trigger (bootstrapping): reward EMA below this after warmup_steps: most groups "
                       "all wrong. [ours; the tiny default starts at 0.26 and does not fire it]", default=0.2)
    stagnation_window: int = doc("Late trigger: the reward EMA gained < stagnation_eps over this many steps "
                                 "and the entropy EMA is below entropy_fraction x its running peak. [ours, "
                                 "measured: on tiny-grpo's 3 seeds (50, 0.01, 0.7) first fire at steps 123, 205, "
                                 "173, inside the reward plateau of steps 100-300; 0.9 fires at 51-98, while the "
                                 "reward still climbs]", default=50)
    stagnation_eps: float = doc("Late trigger: see stagnation_window. [ours]", default=0.01)
    entropy_fraction: float = doc("Late trigger: see stagnation_window (rho). [ours]", default=0.7)
    cooldown: int = doc("Steps after a trigger (carried out or declined) with no new trigger. [ours]", default=50)
    max_interventions: int = doc("Cap on interventions per run. [ours]", default=2)
    max_extra_fraction: float = doc("Cap on discarded optimizer steps, as a fraction of train.steps. [ours]",
                                    default=0.5)
    min_s: float = doc("Decline when the best candidate's S is below this. [ours]", default=0.0)
    min_q: float = doc("Decline when the best candidate's Q is below this. [ours]", default=0.0)
    pool_size: int = doc("Mistake pool: at most this many (prompt, step) entries. [ours]", default=1024)
    pool_age: int = doc("Mistake pool: entries older than this many steps age out. [ours]", default=200)
    pool_width: int = doc("Q, V, S of a candidate use the pool prompts failed within this many steps of "
                          "T - Delta. [ours]", default=20)
    signal_prompts: int = doc("At most this many pool prompts per candidate measurement. [ours]", default=64)
    signal_k: int = doc("Tries per prompt when measuring Q of the source pi_T. [ours]", default=8)


@dataclass
class RunConfig:
    seed: int = doc("Seed of the RL run: data order, sampling, initialisation of anything random.", default=0)
    method: str = doc(f"Training method, one of {', '.join(METHODS)}.", default="grpo")
    model: ModelConfig = doc("Which policy to train.", default_factory=ModelConfig)
    task: TaskConfig = doc("Which prompts and which verifier.", default_factory=TaskConfig)
    train: TrainConfig = doc("The RL run.", default_factory=TrainConfig)
    eval: EvalConfig = doc("Held-out evaluation.", default_factory=EvalConfig)
    npo: NPOConfig = doc("NPO: gate, guide source and interventions (method: npo).", default_factory=NPOConfig)
    autonpo: AutoNPOConfig = doc("AutoNPO's controller (method: autonpo).", default_factory=AutoNPOConfig)


# GRPOConfig fields npo sets itself; a user value would silently fight the run directory layout.
OWNED_GRPO_FIELDS = {
    "output_dir", "max_steps", "seed", "data_seed", "save_steps", "save_strategy",
    "per_device_train_batch_size", "logging_steps", "num_train_epochs", "disable_tqdm",
}

# npo's defaults for the pass-through, applied under the user's values. [ours]
GRPO_DEFAULTS: dict[str, Any] = {
    "num_generations": 8,
    "learning_rate": 1e-4,
    "temperature": 1.0,
    "max_completion_length": 8,
    "beta": 0.0,
    "loss_type": "grpo",
    "report_to": "none",
    "activation_checkpointing": False,
    "lr_scheduler_type": "constant",
    "max_grad_norm": 1.0,
}


# ----------------------------------------------------------------------------- validation


def _type_name(tp) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "a mapping", list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


def _check_type(value, tp, where: str):
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, bool) or tp is float and isinstance(value, bool):
        raise UserError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if not isinstance(value, tp):
        raise UserError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _build(cls, data: Any, where: str):
    """Build dataclass `cls` from a mapping, checking every key and type."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            known = ", ".join(sorted(names))
            raise UserError(f"{_join(where, key)}: unknown field (known: {known})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, data[f.name], _join(where, f.name))
        else:
            kwargs[f.name] = _check_type(data[f.name], tp, _join(where, f.name))
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _require(cond: bool, where: str, msg: str):
    if not cond:
        raise UserError(f"{where}: {msg}")


def validate(cfg: RunConfig) -> RunConfig:
    """Range checks of every field, then the GRPO pass-through against trl.GRPOConfig."""
    _require(cfg.method in METHODS, "method", f"expected one of {', '.join(METHODS)}, got {cfg.method!r}")
    _require(cfg.seed >= 0, "seed", "must be >= 0")
    m = cfg.model
    _require(bool(m.path), "model.path", "must not be empty")
    t = m.tiny
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "intermediate_size", "max_position_embeddings"):
        _require(getattr(t, name) > 0, f"model.tiny.{name}", "must be > 0")
    _require(t.hidden_size % t.num_attention_heads == 0, "model.tiny.hidden_size",
             "must be divisible by num_attention_heads")
    _require(t.num_attention_heads % t.num_key_value_heads == 0, "model.tiny.num_key_value_heads",
             "must divide num_attention_heads")
    _require(m.warmup.steps >= 0, "model.warmup.steps", "must be >= 0")
    _require(m.warmup.batch_size > 0, "model.warmup.batch_size", "must be > 0")
    _require(m.warmup.lr > 0, "model.warmup.lr", "must be > 0")
    _require(0 <= m.warmup.lr_floor <= 1, "model.warmup.lr_floor", "must be in [0, 1]")
    k = cfg.task
    _require(bool(k.spec), "task.spec", "must not be empty")
    _require(k.train_size > 0, "task.train_size", "must be > 0")
    _require(k.eval_size > 0, "task.eval_size", "must be > 0")
    _require(0.0 < k.reward_threshold <= 1.0, "task.reward_threshold", "must be in (0, 1]")
    _require(k.verifier_timeout > 0, "task.verifier_timeout", "must be > 0")
    r = cfg.train
    _require(r.steps > 0, "train.steps", "must be > 0")
    _require(r.prompts_per_step > 0, "train.prompts_per_step", "must be > 0")
    _require(r.checkpoint_every > 0, "train.checkpoint_every", "must be > 0")
    e = cfg.eval
    _require(e.every >= 0, "eval.every", "must be >= 0")
    _require(0 < e.n <= k.eval_size, "eval.n", f"must be in 1..task.eval_size ({k.eval_size})")
    _require(e.samples >= 0, "eval.samples", "must be >= 0")
    _require(e.temperature > 0, "eval.temperature", "must be > 0")
    _require(e.max_new_tokens >= 0, "eval.max_new_tokens", "must be >= 0")
    _require(e.batch_size > 0, "eval.batch_size", "must be > 0")
    n = grpo_kwargs(cfg, output_dir="/nonexistent-npo-validation")["num_generations"]  # checks the pass-through
    validate_npo(cfg, n)
    return cfg


def validate_npo(cfg: RunConfig, n: int) -> None:
    from npo.interventions import parse_interventions

    p = cfg.npo
    _require(0 < p.tau <= 1, "npo.tau", "must be in (0, 1]")
    _require(-n <= p.replace_slot < n, "npo.replace_slot", f"must be in -{n}..{n - 1} (a slot of a group of {n})")
    _require(p.source in GUIDE_SOURCES, "npo.source", f"expected one of {', '.join(GUIDE_SOURCES)}")
    _require(p.k > 0, "npo.k", "must be > 0")
    _require(p.guide_mode in GUIDE_MODES, "npo.guide_mode", f"expected one of {', '.join(GUIDE_MODES)}")
    _require(p.guide_temperature > 0, "npo.guide_temperature", "must be > 0")
    _require(p.guide_loss in GUIDE_LOSSES, "npo.guide_loss", f"expected one of {', '.join(GUIDE_LOSSES)}")
    _require(p.importance_cap > 0, "npo.importance_cap", "must be > 0")
    _require(p.shaping_gamma > 0, "npo.shaping_gamma", "must be > 0")
    _require(p.plateau_window > 0, "npo.plateau_window", "must be > 0")
    _require(p.plateau_min_step >= 0, "npo.plateau_min_step", "must be >= 0")
    parse_interventions(p.interventions, cfg.train.steps)
    a = cfg.autonpo
    _require(bool(a.deltas) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in a.deltas),
             "autonpo.deltas", "expected a non-empty list of integers >= 1")
    for name in ("window", "warmup_steps", "stagnation_window", "max_interventions", "pool_size", "pool_age",
                 "signal_prompts", "signal_k"):
        _require(getattr(a, name) > 0, f"autonpo.{name}", "must be > 0")
    _require(0 <= a.ema < 1, "autonpo.ema", "must be in [0, 1)")
    _require(0 < a.entropy_fraction <= 1, "autonpo.entropy_fraction", "must be in (0, 1]")
    _require(a.cooldown >= 0 and a.pool_width >= 0, "autonpo.cooldown", "cooldown and pool_width must be >= 0")
    _require(a.max_extra_fraction >= 0, "autonpo.max_extra_fraction", "must be >= 0")
    if cfg.method == "npo":
        _require(bool(p.interventions), "npo.interventions", "method npo needs at least one intervention")
    else:
        _require(not p.interventions, "npo.interventions", f"only method npo intervenes (method is {cfg.method})")


def grpo_overrides(cfg: RunConfig) -> dict[str, Any]:
    """The user's GRPO pass-through merged over npo's defaults, keys checked against GRPOConfig."""
    from trl import GRPOConfig

    fields = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    merged = dict(GRPO_DEFAULTS)
    for key, value in cfg.train.grpo.items():
        where = f"train.grpo.{key}"
        if key in OWNED_GRPO_FIELDS:
            raise UserError(f"{where}: set by npo (see train.steps, train.prompts_per_step, "
                            f"train.checkpoint_every, seed); remove it")
        if key not in fields:
            raise UserError(f"{where}: not a field of trl.GRPOConfig")
        default = fields[key].default
        if isinstance(default, (bool, int, float, str)) and value is not None:
            value = _check_type(value, type(default), where)
        merged[key] = value
    return merged


def grpo_kwargs(cfg: RunConfig, output_dir: str) -> dict[str, Any]:
    """Everything GRPOConfig needs; constructing it here surfaces TRL's own checks as UserErrors."""
    import torch
    from trl import GRPOConfig

    kw = grpo_overrides(cfg)
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
    try:
        GRPOConfig(**kw)
    except (ValueError, TypeError) as exc:
        raise UserError(f"train.grpo: {str(exc).splitlines()[0]}") from None
    return kw


# ----------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a','b','c'], value parsed as YAML scalar)."""
    if "=" not in text:
        raise UserError(f"--set {text}: expected key=value")
    key, raw = text.split("=", 1)
    if not key:
        raise UserError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {'.'.join(path)}: {part} is not a mapping")
    node[path[-1]] = value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read YAML (or start from defaults when `path` is None), apply `--set` overrides, validate."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise UserError(f"{source}: no such config file")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise UserError(f"{source}:{where} not valid YAML") from None
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value)
    try:
        cfg = _build(RunConfig, data, "")
        return validate(cfg)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def field_docs(cls=RunConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted name, help, default) for every field, recursively: the source of README's table."""
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
    """The README's table of config fields, generated from the dataclasses (never edited by hand)."""
    lines = ["| field | default | meaning |", "|---|---|---|"]
    for name, help_text, default in field_docs():
        lines.append(f"| `{name}` | `{default!r}` | {help_text} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m npo.config > the README block between the fields markers
    print(fields_markdown())
