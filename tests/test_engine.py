"""The run's one trainer across processes and under DeepSpeed (tests/engine_worker.py under torchrun):
in-place rollbacks replay bit for bit with flat host memory under DeepSpeed ZeRO-2 (one process, 8M
parameters) and ZeRO-3 (two processes, bf16), LoRA adapters under ZeRO-2 too; `npo train` under 2 DDP
processes writes one line per event and a complete bank, which does not depend on the process count;
NPO's own collectives under 2-process ZeRO-3 (guides on one process, an evaluation smaller than the
process count, an AutoNPO decision) and a tensor-parallel vLLM group finish."""

import json

import pytest

from npo.algo.controls import is_control
from npo.config.run import load_config
from npo.loops.run import open_run, prepare
from npo.rundir.layout import read_jsonl
from npo.tasks import build_split

from conftest import ROOT, launch_engine_worker
from engine_worker import bank_of_untrained_policy

MEMORY_MB = 50  # the bound on host-memory growth over 3 rollbacks


def test_two_processes_one_engine_each(two_processes):
    """(The replays of the one engine on two processes: under ZeRO-3, below.)"""
    tmp_path, result = two_processes
    # npo train under 2 processes: the folder is prepared once, every file has one writer
    run = tmp_path / "npo" / "run"
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4]
    assert [e["step"] for e in read_jsonl(run / "eval.jsonl")] == [0, 2, 4]
    event, effect, at_end = read_jsonl(run / "events.jsonl")
    assert event["event"] == "intervention" and event["window"] == [0, 2]
    # npo.controls under 2 processes: the window's assignments, and their resampling through the engine
    # after the window and again at the run's end (every process in both)
    assigned = json.loads((run / "guides" / "0-bootstrap.controls.json").read_text())["assigned"]
    arm = effect["arms"]["near_future"]
    assert effect["event"] == "effect" and arm["n"] + arm["control"]["n"] == len(assigned) > 0
    assert (at_end["event"], at_end["at"], at_end["arms"]["near_future"]["n"]) == ("effect", 4, arm["n"])
    cfg = load_config(run / "config.yaml")
    # each assignment is the coin one process draws for (seed, intervention, prompt): 2 processes, 1 coin
    _, train_items, _ = build_split(cfg)
    assert all(a["treated"] == (not is_control(0.5, cfg.seed, 0, train_items[a["index"]].key)) for a in assigned)
    # the bank on disk holds every process's prompts: all of the window's, from the data order
    bank = json.loads((run / "guides" / "0-bootstrap.json").read_text())
    assert len(bank["tried"]) == event["guides"]["requested"] == 2 * cfg.train.prompts_per_step
    assert len(bank["guides"]) == event["guides"]["found"] > 0
    # the same policy writes the same bank whether 1 or 2 processes share the sampling
    one = bank_of_untrained_policy(open_run(prepare(cfg, tmp_path / "one"), show_progress=False))
    assert result["run"]["bank"] == one and result["run"]["processes"] == 2 and one["guides"]


def test_deepspeed_zero2_on_an_8m_model_rolls_back_in_place(tmp_path):
    """(Issue 12 measured this at 31.5M parameters, BENCHMARKS.md; 8M keeps a leaked engine copy, ~130 MB,
    well above the bound, in a quarter of the time.)"""
    rep = launch_engine_worker(1, tmp_path, "replay", "big", "deepspeed=zero2")["replay"]
    assert rep["deepspeed"] and 6e6 < rep["parameters"] < 10e6
    assert rep["replays_equal"] == [True, True, True] and rep["rss_growth_mb"] < MEMORY_MB


def test_deepspeed_zero3_on_two_processes(two_processes):
    """Two processes, weights sharded (every forward and generate step a collective; a process that skips
    one hangs the run, and the launch's timeout fails the test):
    - in-place rollbacks replay bit for bit, in bf16 (model.dtype): the checkpoints' weights are bf16,
      half of fp32's bytes (DeepSpeed keeps the fp32 masters in its optimizer state), and a model-only
      load of a checkpoint (`npo.trl_seam.engine.load_weights`, from those weights) leaves exactly its tensors;
    - an NPO bootstrap with one group per process reaches a step where only one process holds guide
      rows (guide_loss importance: npo's own forward over them), evaluating one item on two processes;
    - an AutoNPO run decides (pi_T sampled and scored through the engine, the candidate loaded in place
      from its 16-bit weights) and intervenes."""
    rep, sharded = two_processes[1]["replay-zero3"], two_processes[1]["sharded"]
    assert rep["processes"] == sharded["processes"] == 2 and rep["deepspeed"]
    assert rep["replays_equal"] == [True, True, True] and rep["rss_growth_mb"] < MEMORY_MB
    assert rep["weights_dtype"] == "torch.bfloat16" and rep["engine_bf16"]
    assert rep["loaded_equal"]  # a model-only load from the 16-bit weights, in place
    window = [m for m in sharded["npo_metrics"] if m["step"] <= 2]
    assert [m["npo/gated_groups"] for m in window] == [2.0, 2.0]  # both processes' groups gated ...
    assert 1.0 in [m["npo/replaced_groups"] for m in window]  # ... and at some step a guide for one of them only
    assert sharded["npo"]["interventions"] == 1 and sharded["npo"]["eval_items"] == 1
    decision, intervention = sharded["autonpo_events"]
    assert decision["event"] == "autonpo_decision" and decision["delta"] == 4 and decision["table"][0]["n_failed"] > 0
    assert intervention["event"] == "intervention" and intervention["guides"]["injected"] > 0


def test_lora_under_zero2_rolls_back_in_place(two_processes):
    """HF saves a PEFT model's DeepSpeed checkpoint without the frozen base weights: the rollback loads it
    non-strictly, as HF's own first load does, and replays bit for bit (two processes)."""
    rep = two_processes[1]["replay-lora"]
    assert rep["deepspeed"] and rep["processes"] == 2 and rep["replays_equal"] == [True, True, True]


def test_a_tensor_parallel_vllm_group_is_one_engine(two_processes):
    """Two processes, one tensor-parallel engine (the stand-in refuses members that ask different requests):
    TRL's rollouts and the bootstrap's bank go through it."""
    result = two_processes[1]["vllm_tp"]
    assert result["summary"]["interventions"] == 1 and result["bank"]["guides"]


def test_launch_recipes_load():
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"ddp": ("MULTI_GPU", None), "zero2": ("DEEPSPEED", 2), "zero3": ("DEEPSPEED", 3), "fsdp2": ("FSDP", None)}
    for name, (kind, stage) in expected.items():
        cfg = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
        assert cfg.distributed_type.value == kind, name
        assert (cfg.deepspeed_config or {}).get("zero_stage") == stage, name
    with pytest.raises(FileNotFoundError):
        load_config_from_file(str(ROOT / "configs" / "accelerate" / "nope.yaml"))
