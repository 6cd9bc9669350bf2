"""Worker of tests/test_engine.py, launched with torchrun: the run's one trainer under DDP or DeepSpeed.

    torchrun --nproc_per_node P tests/engine_worker.py MODES OUT_DIR [big] [deepspeed=zero2|zero3] [bf16] [lora]

MODES, comma-separated, run in that order: `gate` (tests/dist_gate_worker.py), `replay`, `run`,
`replay-zero3` (replay under ZeRO-3 in bf16), `sharded`, `replay-lora` (replay of LoRA adapters under
ZeRO-2), `vllm_tp`. `replay`: a first pass 0 -> 4 with checkpoints every 2 (0 -> 2, every step, for
`big`), then three in-place rollbacks to 2 (1), each replayed to the end into its own folder; host
memory (RSS) is read after the first rollback and after the third. `deepspeed=zero2|zero3` in extra
arguments selects a DeepSpeed ZeRO stage (DS_ACCELERATOR=cpu); `big` uses a ~8M-parameter model built
from a config; `bf16`, model.dtype bf16 (with DeepSpeed: its bf16 mode, fp32 masters in its optimizer);
`lora`, LoRA adapters. MODE `run`: `npo train` of an NPO bootstrap config with controls (measured
again at the end) into OUT_DIR/run, and the bank the untrained policy writes for steps 0-3 (through the engine, each process
sampling its share) into OUT_DIR/bank.json. `sharded` and `vllm_tp`: their functions say.
The main process writes OUT_DIR/result.json.
"""

import ctypes
import gc
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import dist_gate_worker  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

from npo.config.run import load_config  # noqa: E402
from npo.guides.bank import Guidance, GuideBank  # noqa: E402
from npo.guides.sources import PolicySource, guide_sampling  # noqa: E402
from npo.loops.run import open_run, prepare, train  # noqa: E402
from npo.loops.segment import run_segment  # noqa: E402
from npo.rundir.layout import atomic_write_text, read_jsonl  # noqa: E402

import conftest  # noqa: E402,F401  (the tests' cache and offline settings)

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["train.prompts_per_step=4", "eval.every=0", "eval.n=20", "eval.samples=0"]
# ~8M parameters, no warm start (a config-built model is all a memory measurement needs): an engine copy a
# rollback leaked would hold ~130 MB (weights, gradients, Adam's moments), far above the bound checked
BIG = ["model.tiny.hidden_size=256", "model.tiny.num_hidden_layers=8", "model.tiny.num_attention_heads=8",
       "model.tiny.num_key_value_heads=4", "model.tiny.intermediate_size=1024", "model.warmup.steps=0"]
NOT_REPLAYED = {"train/step_time", "signal/generated_tokens", "verify/calls"}
DS = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
      "zero_allow_untested_optimizer": True, "bf16": {"enabled": False}, "fp16": {"enabled": False}}


def replayed(records):
    return [{k: v for k, v in r.items() if k not in NOT_REPLAYED} for r in records]


def retained_rss() -> int:
    """Resident memory after garbage collection, with freed heap handed back to the OS: what a leak
    would grow, without the allocator's caching."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss


def replay(out: Path, extra: list[str]) -> dict:
    steps, back = (2, 1) if "big" in extra else (4, 2)  # the big model: fewer, dearer steps
    sets = SMALL + [f"train.steps={steps}", f"train.checkpoint_every={back}"]
    if "big" in extra:
        sets += BIG
    stage = next((x.split("=")[1] for x in extra if x.startswith("deepspeed=")), None)
    if stage:
        ds = out / "ds.json"  # every process writes the same file, atomically
        precision = {"bf16": {"enabled": "auto"}} if "bf16" in extra else {}  # "auto": TrainingArguments' bf16
        zero = {"stage": int(stage[-1])}
        if zero["stage"] == 3:  # the recipe's zero3_save_16bit_model: a model.safetensors in every checkpoint
            zero["stage3_gather_16bit_weights_on_model_save"] = True
        atomic_write_text(ds, json.dumps({**DS, **precision, "zero_optimization": zero}))
        sets += [f"train.grpo.deepspeed={ds}", "train.grpo.optim=adamw_torch"]
    if "bf16" in extra:
        sets += ["model.dtype=bf16"]
    if "lora" in extra:  # HF saves a PEFT model's DeepSpeed checkpoints without the frozen base weights
        sets += ["model.lora={r: 4, lora_alpha: 8, target_modules: all-linear}"]
    cfg = load_config(ROOT / "configs" / "tiny-grpo.yaml", sets)
    ctx = open_run(prepare(cfg, out / "run"), show_progress=False)
    run_segment(ctx, 0, steps, out_dir=ctx.run.checkpoints)
    rss = []
    for k in range(3):
        run_segment(ctx, back, steps, out_dir=out / f"replay{k}", main=False)
        rss.append(retained_rss())
    ctx.trainer.accelerator.wait_for_everyone()
    loaded_equal = loads_in_place(ctx, ctx.run.checkpoint(back)) if stage == "zero3" else None
    first = replayed(read_jsonl(ctx.run.metrics)[back:])
    folder = ctx.run.checkpoint(steps)
    weights = safe_open(str(next(f for f in (folder / "model.safetensors", folder / "adapter_model.safetensors")
                                 if f.is_file())), "pt")
    return {"processes": ctx.trainer.accelerator.num_processes, "deepspeed": ctx.trainer.is_deepspeed_enabled,
            "weights_dtype": str(weights.get_tensor(next(iter(weights.keys()))).dtype),
            "engine_bf16": ctx.trainer.is_deepspeed_enabled and ctx.trainer.model_wrapped.bfloat16_enabled(),
            "loaded_equal": loaded_equal,
            "parameters": sum(p.numel() for p in ctx.trainer.model.parameters()), "rss_mb": [r / 2**20 for r in rss],
            "replays_equal": [replayed(read_jsonl(out / f"replay{k}" / "metrics.jsonl")) == first for k in range(3)],
            "rss_growth_mb": (rss[-1] - rss[0]) / 2**20}


def loads_in_place(ctx, checkpoint: Path) -> bool:
    """`npo.trl_seam.engine.load_weights` under ZeRO-3 (from the checkpoint's 16-bit weights): the partitioned
    model, gathered, then holds exactly the checkpoint's tensors."""
    import deepspeed
    from safetensors.torch import load_file

    from npo.trl_seam.engine import load_weights

    load_weights(ctx.trainer, checkpoint)
    saved, module = load_file(checkpoint / "model.safetensors"), ctx.trainer.model_wrapped.module
    params = dict(module.named_parameters())
    with deepspeed.zero.GatheredParameters(list(params.values())):
        return set(params) <= set(saved) and all(torch.equal(p.detach().cpu(), saved[n]) for n, p in params.items())


def run_and_bank(out: Path) -> dict:
    cfg = load_config(ROOT / "configs" / "tiny-npo-bootstrap.yaml", SMALL + [
        "train.steps=4", "train.checkpoint_every=2", "eval.every=2",
        "npo.interventions=[{kind: bootstrap, lookahead: 2, window: 2}]", "npo.controls=0.5", "npo.effect_at_end=true"])
    summary = train(prepare(cfg, out / "run"), show_progress=False)
    ctx = open_run(prepare(cfg, out / "bank-run"), show_progress=False)  # the untrained policy, in the engine
    bank = bank_of_untrained_policy(ctx)
    return {"processes": ctx.trainer.accelerator.num_processes, "summary": summary, "bank": bank}


def bank_of_untrained_policy(ctx) -> dict:
    """The bank the engine's live policy writes for the prompts of steps 0-3 (all processes' prompts)."""
    order = ctx.trainer.data_order()
    prompts = list(dict.fromkeys(x for s in range(4) for x in order.prompts_at(s)))
    source = PolicySource(ctx.trainer.live_policy(), name="untrained", step=0, **guide_sampling(ctx.cfg))
    guidance = Guidance(source, ctx.scorer, GuideBank(), 0, 4, seed=ctx.cfg.seed)
    guidance.prefill(prompts, [ctx.train_items[x] for x in prompts], step=0)
    return guidance.bank.to_json()


def zero3_config(out: Path) -> str:
    """A DeepSpeed ZeRO-3 config with the recipe's 16-bit weights in every checkpoint (npo.trl_seam.engine.load_weights)."""
    ds = out / "ds3.json"
    atomic_write_text(ds, json.dumps({**DS, "zero_optimization": {"stage": 3,
                                                                   "stage3_gather_16bit_weights_on_model_save": True}}))
    return str(ds)


def sharded(out: Path) -> dict:
    """Under ZeRO-3 on every process (a forward is a collective): an NPO bootstrap with one group per
    process, so that at some step only one process holds guide rows, guide_loss importance (npo's own
    forward over them) and an evaluation of one item (fewer than processes); then an AutoNPO run to its
    decision (pi_T sampled and scored through the engine, candidates loaded in place from 16-bit
    weights). A process skipping a collective hangs the run: the test's timeout catches it."""
    ds = zero3_config(out)
    common = ["train.prompts_per_step=2", "train.grpo.num_generations=4", "eval.samples=0", "eval.n=1",
              f"train.grpo.deepspeed={ds}", "train.grpo.optim=adamw_torch"]
    cfg = load_config(ROOT / "configs" / "tiny-npo-bootstrap.yaml", common + [
        "train.steps=4", "train.checkpoint_every=2", "eval.every=2", "npo.k=4", "npo.guide_loss=importance",
        "npo.interventions=[{kind: bootstrap, lookahead: 2, window: 2}]"])
    npo = train(prepare(cfg, out / "npo"), show_progress=False)
    auto_cfg = load_config(ROOT / "configs" / "tiny-autonpo.yaml", common + [
        "train.steps=8", "train.checkpoint_every=4", "eval.every=0", "autonpo.warmup_steps=4", "autonpo.r_low=0.9",
        "autonpo.deltas=[4]", "autonpo.window=4", "autonpo.cooldown=100", "autonpo.signal_prompts=8",
        "autonpo.signal_k=2"])
    auto = train(prepare(auto_cfg, out / "autonpo"), show_progress=False)
    return {"npo": npo, "npo_metrics": read_jsonl(out / "npo" / "metrics.jsonl"),
            "autonpo": auto, "autonpo_events": read_jsonl(out / "autonpo" / "events.jsonl"),
            "processes": int(os.environ.get("WORLD_SIZE", "1"))}


def vllm_tp(out: Path) -> dict:
    """Two processes, one tensor-parallel vLLM engine (the stand-in checks that its members ask it the
    same requests): an NPO bootstrap's bank and training generations through it."""
    import fake_vllm

    fake_vllm.install(fake_vllm.Patch())
    cfg = load_config(ROOT / "configs" / "tiny-npo-bootstrap.yaml", SMALL + [
        "train.steps=2", "train.checkpoint_every=1", "npo.k=2", "npo.interventions=[{kind: bootstrap, lookahead: 1}]",
        "train.grpo.use_vllm=true", "train.grpo.vllm_mode=colocate", "train.grpo.vllm_tensor_parallel_size=2"])
    summary = train(prepare(cfg, out / "run"), show_progress=False)
    return {"summary": summary, "bank": json.loads((out / "run" / "guides" / "0-bootstrap.json").read_text())}


def main(modes: str, out: str, extra: list[str]) -> None:
    import deepspeed.ops

    # DeepSpeed's CPU accelerator compiles its shared-memory all-reduce kernels (C++, 1-2 min on two cores)
    # the first time a fresh machine starts a DeepSpeed process group; they only speed up CPU inference
    # all-reduce, and every collective here goes through gloo without them (DeepSpeed's own fallback)
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    out = Path(out)
    result = {}
    jobs = {"replay": lambda: replay(out / "replay", extra), "run": lambda: run_and_bank(out / "npo"),
            "replay-zero3": lambda: replay(out / "replay-zero3", ["deepspeed=zero3", "bf16"]),
            "sharded": lambda: sharded(out / "sharded"),
            "replay-lora": lambda: replay(out / "replay-lora", ["deepspeed=zero2", "lora"]),
            "vllm_tp": lambda: vllm_tp(out / "vllm_tp"), "gate": dist_gate_worker.gate}
    for mode in modes.split(","):  # in the order given (vllm_tp installs the vLLM stand-in for good: last)
        result[mode] = jobs[mode]()
    if int(os.environ.get("RANK", "0")) == 0:
        (out / "result.json").write_text(json.dumps(result))
    end_processes()


def end_processes() -> None:
    """Every process at the barrier, then the process group closed: left to the interpreter's exit,
    gloo's threads can outlive it under load ("terminate called without an active exception")."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
