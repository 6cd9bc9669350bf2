"""One YAML config per run: dataclasses per concern, every field documented once.

Each field's `help` says what it does and where its default comes from: `[paper]` for a value the
NPO paper states, `[ours]` for a choice of this project (measured where it says so). Its `check`
(beside it) is the range it must lie in. `python -m npo.config` prints the README's table.

Loading validates every field (type and range) before any work starts; an error names the file and
the dotted field and exits with code 2 (see `npo.errors.UserError`). `train.grpo` passes through to
`trl.GRPOConfig` over npo's own defaults (`npo.grpo_args`); `resolved(cfg)` is the config with every
GRPO value npo sets written out, which is what a run folder records.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from npo.checks import NON_NEGATIVE, POSITIVE, NonEmpty, OneOf, PositiveInts, Range, check_type, doc
from npo.configfile import apply_override, parse_override, read_mapping
from npo.errors import UserError
from npo.grpo_args import grpo_defaults_markdown, grpo_kwargs, grpo_overrides
from npo.interventions import parse_interventions

METHODS = ("grpo", "npo", "autonpo")
GUIDE_SOURCES = ("near_future", "self")
GUIDE_MODES = ("ahead", "on_demand")
GUIDE_LOSSES = ("on_policy", "importance", "shaping")


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
class WarmupConfig:
    """`npo warmup`: a short supervised warm start of the embedded default to a *weak* base."""

    steps: int = doc("SFT optimizer steps (cosine schedule); few on purpose, to leave room for RL. [ours]",
                     default=1000, check=NON_NEGATIVE)
    batch_size: int = doc("SFT batch size in sequences. [ours]", default=128, check=POSITIVE)
    lr: float = doc("SFT AdamW learning rate. [ours]", default=2e-3, check=POSITIVE)
    lr_floor: float = doc("Cosine decay ends at lr_floor * lr (1.0 = constant after warm-up). [ours]",
                          default=1.0, check=Range(0, 1))
    seed: int = doc("Seed of the warm start; shared by all RL seeds so they start from one base. [ours]", default=0)


@dataclass
class ModelConfig:
    path: str = doc(
        "'tiny' for the embedded default (built, warmed up and cached on first use), or a local Hugging "
        "Face model folder (config.json + weights + tokenizer). Nothing is downloaded.",
        default="tiny", check=NonEmpty(),
    )
    tiny: TinyModelConfig = doc("Architecture of the embedded default.", default_factory=TinyModelConfig)
    warmup: WarmupConfig = doc("Warm start of the embedded default.", default_factory=WarmupConfig)


@dataclass
class TaskConfig:
    spec: str = doc(
        "Task: 'arith' (built in), 'rg:NAME' (reasoning-gym), 'jsonl:PATH' or 'parquet:PATH' "
        "(question/answer rows verified with math-verify).",
        default="arith", check=NonEmpty(),
    )
    options: dict = doc(
        "Task options: for arith {terms, digits, ops}; for rg:NAME passed to reasoning_gym.create_dataset.",
        default_factory=dict,
    )
    train_size: int = doc("Training prompts (procedural tasks; files use all rows not in eval).",
                          default=20000, check=POSITIVE)
    eval_size: int = doc("Held-out prompts, never shared with the training split.", default=300, check=POSITIVE)
    split_seed: int = doc("Seed that draws the train/eval split; fixed so every run sees the same split.",
                          default=1234)
    question_key: str = doc("Column of the question in jsonl/parquet rows.", default="question")
    answer_key: str = doc("Column of the reference answer in jsonl/parquet rows.", default="answer")
    reward_threshold: float = doc(
        "Reward is 1 when the verifier's score is >= this, else 0 (binary rewards). [paper: r in {0,1}]",
        default=1.0, check=Range(0, 1, lo_open=True),
    )
    verifier_timeout: float = doc(
        "Seconds one verification may take before it scores 0 (a hanging or raising verifier never "
        "kills a run). [ours]",
        default=5.0, check=POSITIVE,
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
                                "samples, and a group may straddle two processes.", default=16, check=POSITIVE)
    checkpoint_every: int = doc("Save a full checkpoint (weights, optimizer, scheduler, RNG, data position) "
                                "every this many steps; rollback targets (AutoNPO's candidate look-aheads are "
                                "multiples of it). [ours]", default=20, check=POSITIVE)
    grpo: dict = doc(
        "Fields passed through to trl.GRPOConfig (num_generations = n, learning_rate, temperature, "
        "max_completion_length, beta, epsilon, loss_type, report_to, ...). Fields that npo owns "
        "(output_dir, max_steps, seed, save_steps, per_device_train_batch_size) are refused here.",
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
                     default=0.6, check=Range(0, 1, lo_open=True))
    replace_slot: int = doc("Which slot of a gated group the guide replaces (-1: the last). [paper: the n-th]",
                            default=-1)
    source: str = doc(f"Guide source, one of {', '.join(GUIDE_SOURCES)}: the run's checkpoint Delta steps "
                      "ahead, or the current policy itself (Delta = 0, best-of-k: the control). [ours]",
                      default="near_future", check=OneOf(GUIDE_SOURCES))
    k: int = doc("Guide tries per prompt: the source samples up to k completions and keeps the first "
                 "verified-correct one. [ours: small, so Q measures the guide, not resampling luck]",
                 default=4, check=POSITIVE)
    guide_mode: str = doc(f"When near-future guides are made, one of {', '.join(GUIDE_MODES)}: at the end of the "
                          "look-ahead, the live policy writes the bank for every prompt of the window (known from "
                          "the data order) before the rollback replaces it. on_demand (for gated prompts as they "
                          "come) would keep a second copy of the model alive through the window and is refused for "
                          "near_future; the self source always asks on demand. [ours]",
                          default="ahead", check=OneOf(GUIDE_MODES))
    guide_temperature: float = doc("Sampling temperature of the guide source. [ours]", default=1.0, check=POSITIVE)
    guide_loss: str = doc(f"Loss on guide rows, one of {', '.join(GUIDE_LOSSES)}: as if on-policy (no "
                          "importance weight) [paper], min(pi_theta / pi_guide, c) per token, or LUFFY's "
                          "f(p) = p / (p + gamma).", default="on_policy", check=OneOf(GUIDE_LOSSES))
    importance_cap: float = doc("c: truncation of the importance weight of guide_loss importance. [ours]",
                                default=2.0, check=POSITIVE)
    shaping_gamma: float = doc("gamma of guide_loss shaping. [LUFFY: 0.1]", default=0.1, check=POSITIVE)
    plateau_window: int = doc("auto-plateau: a plateau is when the mean reward of the last plateau_window "
                              "steps beats the window before by less than plateau_min_gain. [ours]",
                              default=50, check=POSITIVE)
    plateau_min_gain: float = doc("auto-plateau: see plateau_window. [ours]", default=0.01)
    plateau_min_step: int = doc("auto-plateau: no plateau is declared before this step. [ours]",
                                default=100, check=NON_NEGATIVE)


@dataclass
class AutoNPOConfig:
    """AutoNPO (method: autonpo): when to intervene and how far to look ahead (npo.autonpo.Controller).
    Gate, guide source settings and guide_loss come from the npo section."""

    deltas: list = doc("Candidate look-aheads Delta, multiples of train.checkpoint_every (triggers fire on "
                       "checkpoint steps, so T - Delta is a checkpoint); Delta* = argmax S among them. [ours]",
                       default_factory=lambda: [20, 40, 80], check=PositiveInts())
    window: int = doc("W: guided steps after the rollback to T - Delta*. [ours]", default=40, check=POSITIVE)
    ema: float = doc("EMA decay of the reward and entropy signals. [ours]",
                     default=0.9, check=Range(0, 1, hi_open=True))
    warmup_steps: int = doc("Early trigger: not before this step. [ours]", default=30, check=POSITIVE)
    r_low: float = doc("Early trigger (bootstrapping): reward EMA below this after warmup_steps: most groups "
                       "all wrong. [ours; the tiny default starts at 0.26 and does not fire it]", default=0.2)
    stagnation_window: int = doc("Late trigger: the reward EMA gained < stagnation_eps over this many steps "
                                 "and the entropy EMA is below entropy_fraction x its running peak. [ours, "
                                 "measured: on tiny-grpo's 3 seeds (50, 0.01, 0.7) first fire at steps 123, 205, "
                                 "173, inside the reward plateau of steps 100-300; 0.9 fires at 51-98, while the "
                                 "reward still climbs]", default=50, check=POSITIVE)
    stagnation_eps: float = doc("Late trigger: see stagnation_window. [ours]", default=0.01)
    entropy_fraction: float = doc("Late trigger: see stagnation_window (rho). [ours]",
                                  default=0.7, check=Range(0, 1, lo_open=True))
    cooldown: int = doc("Steps after a trigger (carried out or declined) with no new trigger. [ours]",
                        default=50, check=NON_NEGATIVE)
    max_interventions: int = doc("Cap on interventions per run. [ours]", default=2, check=POSITIVE)
    max_extra_fraction: float = doc("Cap on discarded optimizer steps, as a fraction of train.steps. [ours]",
                                    default=0.5, check=NON_NEGATIVE)
    min_s: float = doc("Decline when the best candidate's S is below this. [ours]", default=0.0)
    min_q: float = doc("Decline when the best candidate's Q is below this. [ours]", default=0.0)
    pool_size: int = doc("Mistake pool: at most this many (prompt, step) entries. [ours]",
                         default=1024, check=POSITIVE)
    pool_age: int = doc("Mistake pool: entries older than this many steps age out. [ours]",
                        default=200, check=POSITIVE)
    pool_width: int = doc("Q, V, S of a candidate use the pool prompts failed within this many steps of "
                          "T - Delta. [ours]", default=20, check=NON_NEGATIVE)
    signal_prompts: int = doc("At most this many pool prompts per candidate measurement. [ours]",
                              default=64, check=POSITIVE)
    signal_k: int = doc("Tries per prompt when measuring Q of the source pi_T. [ours]", default=8, check=POSITIVE)


@dataclass
class RunConfig:
    seed: int = doc("Seed of the RL run: data order, sampling, initialisation of anything random.",
                    default=0, check=NON_NEGATIVE)
    method: str = doc(f"Training method, one of {', '.join(METHODS)}.", default="grpo", check=OneOf(METHODS))
    model: ModelConfig = doc("Which policy to train.", default_factory=ModelConfig)
    task: TaskConfig = doc("Which prompts and which verifier.", default_factory=TaskConfig)
    train: TrainConfig = doc("The RL run.", default_factory=TrainConfig)
    eval: EvalConfig = doc("Held-out evaluation.", default_factory=EvalConfig)
    npo: NPOConfig = doc("NPO: gate, guide source and interventions (method: npo).", default_factory=NPOConfig)
    autonpo: AutoNPOConfig = doc("AutoNPO's controller (method: autonpo).", default_factory=AutoNPOConfig)


# ----------------------------------------------------------------------------- validation


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
    _require(cfg.eval.n <= cfg.task.eval_size, "eval.n", f"must be in 1..task.eval_size ({cfg.task.eval_size})")
    g = grpo_kwargs(cfg, output_dir="/nonexistent-npo-validation")  # checks the pass-through
    n = g["num_generations"]
    p = cfg.npo
    _require(-n <= p.replace_slot < n, "npo.replace_slot", f"must be in -{n}..{n - 1} (a slot of a group of {n})")
    _require(p.source != "near_future" or p.guide_mode == "ahead", "npo.guide_mode",
             "near-future guides are made ahead, from the live policy at the end of the look-ahead (use ahead)")
    interventions = parse_interventions(p.interventions, cfg.train.steps, ahead=p.source == "near_future")
    if cfg.method == "npo":
        _require(bool(p.interventions), "npo.interventions", "method npo needs at least one intervention")
    else:
        _require(not p.interventions, "npo.interventions", f"only method npo intervenes (method is {cfg.method})")
    _check_boundaries(cfg, interventions, chunk_steps(g))
    return cfg


def chunk_steps(g: dict) -> int:
    """Optimizer steps one generation batch serves (TRL reuses it steps_per_generation x num_iterations
    micro-steps): a rollback or resume must land on a multiple, or TRL regenerates mid-batch."""
    accum = g.get("gradient_accumulation_steps") or 1
    return (g.get("num_iterations") or 1) * (g.get("steps_per_generation") or accum) // accum


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
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, grpo=grpo_overrides(cfg)))


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read YAML (or start from defaults when `path` is None), apply `--set` overrides, validate."""
    data = read_mapping(path) if path is not None else {}
    source = str(path) if path is not None else "defaults"
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


if __name__ == "__main__":  # python -m npo.config: the README blocks between the fields and grpo markers
    print(fields_markdown(), grpo_defaults_markdown(), sep="\n\n")
