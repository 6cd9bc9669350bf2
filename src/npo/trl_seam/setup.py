"""The run's one trainer, built from its config: its GRPOConfig first (`trainer_args`, before the policy
loads), then the `npo.trl_seam.trainer.GuidedGRPOTrainer` over the training items (`build_trainer`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from datasets import Dataset
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import GRPOConfig

from npo.algo.replay import ReplayBuffer
from npo.config.run import RunConfig
from npo.models.load import lora_config, name_tied_weights
from npo.tasks.rewards import make_reward_fn
from npo.trl_seam.multimodal import dataset_row
from npo.trl_seam.tracking import trl_report_to
from npo.trl_seam.trainer import GuidedGRPOTrainer
from npo.trl_seam.user_callbacks import RunCallbacks

# DeepSpeed 0.19.8's ZeRO-3 calls torch's deprecated collective names at every step: FutureWarnings that ask
# nothing of our users. Only those messages are filtered.
warnings.filterwarnings("ignore", message=r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is "
                        r"deprecated", category=FutureWarning)


def trainer_args(cfg: RunConfig, out_dir: Path) -> GRPOConfig:
    """The run's one GRPOConfig, checkpointing to `out_dir`. Build it before the policy is loaded, and keep
    it: while it lives, HF's loader sees its DeepSpeed config (a weak reference), so that under ZeRO-3 the
    policy is built partitioned (`zero.Init`) instead of whole on every process; a GRPOConfig built
    after it and dropped would switch that off for the rest of the run."""
    kw = cfg.resolved.grpo_kwargs(str(out_dir))
    args = GRPOConfig(**{**kw, "report_to": trl_report_to(kw["report_to"])})  # npo.trl_seam.tracking writes the rest
    plain_cpu_device(args)
    return args


def build_trainer(cfg: RunConfig, args: GRPOConfig, model, tokenizer, scorer, style: str, train_items, callbacks,
                  reward_funcs: list = (), **npo_kwargs) -> GuidedGRPOTrainer:
    """A GuidedGRPOTrainer for the run's config and its `trainer_args`. `reward_funcs`: the user's TRL
    reward functions, None where the verifier's binary reward goes (empty: only that one). `npo_kwargs`:
    the trainer's own (guidance, ledger, on_gate); the gate is on for every method but grpo."""
    name_tied_weights(model)
    dataset = Dataset.from_list([dataset_row(it, style, i) for i, it in enumerate(train_items)])
    guided = cfg.method != "grpo"
    replay = ReplayBuffer.from_config(cfg.replay) if guided and cfg.npo.source == "replay" else None
    verified = make_reward_fn(scorer, train_items)
    rewards = [verified if f is None else f for f in reward_funcs] if reward_funcs else verified
    user = RunCallbacks(callbacks)  # the user's TRL callbacks see one run, not its segments
    trainer = GuidedGRPOTrainer(model=model, reward_funcs=rewards, args=args, peft_config=lora_config(cfg.model.lora),
                                train_dataset=dataset, processing_class=tokenizer, callbacks=[user], scorer=scorer,
                                items=train_items, style=style, npo=cfg.npo if guided else None, replay=replay,
                                replay_share=cfg.replay.share, kept=cfg.resolved.G,
                                score_budget=cfg.model.score_memory_mb << 20, **npo_kwargs)
    for cb in (PrinterCallback, ProgressCallback):  # our own bar and files replace TRL's printing
        trainer.remove_callback(cb)
    scorer.state_of = lambda: trainer.state  # TRL's trainer_state keyword, for a reward function that reads it
    trainer.user_callbacks = user
    return trainer


def plain_cpu_device(args) -> None:
    """A process's indexed CPU device ("cpu:0": accelerate's name for it in a multi-process CPU run) as plain
    "cpu", the same device: transformers 5.17 maps a multi-process optimizer load (every rollback) to
    `args.device`, and torch.load cannot restore storages to "cpu:0" (transformers 5.18 maps to "cpu")."""
    device = args.device
    if device.type == "cpu" and device.index is not None:
        args.__dict__["_setup_devices"] = torch.device("cpu")  # TrainingArguments.device's cached value
