"""The Python API, shaped like TRL's: `NPOConfig` is a `trl.GRPOConfig` plus npo's fields, and
`NPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset, processing_class, guide=...)`
takes what `GRPOTrainer` takes; `trainer.train()` runs the whole method (look-aheads, rollbacks,
guided windows, evaluations) and returns the run's summary.

The API and the YAML config are one description of a run: `run_config` turns the API's arguments
into the `npo.config.run.RunConfig` the loops read, validated field by field as a YAML file is, and
`api_arguments` turns a RunConfig back into the API's arguments. `npo train CONFIG` is
`NPOTrainer(**api_arguments(load_config(CONFIG), out)).train()`.

How the fields correspond:

| YAML | API |
|---|---|
| seed, train.steps, train.checkpoint_every | `args.seed`, `args.max_steps`, `args.save_steps` |
| train.keep_checkpoints | `args.save_total_limit` |
| train.prompts_per_step | `args.per_device_train_batch_size` x processes x `args.gradient_accumulation_steps` / `args.num_generations` (TRL counts completions) |
| train.grpo.* | the GRPOConfig fields of `args` (npo's defaults where `npo.config.trl_args.GRPO_DEFAULTS` says) |
| eval.* | `args.heldout_*` (npo's held-out evaluation; TRL's own eval loop is not used) |
| task.reward_threshold, verifier_timeout, max_failed_share | the same names on `args` |
| task.* | `task=` (a spec or `npo.config.run.TaskConfig`), or `train_dataset` / `eval_dataset` / `reward_funcs` |
| model.* | `model=` (a path, 'tiny', a `npo.config.run.ModelConfig`, or a model object with `processing_class`) |
| model.lora | `peft_config=` (a `peft.LoraConfig`) |
| method, npo.*, replay.*, autonpo.* | `guide=` (`npo.config.methods`: NearFuture, SelfGuide, AutoNPO, LUFFY, ...) |
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerState
from trl import GRPOConfig

from npo.config.methods import GRPO, Method, guide_of
from npo.config.run import EvalConfig, ModelConfig, RunConfig, TaskConfig, TrainConfig, build_config
from npo.config.trl_args import (
    EVAL_INSTEAD,
    GRPO_DEFAULTS,
    OWNED_GRPO_FIELDS,
    TRL_EVAL_FIELDS,
    processes,
)
from npo.errors import UserError
from npo.loops.run import Prepared, prepare, train
from npo.models.evaluate import eval_plan
from npo.models.load import lora_fields
from npo.rundir.layout import RunDir, default_out, read_jsonl
from npo.tasks.base import disjoint_split, held_out_split
from npo.tasks.python import RewardTask, dataset_items
from npo.trl_seam.callbacks import evaluation

_TRL = {f.name: f for f in dataclasses.fields(GRPOConfig)}
_EVAL = {"every", "n", "samples", "temperature", "max_new_tokens", "batch_size", "seed"}  # eval.X -> heldout_X
_VERIFIER = ("reward_threshold", "verifier_timeout", "max_failed_share")  # task.X -> X


def _npo_default(name: str):
    """A GRPOConfig field with npo's default (`GRPO_DEFAULTS`), documented with npo's reason."""
    value, why = GRPO_DEFAULTS[name]
    return field(default=value, metadata={"help": f"{_TRL[name].metadata.get('help', '')} npo's default: {why}"})


def _help(section, name: str) -> str:
    return next(f for f in dataclasses.fields(section) if f.name == name).metadata["help"]


def _ours(section, name: str):
    """npo's YAML field `section.name` as an NPOConfig field: its default and help (documented once there)."""
    f = next(f for f in dataclasses.fields(section) if f.name == name)
    return field(default=f.default, metadata={"help": _help(section, name)})


@dataclass
class NPOConfig(GRPOConfig):
    """`trl.GRPOConfig` with npo's defaults and npo's own fields (the YAML config's, same help)."""

    # GRPOConfig fields whose default npo sets (its YAML defaults)
    seed: int = _ours(RunConfig, "seed")
    max_steps: int = _ours(TrainConfig, "steps")
    save_steps: float = _ours(TrainConfig, "checkpoint_every")
    save_total_limit: int | None = field(default=None, metadata={"help": (
        "YAML train.keep_checkpoints (None: 0, all): " + _help(TrainConfig, "keep_checkpoints"))})
    per_device_train_batch_size: int = field(default=128, metadata={"help": (
        "Completions per process and micro-batch, as in TRL: an optimizer step takes this x processes x "
        "gradient_accumulation_steps completions, train.prompts_per_step x num_generations (default 16 "
        "prompts x 8 in one micro-batch).")})
    num_generations: int | None = _npo_default("num_generations")
    learning_rate: float = _npo_default("learning_rate")
    temperature: float = _npo_default("temperature")
    max_completion_length: int | None = _npo_default("max_completion_length")
    beta: float = _npo_default("beta")
    loss_type: str = _npo_default("loss_type")
    report_to: None | str | list[str] = _npo_default("report_to")
    gradient_checkpointing: bool = _npo_default("gradient_checkpointing")
    lr_scheduler_type: str = _npo_default("lr_scheduler_type")
    max_grad_norm: float = _npo_default("max_grad_norm")
    # npo's held-out evaluation (YAML eval.*)
    heldout_every: int = _ours(EvalConfig, "every")
    heldout_n: int | None = field(default=None, metadata={"help": (
        "Held-out items evaluated (YAML eval.n); None: all of them (task.eval_size, or the rows of eval_dataset).")})
    heldout_samples: int = _ours(EvalConfig, "samples")
    heldout_temperature: float = _ours(EvalConfig, "temperature")
    heldout_max_new_tokens: int = _ours(EvalConfig, "max_new_tokens")
    heldout_batch_size: int = _ours(EvalConfig, "batch_size")
    heldout_seed: int = _ours(EvalConfig, "seed")
    # the verifier of the gate (YAML task.*)
    reward_threshold: float = _ours(TaskConfig, "reward_threshold")
    verifier_timeout: float = _ours(TaskConfig, "verifier_timeout")
    max_failed_share: float = _ours(TaskConfig, "max_failed_share")

    def __post_init__(self):
        # The GRPOConfig values as given, before TRL's __post_init__ rewrites some (report_to, bf16, ...):
        # the run's train.grpo is built from these.
        self.given = {name: getattr(self, name) for name in _TRL}
        if not torch.cuda.is_available():  # as npo.config.trl_args does for a YAML run
            self.use_cpu = True
            self.bf16 = False if self.bf16 is None else self.bf16
        super().__post_init__()

    def grpo_fields(self) -> dict:
        """YAML train.grpo: every GRPOConfig value given that differs from TRL's default, and npo's defaults.
        A field npo owns and does not map (`MAPPED`) is refused when set: it would be ignored otherwise."""
        out = {}
        for name, value in self.given.items():
            f = _TRL[name]
            trl_default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if name in MAPPED:
                continue
            if name in OWNED_GRPO_FIELDS or name in TRL_EVAL_FIELDS:
                if value != trl_default:
                    raise UserError(f"NPOConfig.{name}: {UNMAPPED.get(name, EVAL_INSTEAD)}; leave it at TRL's default")
                continue
            if name in GRPO_DEFAULTS or value != trl_default:
                out[name] = value
        return out


# GRPOConfig fields npo sets from its own (YAML) fields: what each means here
MAPPED = {"output_dir": "the run folder", "max_steps": "train.steps", "save_steps": "train.checkpoint_every",
          "save_total_limit": "train.keep_checkpoints", "seed": "seed",
          "per_device_train_batch_size": "train.prompts_per_step x num_generations, with gradient_accumulation_steps"}
UNMAPPED = {  # the others npo owns: why a value would not mean what TRL says
    "num_train_epochs": "npo trains max_steps optimizer steps (its data order: npo.algo.order); epochs follow from the data",
    "data_seed": "npo's data order is drawn from seed", "save_strategy": "npo checkpoints every save_steps steps",
    "logging_steps": "npo logs every optimizer step (metrics.jsonl)", "disable_tqdm": "npo shows its own progress bar",
    "save_only_model": "npo keeps rollback and resume targets whole (npo.rundir.retention)",
}


def run_config(args: NPOConfig, model: ModelConfig, task: TaskConfig, guide: Method, heldout: int) -> RunConfig:
    """The RunConfig of the API's arguments (`heldout`: the held-out items there are), validated as a
    YAML file is."""
    n, accumulation = args.given["num_generations"], args.gradient_accumulation_steps
    completions = args.per_device_train_batch_size * processes() * accumulation
    if completions % n:
        raise UserError(f"per_device_train_batch_size: {args.per_device_train_batch_size} completions x {processes()} "
                        f"processes x {accumulation} micro-batches are not whole groups of num_generations = {n}")
    if args.save_steps != int(args.save_steps):
        raise UserError(f"save_steps: {args.save_steps}: npo checkpoints every whole number of steps")
    data = {
        "seed": args.seed, "method": guide.method, "model": dataclasses.asdict(model),
        "task": {**dataclasses.asdict(task), **{k: getattr(args, k) for k in _VERIFIER}},
        "train": {"steps": args.max_steps, "prompts_per_step": completions // n,
                  "checkpoint_every": int(args.save_steps), "keep_checkpoints": args.save_total_limit or 0,
                  "grpo": args.grpo_fields()},
        "eval": {k: getattr(args, f"heldout_{k}") for k in _EVAL} | {"n": args.heldout_n or heldout},
        "npo": dict(guide.npo), "replay": dict(guide.replay), "autonpo": dict(guide.autonpo),
    }
    return build_config(data, "NPOTrainer")


def api_arguments(cfg: RunConfig, out: str | Path) -> dict:
    """The API's arguments of a YAML run (what `npo train` hands to NPOTrainer)."""
    grpo = dict(cfg.resolved_grpo)  # a copy: the batch fields are popped
    grpo.pop("per_device_train_batch_size", None)  # both as TRL means them, below
    grpo.pop("gradient_accumulation_steps", None)
    accumulation, world = cfg.resolved.accumulation, cfg.resolved.processes
    rows = cfg.train.prompts_per_step * grpo["num_generations"]
    if rows % (world * accumulation):  # fill add: TRL's micro-batch holds the added guides, the API's does not
        raise UserError(f"train.prompts_per_step: {rows} completions per step do not split over {world} processes "
                        f"x {accumulation} micro-batches")
    args = NPOConfig(output_dir=str(out), seed=cfg.seed, max_steps=cfg.train.steps,
                     save_steps=cfg.train.checkpoint_every, save_total_limit=cfg.train.keep_checkpoints or None,
                     per_device_train_batch_size=rows // (world * accumulation),
                     gradient_accumulation_steps=accumulation,
                     **{f"heldout_{k}": getattr(cfg.eval, k) for k in _EVAL},
                     **{k: getattr(cfg.task, k) for k in _VERIFIER}, **grpo)
    return {"model": cfg.model, "task": cfg.task, "args": args, "guide": guide_of(cfg)}


class NPOTrainer:
    """One npo run from Python. `trainer.train()` trains and returns the summary (summary.json).

    model: a local model folder, 'tiny' / 'tiny-vl' (the embedded defaults), a `npo.config.run.ModelConfig`,
        or a loaded `transformers` model (then `processing_class` is its tokenizer or processor). Under
        ZeRO-3 give a folder: npo loads it after the run's GRPOConfig exists, partitioned (`zero.Init`);
        a model loaded before is whole on every process.
    reward_funcs: TRL reward functions (`fn(prompts, completions, **columns) -> list[float]`) for
        `train_dataset`; `verifier` (a function of the list, its name or its index; default the first)
        is the one the gate and the held-out accuracy read, thresholded at `args.reward_threshold`
        (binary, [paper]); the others enter TRL's reward sum as they are (`args.reward_weights`).
    train_dataset / eval_dataset: a `datasets.Dataset` or a list of dicts with a `prompt` column (text
        or chat messages) or `question`; every column reaches the reward functions. Without
        `eval_dataset`, `task.eval_size` rows are held out of `train_dataset` (`task.split_seed`).
    task: instead of datasets, a built-in task ('arith', 'rg:NAME', 'jsonl:PATH', ...) or a TaskConfig.
    guide: how guides are made and when they are used (`npo.NearFuture(...)`, `npo.AutoNPO(...)`, the
        baselines); None: plain GRPO.
    resume: continue a killed run in `args.output_dir` (a finished one returns its summary).
    """

    def __init__(self, model="tiny", reward_funcs=None, args: NPOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None, callbacks=None, peft_config=None, guide: Method | None = None,
                 task: TaskConfig | str | None = None, verifier=None, resume: bool = False,
                 show_progress: bool = True):
        self.args = args if args is not None else NPOConfig(output_dir=default_out(None))
        if guide is not None and not isinstance(guide, Method):  # e.g. guide="npo": a method name, not its settings
            raise UserError(f"NPOTrainer: guide: expected a Method (npo.NearFuture(...), npo.SelfGuide(...), "
                            f"npo.AutoNPO(...), npo.LUFFY(), ...), got {guide!r}")
        self.guide = guide or GRPO
        self.show_progress = show_progress
        model_object = None if isinstance(model, (str, Path, ModelConfig)) else model
        if model_object is not None and processing_class is None:
            raise UserError("NPOTrainer: a model object needs its processing_class (tokenizer or processor)")
        model_cfg = model if isinstance(model, ModelConfig) else ModelConfig(path=str(
            model if model_object is None else getattr(model.config, "_name_or_path", "") or "python-model"))
        if peft_config is not None:  # YAML model.lora
            if model_cfg.lora:
                raise UserError("NPOTrainer: LoRA is set twice (peft_config and the ModelConfig's lora)")
            model_cfg = dataclasses.replace(model_cfg, lora=lora_fields(peft_config))
        split = None
        if train_dataset is not None:
            if isinstance(task, str):
                raise UserError("NPOTrainer: give train_dataset (with reward_funcs) or a task spec, not both")
            # a TaskConfig beside datasets gives the column names and the held-out split
            task_cfg = dataclasses.replace(task or TaskConfig(), spec="python", options={})
            split, extra = _dataset_split(train_dataset, eval_dataset, reward_funcs, verifier, task_cfg)
        else:
            if reward_funcs is not None:
                raise UserError("NPOTrainer: reward_funcs score a train_dataset; a built-in task has its own verifier")
            task_cfg = TaskConfig(spec=task) if isinstance(task, str) else (task or TaskConfig())
            extra = []
        heldout = len(split[2]) if split else task_cfg.eval_size
        self.config = run_config(self.args, model_cfg, task_cfg, self.guide, heldout)
        self.prepared: Prepared = prepare(self.config, self.args.output_dir, resume=resume, split=split,
                                          model=model_object, tokenizer=processing_class, reward_funcs=extra,
                                          callbacks=list(callbacks or []))

    def train(self) -> dict:
        return train(self.prepared, show_progress=self.show_progress)

    # ------------------------------------------------------------------ the Trainer surface TRL users call
    # (after train(): the run's one engine, a GuidedGRPOTrainer, i.e. TRL's GRPOTrainer; docs/python-api.md)

    @property
    def engine(self):
        """The run's GRPOTrainer (built by `train()`, which loads the model after its GRPOConfig exists)."""
        if self.prepared.engine is None:
            raise UserError("NPOTrainer: the model is loaded by train() (under ZeRO-3 it loads sharded, after the "
                            "run's GRPOConfig exists): call train() first")
        return self.prepared.engine

    model = property(lambda self: self.engine.model, doc="The policy as trained: the final trajectory's last step.")
    processing_class = property(lambda self: self.engine.processing_class)
    accelerator = property(lambda self: self.engine.accelerator)

    @property
    def state(self):
        """TRL's TrainerState of the run's final trajectory: `global_step` its last step, `log_history` one
        record per optimizer step of it (metrics.jsonl, look-aheads and discarded steps apart) and per
        held-out evaluation (eval.jsonl, its keys prefixed `eval_`)."""
        run = RunDir(self.prepared.out)
        summary = json.loads(run.summary.read_text()) if run.summary.is_file() else {}
        steps = read_jsonl(run.metrics)
        history = sorted([*steps, *({"step": e["step"], **{f"eval_{k}": v for k, v in e.items() if k != "step"}}
                                    for e in read_jsonl(run.evals))], key=lambda r: r["step"])
        last = summary.get("stopped_at") or summary.get("final_steps") or max((r["step"] for r in steps), default=0)
        return TrainerState(global_step=last, max_steps=self.config.train.steps, log_history=history)

    def save_model(self, output_dir: str | None = None) -> None:
        """A loadable Hugging Face folder of the policy (with LoRA: its adapters) and its tokenizer, as
        TRL's `save_model` writes it."""
        self.engine.save_model(output_dir)

    def evaluate(self) -> dict:
        """npo's held-out evaluation of the live policy (greedy accuracy, mean@K): TRL's `eval_` keys."""
        engine = self.engine
        plan = eval_plan(self.config, engine.processing_class, engine.scorer, engine.style, self.prepared.eval_items)
        return {f"eval_{k}": v for k, v in evaluation(engine, plan).items()}

    def push_to_hub(self, *args, **kwargs):
        """TRL's (the Hub's own errors when offline)."""
        return self.engine.push_to_hub(*args, **kwargs)

    def add_callback(self, callback) -> None:
        """A TRL callback for the run (before train(): it sees the whole run, as `callbacks=` does)."""
        self.prepared.callbacks.append(callback)


def _dataset_split(train_dataset, eval_dataset, reward_funcs, verifier, task_cfg: TaskConfig):
    """(RewardTask, training items, held-out items) of the datasets, and TRL's reward functions: the
    user's, with the verifier's place left to npo's binary verified reward (None)."""
    funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    if not funcs or any(not callable(f) for f in funcs):
        raise UserError("NPOTrainer: reward_funcs: give one or more reward functions (callables) for train_dataset")
    index = _verifier_index(funcs, verifier)
    keys = dict(question_key=task_cfg.question_key, answer_key=task_cfg.answer_key, image_key=task_cfg.image_key)
    train_items = dataset_items(train_dataset, "train_dataset", **keys)
    if eval_dataset is not None:  # held out means held out: its questions leave training, as jsonl: does
        given = len(train_items)
        train_items, eval_items = disjoint_split(dataset_items(eval_dataset, "eval_dataset", **keys), train_items)
        if not train_items:
            raise UserError("train_dataset: every row's question is in eval_dataset: nothing is left to train on")
        if len(train_items) < given:
            print(f"npo: {given - len(train_items)} of {given} train_dataset rows ask a question of eval_dataset: "
                  "left out of training (held-out accuracy would count them)", file=sys.stderr)
    else:
        train_items, eval_items = _hold_out(train_items, task_cfg)
    task = RewardTask(funcs[index], train_items, eval_items)
    return (task, train_items, eval_items), [None if i == index else f for i, f in enumerate(funcs)]


def _verifier_index(funcs: list, verifier) -> int:
    if verifier is None:
        return 0
    for i, f in enumerate(funcs):
        if f is verifier or getattr(f, "__name__", None) == verifier or verifier == i:
            return i
    names = ", ".join(getattr(f, "__name__", repr(f)) for f in funcs)
    raise UserError(f"NPOTrainer: verifier {verifier!r} is none of reward_funcs ({names})")


def _hold_out(items: list, task_cfg: TaskConfig) -> tuple[list, list]:
    """`task.eval_size` rows of the training set held out (by `task.split_seed`), as `jsonl:` does."""
    if task_cfg.eval_size >= len(items):
        raise UserError(f"task.eval_size: {task_cfg.eval_size} >= the {len(items)} rows of train_dataset "
                        f"(give eval_dataset, or an eval_size below {len(items)})")
    return held_out_split(items, task_cfg.eval_size, task_cfg.split_seed)

