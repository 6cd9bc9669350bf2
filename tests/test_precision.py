"""What model.dtype and the batch fields mean, as pure functions against hand-written tables: the
dtype the policy loads in and TRL's mixed-precision flags (`npo.config.precision`), and the TRL batch shape
of `train.prompts_per_step` (`npo.config.trl_args.micro_batches`); then both as a run records them in
trl_args.json."""

import json

import pytest

from npo.config.precision import Precision, engine_of, launcher_flags, precision
from npo.config.trl_args import micro_batches
from npo.errors import UserError

P32, BF16_MASTER, BF16_LOADED = Precision("fp32", False, False), Precision("fp32", True, False), Precision("bf16", True, False)


@pytest.mark.parametrize("dtype,cuda,engine,lora,bf16,fp16,expected", [
    ("auto", False, None, False, None, None, P32),  # CPU: today's fp32 runs, bit for bit
    ("auto", True, None, False, None, None, BF16_MASTER),  # DDP on GPUs: fp32 masters, bf16 autocast
    ("auto", True, "deepspeed", False, None, None, BF16_LOADED),  # ZeRO: bf16 weights, DeepSpeed's fp32 masters
    ("auto", True, "fsdp", False, None, None, BF16_LOADED),
    ("auto", True, None, True, None, None, BF16_LOADED),  # LoRA: a frozen bf16 base, fp32 adapters
    ("auto", True, None, False, False, None, P32),  # train.grpo.bf16: false decides
    ("auto", True, None, False, None, True, Precision("fp32", False, True)),
    ("auto", False, None, False, True, None, BF16_MASTER),  # asked for on CPU too
    ("fp32", True, None, False, None, None, P32),  # fp32 means fp32, even where TRL would autocast
    ("fp32", True, None, False, True, None, BF16_MASTER),  # ... unless bf16 mixed precision is asked for
    ("fp32", True, "deepspeed", False, None, None, P32),
    ("bf16", False, None, False, None, None, BF16_MASTER),  # one CPU process: masters are the weights
    ("bf16", True, None, False, True, None, BF16_MASTER),
    ("bf16", True, "deepspeed", False, None, None, BF16_LOADED),
    ("bf16", False, "deepspeed", False, None, None, BF16_LOADED),
    ("fp16", True, None, False, None, None, Precision("fp32", False, True)),
    ("fp16", True, "fsdp", False, None, None, Precision("fp16", False, True)),
])
def test_precision_table(dtype, cuda, engine, lora, bf16, fp16, expected):
    assert precision(dtype, cuda=cuda, engine=engine, lora=lora, bf16=bf16, fp16=fp16) == expected


@pytest.mark.parametrize("dtype,cuda,bf16,fp16,message", [
    ("bf16", True, False, None, "train.grpo.bf16 is false"),
    ("bf16", True, None, True, "train.grpo.fp16 is true"),
    ("fp16", True, True, None, "train.grpo.bf16 is true"),
    ("fp16", False, None, None, "fp16 mixed precision needs a GPU"),
    ("auto", True, True, True, "bf16 and fp16 are both true"),
])
def test_precision_contradictions_are_refused(dtype, cuda, bf16, fp16, message):
    with pytest.raises(UserError, match=message):
        precision(dtype, cuda=cuda, engine=None, lora=False, bf16=bf16, fp16=fp16)


def test_a_launch_recipes_mixed_precision_counts_as_asked():
    assert launcher_flags({}) == (None, None) and launcher_flags({"ACCELERATE_MIXED_PRECISION": "no"}) == (None, None)
    assert launcher_flags({"ACCELERATE_MIXED_PRECISION": "bf16"}) == (True, None)
    assert launcher_flags({"ACCELERATE_MIXED_PRECISION": "fp16"}) == (None, True)


def test_the_engine_comes_from_the_config_or_the_launcher():
    assert engine_of({}, {}) is None
    assert engine_of({"deepspeed": "ds.json"}, {}) == "deepspeed"
    assert engine_of({}, {"ACCELERATE_USE_DEEPSPEED": "true"}) == "deepspeed"  # accelerate launch's recipes
    assert engine_of({}, {"ACCELERATE_USE_FSDP": "True"}) == "fsdp"
    assert engine_of({"fsdp": "full_shard"}, {"ACCELERATE_USE_DEEPSPEED": "false"}) == "fsdp"


@pytest.mark.parametrize("prompts,n,world,micro,accum,expected", [
    (16, 8, 1, None, None, (128, 1)),  # one micro-batch per process and step (npo's default)
    (16, 8, 2, None, None, (64, 1)),
    (16, 8, 1, 32, None, (32, 4)),  # TRL users lower the micro-batch ...
    (16, 8, 1, None, 4, (32, 4)),  # ... or raise the accumulation
    (128, 8, 8, 16, None, (16, 8)),  # the README's 8-GPU example: 1024 completions, 16 per micro-batch
    (128, 8, 8, 16, 8, (16, 8)),  # both, agreeing
    (3, 8, 2, None, None, (12, 1)),  # a group may straddle two processes
])
def test_micro_batches(prompts, n, world, micro, accum, expected):
    assert micro_batches(prompts, n, world, micro, accum) == expected


@pytest.mark.parametrize("prompts,n,world,micro,accum,field", [
    (16, 8, 1, 48, None, "per_device_train_batch_size"),  # 128 is not whole micro-batches of 48
    (16, 8, 1, None, 3, "prompts_per_step"),
    (16, 8, 1, 32, 2, "per_device_train_batch_size x gradient_accumulation_steps"),  # 64 != 128
    (16, 8, 1, 0, None, "per_device_train_batch_size: must be >= 1"),
    (16, 8, 1, None, -1, "gradient_accumulation_steps: must be >= 1"),
])
def test_micro_batches_that_cannot_hold_name_the_field(prompts, n, world, micro, accum, field):
    with pytest.raises(UserError, match=field):
        micro_batches(prompts, n, world, micro, accum)


def test_each_npo_default_gives_way_to_the_users_value(tmp_path):
    """Every field of GRPO_DEFAULTS set to another value explicitly reaches the run's GRPOConfig (read
    back from trl_args.json); gradient checkpointing and the batch fields too."""
    from npo.config.run import load_config
    from npo.config.trl_args import GRPO_DEFAULTS
    from npo.loops.run import open_run, prepare
    from npo.loops.segment import run_segment

    from conftest import ROOT

    others = {"num_generations": 4, "learning_rate": 5e-5, "temperature": 0.9, "max_completion_length": 7, "beta": 0.01,
              "loss_type": "dr_grpo", "report_to": "tensorboard", "gradient_checkpointing": True,
              "lr_scheduler_type": "linear", "max_grad_norm": 0.5}
    assert set(others) == set(GRPO_DEFAULTS) and all(v != GRPO_DEFAULTS[k][0] for k, v in others.items())
    sets = [f"train.grpo.{k}={v}" for k, v in others.items()] + [
        "train.grpo.gradient_accumulation_steps=4", "train.steps=1", "eval.n=4", "eval.samples=0", "eval.every=0",
        "model.warmup.steps=0"]  # no warm start to wait for: the fast tier trains nothing that needs one
    cfg = load_config(ROOT / "configs" / "tiny-grpo.yaml", sets)
    ctx = open_run(prepare(cfg, tmp_path / "run"), show_progress=False)
    trl = json.loads((tmp_path / "run" / "trl_args.json").read_text())
    for key, value in others.items():
        assert trl[key] == ([value] if key == "report_to" else value), key
    assert (trl["per_device_train_batch_size"], trl["gradient_accumulation_steps"]) == (16, 4)  # 16 prompts x 4
    assert trl["generation_batch_size"] == 64 and trl["steps_per_generation"] == 4
    assert ctx.trainer.args.gradient_checkpointing and ctx.trainer.model.is_gradient_checkpointing is False  # yet
    run_segment(ctx, 0, 1, out_dir=ctx.run.checkpoints)  # HF's train() turns it on in the model
    assert ctx.trainer.model.is_gradient_checkpointing
    ctx.scorer.close()
