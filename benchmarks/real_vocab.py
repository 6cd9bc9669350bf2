"""GRPO, an NPO bootstrap and LUFFY at a real vocabulary on CPU: peak host memory and step time; and
npo's own scoring and sampling alone (`--blocks`).

    python benchmarks/real_vocab.py [--src OTHER/src] [--steps 2]     # ~6 minutes on 2 CPU cores, alone
    python benchmarks/real_vocab.py --blocks [--src OTHER/src]        # ~1 minute

A Qwen2 built from a config with Qwen's 151,936-token vocabulary and a tiny body (hidden 64, 2
layers; random weights, so it writes 256-token completions of filler tokens), on `arith`, 4 prompts x
4 samples per step, 256-token completions. Each method is `npo train` in a process of its own; its
peak resident memory is the kernel's (`wait4`'s ru_maxrss). The NPO bootstrap looks ahead one step,
writes the bank for the window's 4 prompts x k = 4 through the live policy (the path whose memory
grew as rows x length x vocabulary before issue 26), rolls back and retrains; LUFFY injects the
reference answer into every group and scores it (guide_loss shaping: npo's own forward over the guide
rows). `--blocks`: `npo.models.generation.Policy` on a model with hidden size 16 and the same vocabulary,
scoring 16 completions of 256 tokens and sampling 4 prompts x 4 x 128 tokens, with the peak of the
process's private memory above what it held before each (a 64 MiB budget where the code has one).
`--src`: run another checkout's code (its `src/`), e.g. a worktree of the commit before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["train.prompts_per_step=4", "train.grpo.num_generations=4", "train.grpo.max_completion_length=256",
          "train.checkpoint_every=1", "eval.n=4", "eval.samples=0", "eval.every=0", "task.eval_size=20"]
METHODS = {
    "grpo": ["method=grpo"],
    "npo": ["method=npo", "npo.k=4", "npo.interventions=[{kind: bootstrap, lookahead: 1, window: 1}]"],
    "luffy": ["method=luffy"],
}


def blocks(folder: Path, score_tokens: int = 256, sample_tokens: int = 128) -> None:
    """In this process (the code on the path): scoring and sampling's peak private memory."""
    import gc

    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from memory_probe import PeakMemory

    torch.set_num_threads(1)

    from npo.models.generation import Policy
    from npo.models.load import load_policy
    from npo.tasks.base import Item

    model, tok = load_policy(folder)
    vocab = model.config.vocab_size
    try:
        policy = Policy(model, tok, "plain", budget=64 << 20)
    except TypeError:  # code from before the budget
        policy = Policy(model, tok, "plain")
    items = [Item(f"{i}+{i}=", str(2 * i)) for i in range(16)]
    gen = torch.Generator().manual_seed(0)
    comps = [torch.randint(3, vocab, (score_tokens,), generator=gen).tolist() for _ in range(16)]
    out = {}
    for name, work in (("scoring", lambda: policy.token_logps(items, comps)),
                       ("sampling", lambda: policy.sample(items[:4], k=4, temperature=1.0, max_new_tokens=sample_tokens,
                                                          seeds=[1, 2, 3, 4]))):
        gc.collect()
        t0 = time.perf_counter()
        with PeakMemory() as peak:
            work()
        out[name] = {"peak_mb": round(peak.growth / 2**20), "seconds": round(time.perf_counter() - t0, 2)}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", help="another checkout's src/ folder (the code to measure)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--blocks", action="store_true", help="npo's own scoring and sampling alone")
    ap.add_argument("--here", type=Path, help=argparse.SUPPRESS)  # --blocks on this model folder, in this process
    ap.add_argument("--tokens", type=int, nargs=2, default=(256, 128), metavar=("SCORED", "SAMPLED"),
                    help="--blocks: completion tokens scored (16 rows) and sampled (4 x 4 rows)")
    a = ap.parse_args()
    if a.here:
        return blocks(a.here, *a.tokens)
    sys.path.insert(0, str(ROOT / "src"))
    from npo.config.run import TinyModelConfig
    from npo.models.tiny import real_vocab_folder

    if a.blocks:  # the model built by this checkout, measured with the code of --src (or this one)
        small = TinyModelConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                intermediate_size=32, max_position_embeddings=512)
        with tempfile.TemporaryDirectory() as tmp:
            folder = real_vocab_folder(Path(tmp) / "m", small)
            env = {**os.environ, **({"PYTHONPATH": a.src} if a.src else {})}
            subprocess.run([sys.executable, __file__, "--here", str(folder), "--tokens", *map(str, a.tokens)], env=env,
                           check=True)
        return

    arch = TinyModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=128, max_position_embeddings=320)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = real_vocab_folder(Path(tmp) / "model", arch)
        for method in METHODS:
            rows.append(measured(method, folder, Path(tmp) / method, a.steps, a.src))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| method | peak RSS | mean step | guide generation (bank) | wall |\n|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | failed: {r['error']} | | | |")
        else:
            print(f"| {r['method']} | {r['peak_mb']:.0f} MB | {r['step_s']:.1f} s | {r['guide_s']:.1f} s | "
                  f"{r['wall_s']:.0f} s |")


def measured(method: str, folder: Path, out: Path, steps: int, src: str | None) -> dict:
    """`run`, with the child's peak resident memory from the kernel."""
    sets = COMMON + METHODS[method] + [f"model.path={folder}", f"train.steps={steps}"]
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    argv = [sys.executable, "-m", "npo.cli.main", "train", str(ROOT / "configs" / "tiny-grpo.yaml"),
            *[x for s in sets for x in ("--set", s)], "--out", str(out), "--quiet"]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        stdout.seek(0), stderr.seek(0)
        printed, said = stdout.read(), stderr.read()
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    if os.waitstatus_to_exitcode(status):
        return {"method": method, "peak_mb": peak, "error": (said.strip().splitlines() or ["?"])[-1][:200]}
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()] \
        if (out / "events.jsonl").exists() else []
    return {"method": method, "peak_mb": peak, "step_s": statistics.mean(m["train/step_time"] for m in metrics),
            "guide_s": sum(e["compute"]["guide_seconds"] for e in events if e.get("event") == "intervention"),
            "wall_s": json.loads(printed)["wall_seconds"]}


if __name__ == "__main__":
    main()
