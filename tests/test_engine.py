"""The run's one trainer across processes and under DeepSpeed (tests/engine_worker.py under torchrun):
in-place rollbacks replay bit for bit with flat host memory, for 2-process gloo DDP and for DeepSpeed
ZeRO-2 and ZeRO-3 on CPU; `npo train` under 2 processes writes one line per event and a complete bank;
the bank the engine writes does not depend on the process count."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from engine_worker import SMALL, bank_of_untrained_policy
from npo.config import load_config
from npo.rundir import read_jsonl
from npo.train import open_run, prepare

MEMORY_MB = 50  # the bound on host-memory growth over 3 rollbacks


def launch(processes: int, out: Path, *args: str, port: int) -> dict:
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(torchrun), "--nproc_per_node", str(processes), "--master_port", str(port),
                           str(ROOT / "tests" / "engine_worker.py"), *args[:1], str(out), *args[1:]],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_two_processes_one_engine_each(tmp_path):
    result = launch(2, tmp_path, "replay,run", port=29511)
    rep = result["replay"]
    assert rep["processes"] == 2 and rep["replays_equal"] == [True, True, True]
    assert rep["rss_growth_mb"] < MEMORY_MB
    # npo train under 2 processes: the folder is prepared once, every file has one writer
    run = tmp_path / "npo" / "run"
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4]
    assert [e["step"] for e in read_jsonl(run / "eval.jsonl")] == [0, 2, 4]
    (event,) = read_jsonl(run / "events.jsonl")
    assert event["event"] == "intervention" and event["window"] == [0, 2]
    # the bank on disk holds every process's prompts: all of the window's, from the data order
    bank = json.loads((run / "guides" / "0-bootstrap.json").read_text())
    cfg = load_config(run / "config.yaml")
    assert len(bank["tried"]) == event["guides"]["requested"] == 2 * cfg.train.prompts_per_step
    assert len(bank["guides"]) == event["guides"]["found"] > 0
    # the same policy writes the same bank whether 1 or 2 processes share the sampling
    one = bank_of_untrained_policy(open_run(prepare(cfg, tmp_path / "one"), show_progress=False))
    assert result["run"]["bank"] == one and result["run"]["processes"] == 2 and one["guides"]


def test_deepspeed_zero2_on_a_30m_model_rolls_back_in_place(tmp_path):
    rep = launch(1, tmp_path, "replay", "big", "deepspeed=zero2", port=29512)["replay"]
    assert rep["deepspeed"] and 25e6 < rep["parameters"] < 35e6
    assert rep["replays_equal"] == [True, True, True] and rep["rss_growth_mb"] < MEMORY_MB


def test_deepspeed_zero3_rolls_back_in_place(tmp_path):
    """In bf16 (model.dtype): the checkpoints' weights are bf16, half of fp32's bytes (DeepSpeed keeps the
    fp32 masters in its optimizer state), and the rollbacks still replay bit for bit."""
    rep = launch(1, tmp_path, "replay", "deepspeed=zero3", "bf16", port=29513)["replay"]
    assert rep["deepspeed"] and rep["replays_equal"] == [True, True, True] and rep["rss_growth_mb"] < MEMORY_MB
    assert rep["weights_dtype"] == "torch.bfloat16" and rep["engine_bf16"]


def test_launch_recipes_load():
    import pytest
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"ddp": ("MULTI_GPU", None), "zero2": ("DEEPSPEED", 2), "zero3": ("DEEPSPEED", 3), "fsdp2": ("FSDP", None)}
    for name, (kind, stage) in expected.items():
        cfg = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
        assert cfg.distributed_type.value == kind, name
        assert (cfg.deepspeed_config or {}).get("zero_stage") == stage, name
    with pytest.raises(Exception):
        load_config_from_file(str(ROOT / "configs" / "accelerate" / "nope.yaml"))
