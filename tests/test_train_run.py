"""End to end on the embedded default: the run directory, determinism, `npo eval` on a run."""

import json
from pathlib import Path

import torch

from npo.cli.main import main
from npo.config.run import load_config
from npo.loops.run import prepare, train
from npo.rundir.layout import checkpoint_state, read_jsonl

from conftest import ROOT

SHORT = ["train.steps=6", "train.checkpoint_every=3", "eval.every=3", "eval.n=60", "eval.samples=2",
         "train.prompts_per_step=8"]
METRIC_KEYS = {"reward/mean", "reward/std", "signal/group_accuracy", "signal/all_wrong_frac",
               "signal/all_right_frac", "signal/entropy", "train/learning_rate", "train/step_time",
               "signal/generated_tokens"}
SUMMARY_KEYS = {"initial_accuracy", "final_accuracy", "best_accuracy", "final_steps", "total_steps",
                "generated_tokens", "wall_seconds"}


def short_run(out, *extra):
    cfg = load_config(ROOT / "configs" / "tiny-grpo.yaml", SHORT + list(extra))
    return train(prepare(cfg, out), show_progress=False)


def test_run_directory(tmp_path, tiny_model_path):
    out = tmp_path / "run"
    summary = short_run(out)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["final_steps"] == summary["total_steps"] == 6
    assert json.loads((out / "summary.json").read_text()) == summary
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    for m in metrics:
        assert METRIC_KEYS <= set(m)
        assert 0 <= m["signal/all_wrong_frac"] + m["signal/all_right_frac"] <= 1
        assert abs(m["signal/group_accuracy"] - m["reward/mean"]) < 1e-6  # binary rewards
    assert summary["generated_tokens"] == metrics[-1]["signal/generated_tokens"] > 0
    # each completion is verified once per step: TRL's reward function reuses the gate's verdicts, so a
    # step without evaluation verifies at most its 8 x 8 completions (it would be twice that otherwise)
    calls = [m["verify/calls"] for m in metrics]
    assert all(0 < calls[s] - calls[s - 1] <= 64 for s in (1, 4))
    evals = read_jsonl(out / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 3, 6] and all(e["n"] == 60 for e in evals)
    assert summary["initial_accuracy"] == evals[0]["accuracy"]
    assert summary["final_accuracy"] == evals[-1]["accuracy"]
    assert summary["best_accuracy"] == max(e["accuracy"] for e in evals)
    # a finished run keeps its last checkpoint whole and the weights of the others (npo.rundir.retention)
    for step, whole in ((3, False), (6, True)):
        ck = out / "checkpoints" / f"checkpoint-{step}"
        assert (ck / "model.safetensors").exists() and (ck / "trainer_state.json").exists(), step
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            assert (ck / name).exists() == whole, (step, name)
        assert checkpoint_state(ck) is not None  # complete either way: eval and signal read the weights
    assert summary["checkpoints"] == {"full": 1, "weights_only": 1}
    assert summary["disk_bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and
                                        p.name != "summary.json")
    # every effective value is recorded: npo's GRPO defaults in config.yaml (which reruns as is), and
    # every GRPOConfig field, TRL's own defaults included, in trl_args.json
    resolved = load_config(out / "config.yaml")
    assert resolved.train.steps == 6 and resolved.train.grpo["lr_scheduler_type"] == "constant"
    assert resolved.train.grpo["learning_rate"] == 3e-4 and resolved.train.grpo["loss_type"] == "grpo"
    trl = json.loads((out / "trl_args.json").read_text())
    assert trl["max_steps"] == 6 and trl["learning_rate"] == 3e-4 and trl["lr_scheduler_type"] == "constant"
    assert trl["gradient_checkpointing"] is False and trl["epsilon"] == 0.2  # ours, and TRL's own default


def test_bf16_in_one_process_is_mixed_precision_over_fp32_masters(tmp_path, tiny_model_path):
    """model.dtype bf16 without DeepSpeed or FSDP: TRL's bf16 autocast over fp32 weights, which are what the
    checkpoints hold (a rollback restores them exactly). At lr 1e-6 the masters move almost everywhere,
    where bf16 weights would mostly not move at all (an update of ~1e-6 against a resolution of 2^-8 of
    the weight). Halved checkpoints: the engines that keep the masters elsewhere (tests/test_engine.py)."""
    from safetensors.torch import load_file

    summary = short_run(tmp_path / "bf16", "train.steps=3", "eval.samples=0", "eval.n=20", "model.dtype=bf16",
                        "train.grpo.learning_rate=1e-6")
    trl = json.loads((tmp_path / "bf16" / "trl_args.json").read_text())
    assert trl["bf16"] is True and trl["fp16"] is False
    start, end = load_file(Path(tiny_model_path) / "model.safetensors"), load_file(
        tmp_path / "bf16" / "checkpoints" / "checkpoint-3" / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in end.values())
    moved = sum(int((end[k] != start[k]).sum()) for k in end) / sum(t.numel() for t in end.values())
    as_bf16 = sum(int((end[k].bfloat16() != start[k].bfloat16()).sum()) for k in end) / sum(t.numel() for t in end.values())
    assert moved > 0.9 and as_bf16 < 0.1, (moved, as_bf16)
    assert all(torch.isfinite(torch.tensor(m["train/loss"])) for m in read_jsonl(tmp_path / "bf16" / "metrics.jsonl"))
    assert summary["final_steps"] == 3


def test_a_seed_fixes_a_cpu_run(tmp_path, tiny_model_path):
    def strip(records):
        return [{k: v for k, v in r.items() if "time" not in k} for r in records]

    short_run(tmp_path / "a")
    short_run(tmp_path / "b")
    short_run(tmp_path / "c", "seed=1")
    ma, mb, mc = (strip(read_jsonl(tmp_path / x / "metrics.jsonl")) for x in "abc")
    assert ma == mb
    assert ma != mc
    wa = torch.load(tmp_path / "a/checkpoints/checkpoint-6/optimizer.pt", weights_only=False)
    wb = torch.load(tmp_path / "b/checkpoints/checkpoint-6/optimizer.pt", weights_only=False)
    assert all(torch.equal(x["exp_avg"], y["exp_avg"]) for x, y in zip(wa["state"].values(), wb["state"].values()))


def test_npo_eval_on_a_run_matches_its_summary(tmp_path, tiny_model_path, capsys):
    out = tmp_path / "run"
    summary = short_run(out)
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == summary["final_accuracy"] and result["n"] == 60
    assert result["verify"]["calls"] >= 60 and result["verify"]["errors"] == result["verify"]["timeouts"] == 0
    # a data file smaller than task.eval_size, every row evaluated, and each answer dumped as it was scored
    rows = [{"question": f"{a}+{b}=", "answer": str(a + b)} for a, b in ((12, 30), (45, 11), (20, 20))]
    (tmp_path / "three.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dump = tmp_path / "dump.jsonl"
    assert main(["eval", str(out), "--task", f"jsonl:{tmp_path / 'three.jsonl'}", "--n", "3", "--samples", "2",
                 "--dump", str(dump), "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    dumped = read_jsonl(dump)
    assert result["n"] == 3 and sorted(d["question"] for d in dumped) == sorted(r["question"] for r in rows)
    assert all(d["prompt"] == d["question"] and len(d["samples"]) == 2 for d in dumped)  # plain prompts
    assert result["accuracy"] == sum(d["greedy"]["reward"] for d in dumped) / 3
    assert result["mean_at_k"] == sum(s["reward"] for d in dumped for s in d["samples"]) / 6
    assert all(d["greedy"]["extracted"] == d["greedy"]["completion"] for d in dumped)  # math-verify reads it whole
