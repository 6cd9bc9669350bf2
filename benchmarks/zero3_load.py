"""Host memory of the policy's loads under the ZeRO-3 recipe: at start (issue 25) and in place, a
checkpoint's weights into the live engine as AutoNPO does for each candidate (issue 26).

    OMP_NUM_THREADS=1 python benchmarks/zero3_load.py [--processes 2]     # ~3 minutes on 2 CPU cores

Builds a ~100M-parameter Qwen2 from a config (the embedded default's architecture, wider and deeper,
random weights), saved in bf16 as released checkpoints are (Qwen3's are), then launches `accelerate
launch --config_file configs/accelerate/zero3.yaml --num_processes 2` (DS_ACCELERATOR=cpu; mixed
precision as the recipe says, bf16) with this file as the worker, once per measurement:

- start, before: the policy loaded as npo did until issue 25, in fp32, before the run's GRPOConfig
  exists (so HF's loader does not know about ZeRO-3 and builds the whole model on every process);
- start, after: the run's GRPOConfig first (`npo.trl_seam.setup.trainer_args`), then the policy in the
  dtype `npo.config.precision` gives (bf16 under DeepSpeed), so that `zero.Init` partitions it as it is built;
- in place, before: a run trained one step (a checkpoint at 1, with the recipe's 16-bit weights), then
  its checkpoint loaded model-only through DeepSpeed (`load_checkpoint(load_module_only=True)`: under
  ZeRO-3 every process rebuilds the fp32 weights from every process's optimizer shards);
- in place, after: the same checkpoint through `npo.trl_seam.engine.load_weights` (its 16-bit weights, a
  submodule at a time, read by process 0 only);

and reports, per process, the peak of its private (anonymous) resident memory during the load, above
what it held before (sampled every 5 ms; file pages that safetensors maps are shared between the
processes and not counted), what it kept after, and the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
BIG = ["model.tiny.hidden_size=768", "model.tiny.num_hidden_layers=12", "model.tiny.num_attention_heads=12",
       "model.tiny.num_key_value_heads=4", "model.tiny.intermediate_size=3072", "model.warmup.steps=0"]
RUN = ["train.steps=1", "train.checkpoint_every=1", "train.prompts_per_step=2", "train.grpo.num_generations=2",
       "eval.n=2", "eval.samples=0", "eval.every=0"]
MEASURES = ("start/before", "start/after", "in-place/before", "in-place/after")


def worker(measure: str, out: Path, folder: Path) -> dict:
    from memory_probe import PeakMemory, private_memory

    from npo.config.run import load_config
    from npo.config.trl_args import run_precision
    from npo.models.load import load_policy
    from npo.trl_seam.setup import trainer_args

    cfg = load_config(ROOT / "configs" / "tiny-grpo.yaml", BIG + RUN + [f"model.path={folder}"])
    if measure.startswith("in-place"):
        return in_place(cfg, measure, out)
    if measure == "start/after":
        args = trainer_args(cfg, out / "checkpoints")
    dtype = "fp32" if measure == "start/before" else run_precision(cfg).load
    with PeakMemory() as peak:  # the load alone (the GRPOConfig's DeepSpeed set-up is not measured)
        t0 = time.perf_counter()
        model, _ = load_policy(folder, dtype=dtype)
        seconds = time.perf_counter() - t0
    kept = private_memory() - peak.base
    if measure == "start/before":
        args = trainer_args(cfg, out / "checkpoints")
    params = list(model.parameters())
    held = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
    dtype = str(params[0].ds_tensor.dtype if hasattr(params[0], "ds_tensor") else params[0].dtype)
    return {"held_elements": held, "parameters": sum(getattr(p, "ds_numel", p.numel()) for p in params),
            "dtype": dtype, "peak_mb": peak.growth / 2**20, "kept_mb": kept / 2**20, "seconds": round(seconds, 2),
            "zero3": args.deepspeed_plugin is not None}


def in_place(cfg, measure: str, out: Path) -> dict:
    import gc

    from memory_probe import PeakMemory, private_memory

    from npo.loops.run import open_run, prepare
    from npo.loops.segment import run_segment
    from npo.trl_seam.engine import load_weights

    ctx = open_run(prepare(cfg, out / "run"), show_progress=False)
    run_segment(ctx, 0, 1, out_dir=ctx.run.checkpoints)
    trainer, checkpoint = ctx.trainer, ctx.run.checkpoint(1)
    trainer.accelerator.wait_for_everyone()
    gc.collect()
    with PeakMemory() as peak:
        t0 = time.perf_counter()
        if measure == "in-place/before":
            trainer.model_wrapped.load_checkpoint(str(checkpoint), load_module_only=True, load_optimizer_states=False,
                                                  load_lr_scheduler_states=False)
        else:
            load_weights(trainer, checkpoint)
        seconds = time.perf_counter() - t0
    kept = private_memory() - peak.base
    params = list(trainer.model_wrapped.module.parameters())
    ctx.scorer.close()
    return {"held_elements": sum(p.ds_tensor.numel() for p in params), "parameters": sum(p.ds_numel for p in params),
            "dtype": str(params[0].ds_tensor.dtype), "peak_mb": peak.growth / 2**20, "kept_mb": kept / 2**20,
            "seconds": round(seconds, 2), "zero3": True}


def launch(measure: str, processes: int, out: Path, folder: Path) -> list[dict]:
    out.mkdir(parents=True)
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    subprocess.run([str(accelerate), "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "zero3.yaml"),
                    "--num_processes", str(processes), "--main_process_port", "29531", __file__, "--worker", measure,
                    str(out), str(folder)], check=True, env=env, cwd=ROOT)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--worker", nargs=3, metavar=("MEASURE", "OUT", "MODEL"))
    a = ap.parse_args()
    import conftest  # noqa: F401  (the tests' cache and offline settings)

    if a.worker:
        import torch

        result = worker(a.worker[0], Path(a.worker[1]), Path(a.worker[2]))
        rank = int(os.environ.get("RANK", "0"))
        (Path(a.worker[1]) / f"rank{rank}.json").write_text(json.dumps({"measure": a.worker[0], "rank": rank, **result}))
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        return
    from npo.config.run import load_config
    from npo.models.load import load_policy, resolve_model_path
    from npo.tasks import build_split

    cfg = load_config(ROOT / "configs" / "tiny-grpo.yaml", BIG)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = load_policy(resolve_model_path(cfg, build_split(cfg)[1]), dtype="bf16")
        folder = Path(tmp) / "model-bf16"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        del model
        for measure in MEASURES:
            rows += launch(measure, a.processes, Path(tmp) / measure.replace("/", "-"), folder)
    print("| load | rank | parameters | held by this process | dtype | peak private memory | kept after it | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['measure']} | {r['rank']} | {r['parameters'] / 1e6:.1f}M | {r['held_elements'] / 1e6:.1f}M | "
              f"{r['dtype'].replace('torch.', '')} | {r['peak_mb']:.0f} MB | {r['kept_mb']:.0f} MB | {r['seconds']} |")


if __name__ == "__main__":
    main()
