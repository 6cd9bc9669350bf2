"""For users with vLLM on GPUs: does npo's one-engine design hold with a real vLLM engine?

    accelerate launch [--num_processes N] benchmarks/vllm_smoke.py --model PATH [--mode colocate|server]
        [--sleep] [--steps 6] [--out runs/vllm-smoke] [--tolerance 0.1]
    python benchmarks/vllm_smoke.py --fake          # the same code path on CPU, with the tests' stand-in

Runs an NPO bootstrap (scout 0 -> Delta, bank from the live policy through vLLM, in-place rollback to 0,
guided window, then plain GRPO) on `arith` with the given model folder (bf16 on GPU), and checks:
- after every push of the training weights into the engine (TRL's `sync_weights`, before a training
  generation, after a rollback or an in-place load, after sleep mode discarded them), a probe
  sequence's log-probs from the vLLM engine match the training model's forward within --tolerance (max
  over tokens, nats). A stale engine fails this by far more at the lr used here;
- the guide bank was written by the engine after a sync at the end of the look-ahead;
and prints the time of the bank against the mean GRPO step. Server mode needs a running
`trl vllm-serve --model PATH` (TRL's own server); the probe then asks the server for the sequence's
log-probs (`VLLMClient.get_sequence_logprobs`). `--fake` runs all three modes (colocate, `--sleep`,
server) on CPU with the tests' stand-in. Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def probe_logps(trainer, ids: list[int]) -> list[float] | None:
    """The probe sequence's per-token log-probs (tokens 2..n) from the vLLM engine (server mode: from the
    main process only; None elsewhere)."""
    vg = trainer.vllm_generation
    if vg.mode == "colocate":
        from vllm import SamplingParams

        if vg.enable_sleep_mode:  # right after a sync the weights are awake, the KV cache not yet
            vg.llm.wake_up(tags=["kv_cache"])
        out = vg.llm.generate([{"prompt_token_ids": ids}], sampling_params=SamplingParams(
            max_tokens=1, prompt_logprobs=0, temperature=1.0), use_tqdm=False)[0]
        return [next(iter(d.values())).logprob if t not in d else d[t].logprob
                for t, d in zip(ids[1:], out.prompt_logprobs[1:])]
    if not trainer.accelerator.is_main_process:
        return None
    out = vg.vllm_client.get_sequence_logprobs(sequences=[ids], prompt_lengths=[1], top_logprobs=1, temperature=1.0)
    return [x[0] for x in out["actual_logprobs"][0]]


def trainer_logps(trainer, ids: list[int]) -> list[float]:
    import torch

    with torch.no_grad():
        logits = trainer.model(input_ids=torch.tensor([ids], device=trainer.model.device)).logits[0, :-1].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:], device=logits.device)[:, None]).squeeze(-1).tolist()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny", help="a local HF model folder (default: the embedded default)")
    ap.add_argument("--mode", choices=["colocate", "server"], default="colocate")
    ap.add_argument("--sleep", action="store_true", help="vLLM sleep mode (colocate)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "vllm-smoke")
    ap.add_argument("--tolerance", type=float, default=0.1, help="max |vLLM - trainer| log-prob, nats")
    ap.add_argument("--fake", action="store_true", help="CPU dry run with tests/fake_vllm.py")
    a = ap.parse_args()
    if a.fake:  # the tests' stand-in for the vLLM library (and, in server mode, for `trl vllm-serve`)
        import pytest

        sys.path.insert(0, str(ROOT / "tests"))
        import fake_vllm

        patch = pytest.MonkeyPatch()
        fake_vllm.install(patch)
    from npo.config.run import load_config
    from npo.loops.npo import train_npo
    from npo.loops.run import close_run, open_run, prepare

    delta = max(2, a.steps // 3)
    cfg = load_config(ROOT / "configs" / "tiny-npo-bootstrap.yaml", [
        f"model.path={a.model}", f"train.steps={a.steps}", f"train.checkpoint_every={delta}",
        "train.prompts_per_step=8", "eval.every=0", "eval.n=50", "eval.samples=0",
        f"npo.interventions=[{{kind: bootstrap, lookahead: {delta}, window: {delta}}}]",
        "train.grpo.use_vllm=true", f"train.grpo.vllm_mode={a.mode}", f"train.grpo.vllm_enable_sleep_mode={a.sleep}",
        "train.grpo.learning_rate=1e-4"])
    if a.fake and a.mode == "server":  # the fake server serves the run's model folder
        from npo.models.load import resolve_model_path
        from npo.tasks import build_split

        fake_vllm.install(patch, server=resolve_model_path(cfg, build_split(cfg)[1]))
    ctx = open_run(prepare(cfg, a.out), show_progress=False)
    trainer = ctx.trainer
    vg = trainer.vllm_generation
    ids = trainer.processing_class(text=[ctx.train_items[0].question + ctx.train_items[0].answer])["input_ids"][0]
    checks, step_times, bank = [], [], {}
    generate, sync = vg.generate, vg.sync_weights

    def checked_sync():  # after every push of the training weights, the engine must answer as the trainer does
        sync()
        engine = probe_logps(trainer, ids)
        if engine is not None:
            gap = max(abs(x - y) for x, y in zip(engine, trainer_logps(trainer, ids)))
            checks.append({"step": trainer.state.global_step, "max_abs_logp_gap": gap, "ok": gap <= a.tolerance})

    def timed_generate(*args, **kwargs):
        t0 = time.perf_counter()
        out = generate(*args, **kwargs)
        step_times.append(time.perf_counter() - t0)
        return out

    vg.sync_weights, vg.generate = checked_sync, timed_generate
    from npo.guides.bank import Guidance
    from npo.rundir.layout import read_jsonl

    original_prefill = Guidance.prefill

    def timed_prefill(self, *args, **kwargs):
        syncs_before = trainer._last_loaded_step
        t0 = time.perf_counter()
        original_prefill(self, *args, **kwargs)
        bank.update(seconds=time.perf_counter() - t0, prompts=len(self.bank.tried), synced_at=trainer._last_loaded_step,
                    step=trainer.state.global_step, tag_before=syncs_before)

    Guidance.prefill = timed_prefill
    train_npo(ctx)
    summary = close_run(ctx, a.out)
    Guidance.prefill = original_prefill
    main = trainer.accelerator.is_main_process  # server mode: the main process probes
    ok = (bool(checks) or not main) and all(c["ok"] for c in checks) and bank.get("synced_at") == bank.get("step")
    step_seconds = [m["train/step_time"] for m in read_jsonl(ctx.run.metrics)]
    report = {"mode": a.mode, "sleep": a.sleep, "checks": checks, "bank": bank,
              "mean_generation_seconds": statistics.mean(step_times) if step_times else None,
              "mean_grpo_step_seconds": statistics.mean(step_seconds),
              "bank_over_step": bank.get("seconds", 0) / statistics.mean(step_seconds),
              "final_accuracy": summary["final_accuracy"], "ok": ok}
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
