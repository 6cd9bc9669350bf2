"""Host memory of loading the policy under the ZeRO-3 recipe, before and after issue 25.

    OMP_NUM_THREADS=1 python benchmarks/zero3_load.py [--processes 2]     # ~3 minutes on 2 CPU cores

Builds a ~100M-parameter Qwen2 from a config (the embedded default's architecture, wider and deeper,
random weights), saved in bf16 as released checkpoints are (Qwen3's are), then, for each order, launches `accelerate launch --config_file
configs/accelerate/zero3.yaml --num_processes 2` (DS_ACCELERATOR=cpu; mixed precision as the recipe
says, bf16) with this file as the worker, which

- before: loads the policy as npo did until issue 25, in fp32, before the run's GRPOConfig exists (so
  HF's loader does not know about ZeRO-3 and builds the whole model on every process);
- after: builds the run's GRPOConfig first (`npo.trainer.trainer_args`), then loads the policy in the
  dtype `npo.precision` gives (bf16 under DeepSpeed), so that `zero.Init` partitions it as it is built;

and reports, per process, the peak of its private (anonymous) resident memory while loading, above
what it held before (sampled every 5 ms; file pages that safetensors maps are shared between the
processes and not counted), and the parameter elements it holds after (its ZeRO-3 partition, or the
whole model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIG = ["model.tiny.hidden_size=768", "model.tiny.num_hidden_layers=12", "model.tiny.num_attention_heads=12",
       "model.tiny.num_key_value_heads=4", "model.tiny.intermediate_size=3072", "model.warmup.steps=0"]


def rss() -> int:
    """Private resident memory: resident minus file-backed and shared pages (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        resident, shared = (int(x) for x in f.read().split()[1:3])
    return (resident - shared) * os.sysconf("SC_PAGE_SIZE")


class Peak(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = rss(), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss())
            time.sleep(0.005)


def worker(order: str, out: Path, folder: Path) -> None:
    import torch

    from npo.config import load_config
    from npo.grpo_args import run_precision
    from npo.models.load import load_policy
    from npo.trainer import trainer_args

    cfg = load_config(ROOT / "configs" / "tiny-grpo.yaml", BIG + [f"model.path={folder}"])
    rank = int(os.environ.get("RANK", "0"))
    if order == "after":
        args = trainer_args(cfg, out / "checkpoints")
    dtype = "fp32" if order == "before" else run_precision(cfg).load
    before, sampler = rss(), Peak()  # the load alone is measured (the GRPOConfig's DeepSpeed set-up is not)
    sampler.start()
    t0 = time.perf_counter()
    model, _ = load_policy(folder, dtype=dtype)
    seconds = time.perf_counter() - t0
    sampler.running = False
    sampler.join()
    kept = rss() - before
    if order == "before":
        args = trainer_args(cfg, out / "checkpoints")
    params = list(model.parameters())
    held = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
    full = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    dtype = str(params[0].ds_tensor.dtype if hasattr(params[0], "ds_tensor") else params[0].dtype)
    result = {"order": order, "rank": rank, "peak_mb": (sampler.peak - before) / 2**20, "kept_mb": kept / 2**20,
              "seconds": round(seconds, 2),
              "held_elements": held, "parameters": full, "dtype": dtype, "zero3": args.deepspeed_plugin is not None}
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def launch(order: str, processes: int, out: Path, folder: Path) -> list[dict]:
    out.mkdir(parents=True)
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    subprocess.run([str(accelerate), "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "zero3.yaml"),
                    "--num_processes", str(processes), "--main_process_port", "29531", __file__, "--worker", order,
                    str(out), str(folder)], check=True, env=env, cwd=ROOT)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--worker", nargs=3, metavar=("ORDER", "OUT", "MODEL"))
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # noqa: F401  (the tests' cache and offline settings)

    if a.worker:
        return worker(a.worker[0], Path(a.worker[1]), Path(a.worker[2]))
    from npo.config import load_config
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
        for order in ("before", "after"):
            rows += launch(order, a.processes, Path(tmp) / order, folder)
    print("| order | rank | parameters | held by this process | dtype | peak private memory of the load | "
          "kept after it | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['order']} | {r['rank']} | {r['parameters'] / 1e6:.1f}M | {r['held_elements'] / 1e6:.1f}M | "
              f"{r['dtype'].replace('torch.', '')} | {r['peak_mb']:.0f} MB | {r['kept_mb']:.0f} MB | {r['seconds']} |")


if __name__ == "__main__":
    main()
