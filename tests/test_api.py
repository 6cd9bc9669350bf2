"""The Python API (npo.api): the API and a YAML config describe one run (every shipped config maps to
the API's arguments and back; a run written by hand in Python equals `npo train` of the same config,
metric for metric); the examples run; bad arguments are one-line UserErrors."""

import dataclasses
import json
import os
import runpy
import subprocess
import sys

import pytest
import torch
import yaml

import npo
from npo.api import api_arguments, run_config
from npo.config.presets import METHOD_PRESETS
from npo.config.run import load_config, resolved
from npo.config.trl_args import grpo_kwargs
from npo.errors import UserError
from npo.rundir.layout import read_jsonl

from conftest import ROOT
from golden import normalized

SMALL = ["method=npo", "train.steps=4", "train.checkpoint_every=2", "npo.interventions=[{kind: bootstrap, lookahead: 2}]",
         "eval.every=2", "eval.n=20", "npo.k=2"]


def effective(cfg) -> dict:
    """A config as it runs: its sections, and train.grpo as the GRPOConfig it builds."""
    out = dataclasses.asdict(resolved(cfg))
    out["train"]["grpo"] = grpo_kwargs(cfg, output_dir="x")
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_config_maps_to_the_api_and_back(name, tmp_path):
    """The config as it is, and as each method of `npo compare` over it (where that method's preset
    applies to it: AutoNPO's guides are near-future only)."""
    mapped = 0
    for method, sets in {"as is": [], **METHOD_PRESETS}.items():
        if method == "rlep":
            sets = sets + [f"npo.source=pool:{tmp_path / 'pool.jsonl'}"]
        try:
            cfg = load_config(ROOT / "configs" / name, sets)
        except UserError:
            assert method != "as is"
            continue
        a = api_arguments(cfg, tmp_path / "run")
        back = run_config(a["args"], a["model"], a["task"], a["guide"], heldout=cfg.task.eval_size)
        assert effective(back) == effective(cfg), (name, method)
        mapped += 1
    assert mapped >= 5


def test_a_run_written_in_python_equals_npo_train_of_its_config(tmp_path):
    """The CLI run is a process of its own, as a user's: it also prints nothing but its result (no
    third-party warning: TRL's deprecated call, a tied model's "missing lm_head.weight", DeepSpeed's
    accelerator guess)."""
    cli = subprocess.run([sys.executable, "-m", "npo.cli.main", "train", str(ROOT / "configs" / "tiny-grpo.yaml"),
                          *[x for s in SMALL for x in ("--set", s)], "--out", str(tmp_path / "cli"), "--quiet"],
                         capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"})
    assert cli.returncode == 0 and cli.stderr == "", cli.stderr
    assert json.loads(cli.stdout)["interventions"] == 1
    args = npo.NPOConfig(output_dir=str(tmp_path / "api"), seed=0, max_steps=4, save_steps=2,
                         per_device_train_batch_size=16 * 8, num_generations=8, learning_rate=3e-4,
                         max_completion_length=6, temperature=1.0, beta=0.0, loss_type="grpo",
                         heldout_every=2, heldout_n=20, heldout_samples=4, heldout_temperature=1.0)
    trainer = npo.NPOTrainer(
        model=npo.ModelConfig(path="tiny", warmup=npo.WarmupConfig(steps=1000, batch_size=128, lr=2e-3)),
        task=npo.TaskConfig(spec="arith", options={"terms": 2, "digits": 2, "ops": "+-"}, eval_size=500),
        args=args, guide=npo.NearFuture(npo.Bootstrap(lookahead=2), tau=0.6, k=2), show_progress=False)
    summary = trainer.train()
    cli, api = normalized(tmp_path / "cli"), normalized(tmp_path / "api")
    assert len(cli["metrics.jsonl"]) == 4 and cli["events.jsonl"]  # the final trajectory; the intervention
    assert api == cli
    cli_cfg, api_cfg = (yaml.safe_load((tmp_path / d / "config.yaml").read_text()) for d in ("cli", "api"))
    assert api_cfg == cli_cfg
    assert summary["interventions"] == 1 and summary["guide_samples"] > 0


def test_examples_run_on_the_tiny_model(tmp_path):
    """Each example at toy size: its own dataset and reward functions, a look-ahead, guides injected."""
    custom = runpy.run_path(str(ROOT / "examples" / "custom_reward.py"))
    s = custom["main"](str(tmp_path / "custom"), steps=4, warmup_steps=20, rows=200, heldout=20)
    assert s["task"] == "python" and s["interventions"] == 1 and s["guide_samples"] > 0
    assert s["eval_items"] == 20
    metrics = normalized(tmp_path / "custom")["metrics.jsonl"]
    assert all("rewards/brevity/mean" in m for m in metrics)  # the second reward reached TRL's sum
    gsm8k = runpy.run_path(str(ROOT / "examples" / "gsm8k_math_verify.py"))
    s = gsm8k["main"](str(tmp_path / "gsm8k"), steps=2, warmup_steps=4)
    assert s["final_steps"] == 2 and s["eval_items"] == 20


def test_a_verifier_sees_rows_as_trl_would():
    """The verifier is called on one completion with the row's columns, a conversational prompt's
    completion as one assistant message; a raising verifier scores 0 and is counted."""
    from npo.tasks.python import RewardTask, dataset_items

    seen = []

    def check(prompts, completions, answer, level, **_):
        seen.append((prompts, completions, answer, level))
        return [1.0 if "42" in str(completions[0]) else 0.0]

    rows = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "6*7?"}],
             "answer": "42", "level": 3}, {"question": "1+1?", "answer": "2", "level": 1}]
    items = dataset_items(rows, "train_dataset")
    task = RewardTask(check, items, [])
    assert task.score("it is 42", items[0]) == 1.0 and task.score("41", items[1]) == 0.0
    assert seen[0] == ([rows[0]["prompt"]], [[{"role": "assistant", "content": "it is 42"}]], ["42"], [3])
    assert seen[1] == (["1+1?"], ["41"], ["2"], [1])
    assert task.inline  # a local function runs in this process
    assert not RewardTask(npo.math_verify_reward, items, []).inline  # an importable one in the worker


@pytest.mark.parametrize("kwargs, message", [
    ({"reward_funcs": [len]}, "reward_funcs score a train_dataset"),
    ({"train_dataset": [{"prompt": "1+1="}]}, "reward_funcs: give one or more"),
    ({"train_dataset": [{"text": "1+1="}], "reward_funcs": len}, "row 0: no 'prompt' column"),
    ({"train_dataset": [{"prompt": "1+1=", "item_index": 3}], "reward_funcs": len}, "'item_index' is npo's own"),
    ({"train_dataset": [{"prompt": "1+1="}], "reward_funcs": len, "verifier": "exact"}, "verifier 'exact' is none"),
    ({"train_dataset": [{"prompt": f"{i}+1="} for i in range(10)], "reward_funcs": len}, "task.eval_size: 300 >= the 10 rows"),
    ({"guide": npo.NearFuture(tau=0.6)}, "npo.interventions: method npo needs at least one intervention"),
    ({"guide": npo.NearFuture(npo.Bootstrap(lookahead=5), tau=2.0)}, "npo.tau"),
    ({"model": object()}, "a model object needs its processing_class"),
    ({"guide": "npo"}, "guide: expected a Method"),
    ({"train_dataset": [{"prompt": [{"role": "user", "content": f"{i}+1="}]} for i in range(40)], "reward_funcs": len,
      "eval_dataset": [{"prompt": "x="}], "args_": {"heldout_n": 1}},
     "row 0: column 'prompt' holds chat messages, and the tokenizer of model tiny has no chat template"),
    ({"train_dataset": [{"prompt": "1+1="}] * 40, "reward_funcs": len, "eval_dataset": [{"prompt": "x="}],
      "args_": {"num_train_epochs": 2.0, "heldout_n": 1}}, "NPOConfig.num_train_epochs: npo trains max_steps"),
    ({"train_dataset": [{"prompt": "1+1="}] * 40, "reward_funcs": len, "eval_dataset": [{"prompt": "x="}],
      "args_": {"eval_strategy": "steps", "heldout_n": 1}}, "NPOConfig.eval_strategy: npo evaluates its held-out"),
    ({"train_dataset": [{"prompt": f"{i}+1="} for i in range(4)], "eval_dataset": [{"prompt": f"{i}+1="} for i in
      range(4)], "reward_funcs": len}, "train_dataset: every row's question is in eval_dataset"),
    ({"train_dataset": [{"prompt": f"{i}+1="} for i in range(40)], "reward_funcs": len, "eval_dataset": [
      {"prompt": "x="}], "args_": {"reward_weights": [1.0, 1.0], "heldout_n": 1}}, "reward_weights: 2 weights for 1"),
])
def test_bad_api_arguments_are_one_line_errors(kwargs, message, tmp_path):
    kwargs = dict(kwargs)
    args = npo.NPOConfig(output_dir=str(tmp_path / "run"), **kwargs.pop("args_", {}))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("*", r"\*")) as info:
        npo.NPOTrainer(args=args, **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_a_lora_npo_run_trains_rolls_back_and_injects(tmp_path):
    """examples/lora.py at toy size (LoRA through peft_config, a bootstrap intervention, the tiny
    model): checkpoints hold the adapters only; the look-ahead trains them; the rollback puts back
    checkpoint 0's adapters (the window's first step samples exactly as the look-ahead's first did);
    guides are injected; and `npo eval` reads the run's adapters onto their base model."""
    from safetensors.torch import load_file

    out = tmp_path / "lora"
    example = runpy.run_path(str(ROOT / "examples" / "lora.py"))
    summary = example["main"](str(out), steps=4, lookahead=2, learning_rate=1e-2)
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["lora"] == {
        "r": 4, "lora_alpha": 16, "target_modules": "all-linear"}  # peft_config is YAML model.lora
    start, look, end = (out / "checkpoints" / "checkpoint-0", out / "lookahead" / "0-bootstrap" / "checkpoint-2",
                        out / "checkpoints" / "checkpoint-4")
    for ck in (start, look, end):
        assert (ck / "adapter_model.safetensors").exists() and not (ck / "model.safetensors").exists()
    a0, a2 = (load_file(ck / "adapter_model.safetensors") for ck in (start, look))
    assert all(not v.any() for k, v in a0.items() if "lora_B" in k)  # LoRA's B starts at zero
    assert any(not torch.equal(a0[k], a2[k]) for k in a0)  # the look-ahead trained the adapters
    window, ahead = read_jsonl(out / "metrics.jsonl"), read_jsonl(out / "lookahead" / "0-bootstrap" / "metrics.jsonl")
    for key in ("signal/group_accuracy", "signal/all_wrong_frac", "signal/all_right_frac"):
        assert window[0][key] == ahead[0][key], key  # step 1 sampled again from checkpoint 0's adapters
    guided = load_file(out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    assert any(not torch.equal(guided[k], a2[k]) for k in a2)  # the guides sent the window elsewhere
    assert summary["interventions"] == 1 and sum(m.get("npo/guide_rows", 0) for m in window) > 0
    code = subprocess.run([sys.executable, "-m", "npo.cli.main", "eval", str(out), "--quiet", "--samples", "0"],
                          capture_output=True, text=True)
    assert code.returncode == 0 and code.stderr == "", code.stderr  # no warning of peft or transformers either
    assert json.loads(code.stdout)["accuracy"] == summary["final_accuracy"]


def test_held_out_rows_never_train(tmp_path, capsys):
    """eval_dataset is held out as jsonl:'s split is: a training row that asks one of its questions is left
    out of training, and the run says how many."""
    rows = [{"question": f"{i}+{i}=", "answer": str(2 * i)} for i in range(40)]
    args = npo.NPOConfig(output_dir=str(tmp_path / "run"), max_steps=2, save_steps=2)
    trainer = npo.NPOTrainer(args=args, train_dataset=rows, eval_dataset=rows[30:] + [rows[0]],
                             reward_funcs=npo.math_verify_reward)
    train = {it.question for it in trainer.prepared.train_items}
    held = {it.question for it in trainer.prepared.eval_items}
    assert not train & held and len(train) == 29 and len(held) == 11
    assert "11 of 40 train_dataset rows ask a question of eval_dataset: left out of training" in capsys.readouterr().err


def test_a_trl_users_script_runs_unchanged(tmp_path):
    """examples/trl_quickstart.py at toy size, through the public API only: chat prompts with a system
    message on a model folder with a chat template, two reward functions (one reading TRL's
    trainer_state), a spy on the verifier, a callback counting events; then save_model, a reload, and
    evaluate(). The verifier is called as TRL calls it: once per generation batch, with every completion."""
    import runpy

    from transformers import AutoModelForCausalLM, TrainerCallback

    quickstart = runpy.run_path(str(ROOT / "examples" / "trl_quickstart.py"))
    calls = []
    verifier = quickstart["correct"]

    def spy(completions, **kwargs):
        calls.append((len(completions), sorted(kwargs)))
        return verifier(completions, **kwargs)

    quickstart["main"].__globals__["correct"] = spy  # the function the script hands to NPOTrainer

    class Logs(TrainerCallback):
        keys: list = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.keys.append(sorted(logs))

    trainer, summary, metrics, events = quickstart["main"](str(tmp_path), steps=4, warmup_steps=20, rows=120,
                                                           callbacks=[Logs()])
    ahead = [k for k in Logs.keys if any(key.startswith("lookahead/") for key in k)]
    assert ahead and all(key.startswith("lookahead/") for k in ahead for key in k)
    assert len([k for k in ahead if "lookahead/loss" in k]) == 2  # the look-ahead's 2 steps, apart
    assert len([k for k in Logs.keys if "loss" in k]) == 4  # the final trajectory's, as TRL logs them
    assert summary["interventions"] == 1 and summary["final_steps"] == 4 and summary["stopped_at"] is None
    training = [c for c in calls if "completion_ids" in c[1]]
    assert training and all(n == 32 for n, _ in training)  # 8 prompts x 4 completions: one call per batch
    assert {"answer", "prompts", "completion_ids", "trainer_state"} <= set(training[0][1])
    assert len(calls) < 40  # not one call per completion (a run of this size verifies about 600)
    assert events == {"on_train_begin": 1, "on_train_end": 1, "on_step_end": 4}  # the final trajectory's steps
    assert trainer.state.global_step == 4 and [r["step"] for r in trainer.state.log_history if "train/loss" in r] == \
        [1, 2, 3, 4]
    assert metrics["eval_accuracy"] == summary["final_accuracy"] and metrics["eval_n"] == 20
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert reloaded.config.vocab_size == trainer.model.config.vocab_size
    with pytest.raises(Exception) as offline:  # TRL's push_to_hub, offline: the Hub's own error
        trainer.push_to_hub()
    assert not isinstance(offline.value, AttributeError), offline.value

    class StopAtThree(TrainerCallback):  # early stopping: after the guided window (0-2), mid-segment
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 3
            return control

    stopped, summary, _, events = quickstart["main"](str(tmp_path / "stopped"), steps=6, warmup_steps=20, rows=120,
                                                     callbacks=[StopAtThree()])
    assert summary["stopped_at"] == 3 and summary["final_steps"] == 3 and events["on_train_end"] == 1
    assert stopped.state.global_step == 3 and (tmp_path / "stopped" / "run" / "checkpoints" / "checkpoint-3").is_dir()
