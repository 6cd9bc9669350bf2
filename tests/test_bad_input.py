"""The bad-input corpus: every malformed input a new user tried (configs, values, model folders, data
files, paths, misuse of every command) gets exit 2, one line naming the file, field or row, no
traceback, and nothing written. Each case runs `npo` in-process; every check runs before any model is
built or trained, so the corpus takes seconds."""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from npo.cli.main import main
from npo.errors import UserError
from npo.models.tiny import build_tokenizer
from npo.rundir.lock import FolderLock, check_out

from conftest import ROOT

TINY = str(ROOT / "configs" / "tiny-grpo.yaml")
ROWS = [{"question": f"{i}+{i}=", "answer": str(2 * i)} for i in range(30)]


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(buf, format="PNG")
    return buf.getvalue()


def model_folder(path, *, vocab=None, context=64, nan=False, template=None):
    """A micro Qwen2 folder with the embedded default's character tokenizer (a real, loadable folder);
    `vocab`: config.json's vocab_size written over (the weights keep the tokenizer's rows),
    `nan`: every weight NaN, `template`: a chat template."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=32, max_position_embeddings=context)
    model = Qwen2ForCausalLM(cfg)
    if nan:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    model.save_pretrained(path)
    if template is not None:
        tok.chat_template = template
    tok.save_pretrained(path)
    if vocab is not None:
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "vocab_size": vocab}))
    return path


def encoder_folder(path):
    """A micro DistilBERT (an encoder: loadable, but it cannot generate) with the character tokenizer."""
    from transformers import DistilBertConfig, DistilBertModel

    tok = build_tokenizer()
    DistilBertModel(DistilBertConfig(vocab_size=len(tok), dim=16, n_layers=1, n_heads=2, hidden_dim=32,
                                     max_position_embeddings=64)).save_pretrained(path)
    tok.save_pretrained(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every file the cases point at, built once."""
    w = tmp_path_factory.mktemp("world")
    files = {
        "bytes.yaml": b"seed: 0\nmethod: \xff\xfe\n",
        "dup.yaml": b"seed: 0\ntrain:\n  steps: 10\n  steps: 20\n",
        "empty.yaml": b"# nothing but a comment\n",
        "list.yaml": b"- seed: 0\n",
        "broken.yaml": b"train: {steps: 10\n",
        "data/nonutf8.jsonl": jsonl(ROWS[:4]) + b'{"question": "\xff", "answer": "1"}\n',
        "data/badjson.jsonl": jsonl(ROWS[:2]) + b"{question: 1}\n",
        "data/array.jsonl": jsonl(ROWS[:2]) + b"[1, 2]\n",
        "data/nocol.jsonl": jsonl(ROWS[:5] + [{"question": "q"}]),
        "data/noanswer.jsonl": jsonl(ROWS[:3] + [{"question": "q", "answer": ""}]),
        "data/contradict.jsonl": jsonl(ROWS[:6] + [{"question": "3+3=", "answer": "7"}]),
        "data/long.jsonl": jsonl(ROWS + [{"question": "1+" * 100 + "1=", "answer": "101"}]),
        "data/blank.jsonl": b"\n\n",
        "data/small.jsonl": jsonl(ROWS[:5]),
        "data/ok.jsonl": jsonl(ROWS),
        "data/badpool.jsonl": jsonl([{"question": "1+1=", "completion": "2"}] * 2 + [{"question": "3+3="}]),
        "data/img/ok.png": png(),
        "data/img/bad.png": b"not a png\n",
        "data/noimage.jsonl": jsonl([{**r, "image": "img/ok.png"} for r in ROWS[:3]]
                                    + [{**ROWS[3], "image": "img/missing.png"}]),
        "data/badimage.jsonl": jsonl([{**r, "image": "img/ok.png"} for r in ROWS[:2]] + [{**ROWS[2], "image": "img/bad.png"}]),
        "data/badbase64.jsonl": jsonl([{**ROWS[0], "image": "data:image/png;base64,bm90IGFuIGltYWdl"}]),
        "data/mixed.jsonl": jsonl([{**r, "image": "img/ok.png"} for r in ROWS[:4]] + ROWS[4:6]),
        # issue 27: values no verifier can match, rows JSON reads wrongly, configs that expand or nest
        "data/objquestion.jsonl": jsonl(ROWS[:3] + [{"question": {"text": "9+9="}, "answer": "18"}]),
        "data/listanswer.jsonl": jsonl(ROWS[:2] + [{"question": "0+0=", "answer": ["0"]}]),
        "data/nananswer.jsonl": jsonl(ROWS[:2]) + b'{"question": "0+0=", "answer": NaN}\n',
        "data/boolanswer.jsonl": jsonl(ROWS[:2] + [{"question": "0+0=", "answer": True}]),
        "data/dupkey.jsonl": jsonl(ROWS[:2]) + b'{"question": "5+5=", "answer": "10", "answer": "11"}\n',
        "data/blanklines.jsonl": jsonl(ROWS[:2]) + b"\n\n" + jsonl([{"question": "q"}]),
        "data/noverify.jsonl": jsonl(ROWS[:20] + [{"question": "x=", "answer": "\\frac{1}{"},
                                                  {"question": "y=", "answer": "}{"}]),  # LaTeX no parser reads
        "bomb.yaml": ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcde", "bcdef"))
                      + "train: {grpo: {generation_kwargs: {bad_words_ids: *f}}}\n").encode(),
        "complexkey.yaml": b"? [a, b]\n: 1\n",
        "deep.yaml": b"seed: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        "a_file": b"not a folder\n",
        "nonempty/keep.txt": b"mine\n",
        "run/config.yaml": yaml.safe_dump({"seed": 0}).encode(),  # a run folder without checkpoints
        "run/signal/step-5.json": b"{}\n",
        "model-noconfig/weights.bin": b"x",
    }
    for name, content in files.items():
        (w / name).parent.mkdir(parents=True, exist_ok=True)
        (w / name).write_bytes(content)
    good = model_folder(w / "model")
    model_folder(w / "model-bigtok", vocab=50)
    for name in ("model-badconfig", "model-unknowntype", "model-truncated", "model-noweights", "model-notok",
                 "model-shards"):
        (w / name).mkdir()
        for f in good.iterdir():
            (w / name / f.name).write_bytes(f.read_bytes())
    (w / "model-badconfig" / "config.json").write_text('{"model_type": "qwen2",')
    (w / "model-unknowntype" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    weights = (w / "model-truncated" / "model.safetensors").read_bytes()
    (w / "model-truncated" / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    (w / "model-noweights" / "model.safetensors").unlink()
    for f in (w / "model-notok").glob("*token*"):
        f.unlink()
    (w / "model-shards" / "model.safetensors").unlink()
    encoder_folder(w / "model-encoder")
    model_folder(w / "model-vocab", vocab=len(build_tokenizer()) + 10)
    model_folder(w / "model-nan", nan=True)
    model_folder(w / "model-template", template="{% for m in messages %}{{ m['content'] }")
    (w / "model-shards" / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    return w


def T(*sets):
    """`npo train` on the tiny config with --set overrides (the out folder is added by the test)."""
    return ["train", TINY, *[x for s in sets for x in ("--set", s)]]


def J(name):
    return f"task.spec=jsonl:{{w}}/data/{name}"


CASES = {
    # config files
    "config_missing": (["train", "{w}/nope.yaml"], "nope.yaml: no such config file"),
    "config_is_folder": (["train", "{w}/data"], "data: no such config file"),
    "config_not_utf8": (["train", "{w}/bytes.yaml"], "bytes.yaml: line 2: not UTF-8"),
    "config_duplicate_key": (["train", "{w}/dup.yaml"], "dup.yaml: line 4: key 'steps' given twice (first on line 3)"),
    "config_empty": (["train", "{w}/empty.yaml"], "empty.yaml: empty (write {} to run on every default)"),
    "config_not_mapping": (["train", "{w}/list.yaml"], "list.yaml: expected a mapping of config sections"),
    "config_not_yaml": (["train", "{w}/broken.yaml"], "broken.yaml: line 2: not valid YAML"),
    "unknown_section": (T("trian.steps=1"), "trian: unknown field"),
    "unknown_field": (T("train.nonsense=1"), "train.nonsense: unknown field"),
    "mistyped_field": (T("eval.sample=3"), "eval.sample: unknown field"),
    "not_an_integer": (T("train.steps=many"), "train.steps: expected an integer, got 'many'"),
    "bool_for_int": (T("train.steps=true"), "train.steps: expected an integer"),
    "zero_steps": (T("train.steps=0"), "train.steps: must be > 0"),
    "tau_above_one": (T("npo.tau=1.5"), "npo.tau: must be in (0, 1]"),
    "unknown_method": (T("method=ppo"), "method: expected one of grpo, npo, autonpo"),
    "section_not_mapping": (T("train=5"), "train: expected a mapping"),
    "set_without_value": (["train", TINY, "--set", "train.steps"], "--set train.steps: expected key=value"),
    "set_empty_key": (["train", TINY, "--set", "=3"], "--set =3: empty key"),
    "set_into_scalar": (T("seed.x=1"), "--set seed.x: seed is not a mapping"),
    # values TRL and transformers refuse
    "grpo_unknown_field": (T("train.grpo.temperatur=1.0"), "train.grpo.temperatur: not a field of trl.GRPOConfig"),
    "grpo_owned_field": (T("train.grpo.output_dir=x"), "train.grpo.output_dir: set by npo"),
    "grpo_one_generation": (T("train.grpo.num_generations=1"), "train.grpo: GRPO requires at least 2 generations"),
    "grpo_report_to_missing": (T("train.grpo.report_to=wandb"), "train.grpo.report_to: WandbCallback requires wandb"),
    "grpo_optim_missing": (T("train.grpo.optim=adamw_bnb_8bit"), "train.grpo.optim: You need to install `bitsandbytes`"),
    "grpo_vllm_missing": (T("train.grpo.use_vllm=true"), "train.grpo.use_vllm: vLLM is not installed"),
    "grpo_loss_type": (T("train.grpo.loss_type=foo"), "train.grpo.loss_type: expected one of grpo, dr_grpo, dapo"),
    "grpo_zero_temperature": (T("train.grpo.temperature=0"), "train.grpo.temperature: must be > 0"),
    "grpo_zero_completion": (T("train.grpo.max_completion_length=0"), "train.grpo.max_completion_length: must be >= 1"),
    "grpo_negative_top_k": (T("train.grpo.top_k=-5"), "train.grpo.top_k: must be >= 0"),
    "grpo_zero_iterations": (T("train.grpo.num_iterations=0"), "train.grpo.num_iterations: must be >= 1"),
    "grpo_sampling_level": (T("train.grpo.importance_sampling_level=foo"),
                            "train.grpo.importance_sampling_level: expected token or sequence"),
    "grpo_missing_deepspeed": (T("train.grpo.deepspeed=/nonexistent.json"), "train.grpo"),  # the file, or DeepSpeed
    "grpo_batch_split": (T("train.grpo.generation_batch_size=7"),
                         "train.grpo.generation_batch_size: 7 is not a multiple of the 128 completions"),
    "grpo_generation_twice": (T("train.grpo.generation_batch_size=256", "train.grpo.steps_per_generation=2"),
                              "train.grpo: generation_batch_size and steps_per_generation are one setting"),
    "micro_batch_split": (T("train.grpo.per_device_train_batch_size=48"),
                          "train.grpo.per_device_train_batch_size: 16 prompts x 8 samples per step"),
    "micro_batch_contradiction": (T("train.grpo.per_device_train_batch_size=32",
                                    "train.grpo.gradient_accumulation_steps=2"),
                                  "is 64 completions per optimizer step, but train.prompts_per_step x n is 16 x 8 = 128"),
    "accumulation_split": (T("train.grpo.gradient_accumulation_steps=3"),
                           "train.prompts_per_step: 16 prompts x 8 samples do not split into 1 processes x 3"),
    "accumulation_zero": (T("train.grpo.gradient_accumulation_steps=0"),
                          "train.grpo.gradient_accumulation_steps: must be >= 1, got 0"),
    "accumulation_type": (T("train.grpo.gradient_accumulation_steps=2.5"),
                          "train.grpo.gradient_accumulation_steps: expected an integer, got 2.5"),
    "generation_mid_step": (T("train.grpo.gradient_accumulation_steps=4", "train.grpo.steps_per_generation=2"),
                            "train.grpo.steps_per_generation: 2 micro-batches per generation batch"),
    "precision_contradiction": (T("model.dtype=bf16", "train.grpo.bf16=false"),
                                "model.dtype: bf16 trains with TRL's bf16 mixed precision, and train.grpo.bf16 is false"),
    "precision_both": (T("train.grpo.bf16=true", "train.grpo.fp16=true"), "train.grpo: bf16 and fp16 are both true"),
    "fp16_on_cpu": (T("model.dtype=fp16"), "model.dtype: fp16 mixed precision needs a GPU"),
    "precision_unknown": (T("model.dtype=fp8"), "model.dtype: expected one of auto, fp32, bf16, fp16"),
    "fsdp_on_cpu": (T("train.grpo.fsdp=full_shard"), "FSDP needs GPUs (on CPU accelerate runs it as plain DDP"),
    "score_memory_zero": (T("model.score_memory_mb=0"), "model.score_memory_mb: must be > 0"),
    "tiny_heads": (T("model.tiny.hidden_size=130"), "model.tiny.hidden_size: must be divisible"),
    "eval_n_past_split": (T("eval.n=900"), "eval.n: 900 > task.eval_size (500): set eval.n to at most 500"),
    "completion_past_context": (T("eval.max_new_tokens=400"),
                                "model.tiny.max_position_embeddings: a context of 128 tokens cannot hold"),
    "lookahead_past_end": (T("method=npo", "npo.interventions=[{kind: plateau, at_step: 590, lookahead: 40}]"),
                           "npo.interventions[0]: at_step + max(lookahead, window) = 630 exceeds train.steps"),
    "self_window_past_end": (T("method=npo", "npo.source=self", "npo.interventions=[{kind: plateau, at_step: 590, "
                               "lookahead: 5, window: 20}]"), "npo.interventions[0]: at_step + window = 610"),
    "npo_without_interventions": (T("method=npo"), "npo.interventions: method npo needs"),
    "grpo_with_interventions": (T("npo.interventions=[{kind: bootstrap, lookahead: 20}]"),
                                "npo.interventions: only method npo intervenes"),
    "replace_slot": (T("npo.replace_slot=8"), "npo.replace_slot: must be in -8..7"),
    "autonpo_deltas": (T("method=autonpo", "autonpo.deltas=[30]"), "autonpo.deltas: must be multiples"),
    "chunk_boundary": (T("train.grpo.steps_per_generation=3"), "train.checkpoint_every: must be a multiple of 3"),
    "on_demand_near_future": (T("npo.guide_mode=on_demand"), "npo.guide_mode: near-future guides are made ahead"),
    "verifier_timeout": (T("task.verifier_timeout=0"), "task.verifier_timeout: must be in (0, 86400]"),
    "failed_share": (T("task.max_failed_share=2"), "task.max_failed_share: must be in [0, 1]"),
    # model folders
    "model_missing": (T("model.path={w}/no-model"), "model.path: no such model folder"),
    "model_no_config": (T("model.path={w}/model-noconfig"), "is not a Hugging Face model folder (no config.json)"),
    "model_corrupt_config": (T("model.path={w}/model-badconfig"), "model-badconfig/config.json: not valid JSON"),
    "model_unknown_type": (T("model.path={w}/model-unknowntype"), "config.json: transformers cannot read it"),
    "model_truncated": (T("model.path={w}/model-truncated"), "model.safetensors: "),
    "model_no_weights": (T("model.path={w}/model-noweights"), "model-noweights has no weights"),
    "model_missing_shard": (T("model.path={w}/model-shards"), "model-00001-of-00002.safetensors: missing"),
    "model_no_tokenizer": (T("model.path={w}/model-notok"), "model-notok has no tokenizer"),
    "model_tokenizer_too_big": (T("model.path={w}/model-bigtok"), "but the model's embedding only 50 rows"),
    "row_past_context": (T("model.path={w}/model", J("long.jsonl"), "task.options={}", "task.eval_size=4", "eval.n=4"),
                         "model.path {w}/model: a context of 64 tokens cannot hold jsonl:{w}/data/long.jsonl row 31"),
    # data files and tasks
    "task_unknown": (T("task.spec=nosuchtask"), "task.spec: unknown task 'nosuchtask'"),
    "task_arith_option": (T("task.options={size: 3}"), "task.options.size: unknown option for arith"),
    "task_rg_unknown": (T("task.spec=rg:no_such_dataset", "task.options={}"), "unknown reasoning-gym dataset"),
    "task_rg_options": (T("task.spec=rg:chain_sum", "task.options={nonsense: 1}"), "task.options: reasoning-gym"),
    "data_missing": (T(J("nope.jsonl"), "task.options={}"), "nope.jsonl: no such dataset file"),
    "data_not_utf8": (T(J("nonutf8.jsonl"), "task.options={}"), "nonutf8.jsonl: row 5: not UTF-8"),
    "data_bad_json": (T(J("badjson.jsonl"), "task.options={}"), "badjson.jsonl: row 3: not valid JSON"),
    "data_not_object": (T(J("array.jsonl"), "task.options={}"), "array.jsonl: row 3: expected a JSON object"),
    "data_missing_column": (T(J("nocol.jsonl"), "task.options={}"), "nocol.jsonl: row 6: missing column 'answer'"),
    "data_empty_answer": (T(J("noanswer.jsonl"), "task.options={}"), "noanswer.jsonl: row 4: empty answer"),
    "data_contradiction": (T(J("contradict.jsonl"), "task.options={}"),
                           "contradict.jsonl: rows 4 and 7: the same question with different answers ('6', '7')"),
    "data_no_rows": (T(J("blank.jsonl"), "task.options={}"), "blank.jsonl: no rows"),
    "image_missing": (T(J("noimage.jsonl"), "task.options={}"),
                      "noimage.jsonl: row 4: column 'image': no such image file 'img/missing.png'"),
    "image_unreadable": (T(J("badimage.jsonl"), "task.options={}"),
                         "badimage.jsonl: row 3: column 'image': unreadable image (UnidentifiedImageError)"),
    "image_bad_base64": (T(J("badbase64.jsonl"), "task.options={}"), "badbase64.jsonl: row 1: column 'image': unreadable"),
    "image_mixed_rows": (T(J("mixed.jsonl"), "task.options={}"),
                         "mixed.jsonl: rows 1 and 5: one has an image (column 'image') and the other not"),
    "image_task_text_model": (T("task.spec=vis-arith"), "model.path: tiny cannot train on vis-arith (image prompts); "
                                                        "use tiny-vl"),
    "text_task_vision_model": (T("model.path=tiny-vl"), "model.path: tiny-vl cannot train on arith (text prompts)"),
    "vis_arith_too_long": (T("task.spec=vis-arith", "task.options={terms: 3, digits: 3}"),
                           "task.options: 3 terms of 3 digits (11 characters) do not fit a 48-pixel image"),
    "data_eval_too_big": (T(J("small.jsonl"), "task.options={}"), "task.eval_size: 500 > the 5 rows of"),
    "data_too_few_prompts": (T(J("small.jsonl"), "task.options={}", "task.eval_size=2", "eval.n=2"),
                             "train.prompts_per_step: 16 > the 3 training items"),
    "data_options": (T(J("ok.jsonl")), "task.options: jsonl tasks take no options"),
    "data_wrong_key": (T(J("ok.jsonl"), "task.options={}", "task.answer_key=solution"), "missing column 'solution'"),
    # issue 27: data that could never verify, read as written
    "data_object_question": (T(J("objquestion.jsonl"), "task.options={}"),
                             "objquestion.jsonl: row 4: column 'question': expected a string or a number, got dict"),
    "data_list_answer": (T(J("listanswer.jsonl"), "task.options={}"),
                         "listanswer.jsonl: row 3: column 'answer': expected a string or a number, got list ['0']"),
    "data_nan_answer": (T(J("nananswer.jsonl"), "task.options={}"), "row 3: column 'answer': expected a string or a "
                                                                    "number, got float nan"),
    "data_bool_answer": (T(J("boolanswer.jsonl"), "task.options={}"), "row 3: column 'answer': expected a string or a "
                                                                      "number, got bool True"),
    "data_duplicate_key": (T(J("dupkey.jsonl"), "task.options={}"), "dupkey.jsonl: row 3: key 'answer' given twice"),
    "data_row_after_blank_lines": (T(J("blanklines.jsonl"), "task.options={}"),
                                   "blanklines.jsonl: row 5: missing column 'answer'"),
    "data_reference_cannot_verify": (T(J("noverify.jsonl"), "task.options={}", "task.eval_size=4", "eval.n=4"),
                                     "noverify.jsonl: rows 21, 22: the reference answer cannot verify"),
    # issue 27: values that would pass a range check by comparing false (NaN), overflow, or crash in TRL later
    "nan_learning_rate": (T("train.grpo.learning_rate=.nan"), "train.grpo.learning_rate: expected a finite number"),
    "nan_max_grad_norm": (T("train.grpo.max_grad_norm=.nan"), "train.grpo.max_grad_norm: expected a finite number"),
    "inf_tau": (T("npo.tau=.inf"), "npo.tau: expected a finite number, got inf"),
    "negative_learning_rate": (T("train.grpo.learning_rate=-1e-4"), "train.grpo.learning_rate: must be >= 0"),
    "zero_repetition_penalty": (T("train.grpo.repetition_penalty=0"), "train.grpo.repetition_penalty: must be > 0"),
    "top_p_zero": (T("train.grpo.top_p=0"), "train.grpo.top_p: must be in (0, 1]"),
    "reward_weights_length": (T("train.grpo.reward_weights=[1.0, 2.0]"),
                              "train.grpo.reward_weights: 2 weights for 1 reward function"),
    "reward_weights_nan": (T("train.grpo.reward_weights=[.nan]"), "train.grpo.reward_weights[0]: expected a finite"),
    "scale_rewards": (T("train.grpo.scale_rewards=sometimes"),
                      "train.grpo.scale_rewards: expected one of true, false, group, batch, none, got 'sometimes'"),
    "seed_past_32_bits": (T("seed=4294967296"), "seed: 4294967296 is out of range (at most 4294967295 in size)"),
    "negative_seed": (T("seed=-1"), "seed: must be in [0, 4294967295]"),
    "verifier_timeout_huge": (T("task.verifier_timeout=1e10"), "task.verifier_timeout: must be in (0, 86400]"),
    "eval_size_huge": (T("task.eval_size=1000000000"), "task.eval_size: must be in [1, 1000000]"),
    "arith_terms_huge": (T("task.options={terms: 10000}"), "task.options.terms: expected an integer in 1..50"),
    "accumulation_negative": (T("train.grpo.gradient_accumulation_steps=-1"),
                              "train.grpo.gradient_accumulation_steps: must be >= 1, got -1"),
    "generation_kwargs_length": (T("train.grpo.generation_kwargs={max_new_tokens: 400}"),
                                 "train.grpo.generation_kwargs.max_new_tokens: overrides train.grpo.max_completion_length"),
    "generation_kwargs_sampling": (T("train.grpo.generation_kwargs={top_p: 0.5}"),
                                   "train.grpo.generation_kwargs.top_p: overrides train.grpo.top_p"),
    "generation_kwargs_not_mapping": (T("train.grpo.generation_kwargs=5"), "train.grpo.generation_kwargs: expected a "
                                                                            "mapping"),
    "chat_template_kwargs_list": (T("train.grpo.chat_template_kwargs=[1]"),
                                  "train.grpo.chat_template_kwargs: expected a mapping or a string, got [1]"),
    "lora_nan_rank": (T("model.lora={r: .nan}"), "model.lora.r: expected an integer, got nan"),
    "lora_zero_rank": (T("model.lora={r: 0}"), "model.lora.r: must be >= 1, got 0"),
    "lora_bias": (T("model.lora={bias: some}"), "model.lora.bias: expected 'none' or 'all' or 'lora_only', got 'some'"),
    "config_alias_bomb": (["train", "{w}/bomb.yaml"], "bomb.yaml: expands to more than 100,000 values"),
    "config_complex_key": (["train", "{w}/complexkey.yaml"], "complexkey.yaml: line 1: a key must be a plain value"),
    "config_deep": (["train", "{w}/deep.yaml"], "deep.yaml: nested deeper than Python's parser can follow"),
    "set_duplicate_key": (T("train.grpo={a: 1, a: 2}"), "--set train.grpo={a: 1, a: 2}: line 1: key 'a' given twice"),
    # issue 27: model folders that load but cannot train
    "model_encoder": (T("model.path={w}/model-encoder"), "a 'distilbert' model is not a causal language model"),
    "model_vocab_disagrees": (T("model.path={w}/model-vocab"), "config.json says vocab_size"),
    "model_nan_weights": (T("model.path={w}/model-nan"), "holds NaN or infinite values"),
    "model_broken_template": (T("model.path={w}/model-template"), "its chat template does not render a prompt"),
    # output folders
    "out_is_file": (T() + ["--out", "{w}/a_file"], "--out {w}/a_file: exists and is not a folder"),
    "out_under_file": (T() + ["--out", "{w}/a_file/run"], "cannot be created: {w}/a_file is a file"),
    "out_not_empty": (T() + ["--out", "{w}/nonempty"], "--out {w}/nonempty: already exists and is not empty"),
    "out_in_proc": (T() + ["--out", "/proc/npo-run"], "--out /proc/npo-run: cannot be created"),  # root passes os.access
    # misuse of every command
    "no_command": ([], "npo: the following arguments are required: command"),
    "unknown_command": (["fly"], "invalid choice: 'fly'"),
    "train_nothing": (["train"], "train: give a CONFIG, or --resume RUN"),
    "train_resume_and_config": (["train", TINY, "--resume", "{w}/run"], "train --resume RUN: takes no config"),
    "train_resume_not_run": (["train", "--resume", "{w}/nonempty"], "not a run folder (no config.yaml)"),
    "eval_bad_flag": (["eval", "tiny", "--n", "many"], "argument --n: invalid int value: 'many'"),
    "eval_no_model": (["eval", "{w}/no-model"], "no-model"),
    "eval_step_not_run": (["eval", "tiny", "--step", "3"], "--step: only for a run directory"),
    "eval_no_checkpoint": (["eval", "{w}/run"], "run has no checkpoint yet"),
    "eval_small_file": (["eval", "tiny", "--task", "jsonl:{w}/data/small.jsonl"],
                        "eval.n: 300 > the 5 held-out items of jsonl:{w}/data/small.jsonl (use --n 5 or fewer)"),
    "eval_dump_exists": (["eval", "tiny", "--dump", "{w}/a_file"], "--dump {w}/a_file: exists"),
    "eval_dump_no_folder": (["eval", "tiny", "--dump", "{w}/nowhere/d.jsonl"], "its folder does not exist"),
    "eval_zero_n": (["eval", "tiny", "--n", "0"], "--n 0: expected an integer >= 1"),
    "signal_no_step": (["signal", "{w}/run"], "the following arguments are required: --step"),
    "signal_deltas": (["signal", "{w}/run", "--step", "5", "--deltas", "5,x"], "--deltas 5,x: expected comma-separated"),
    "signal_k": (["signal", "{w}/run", "--step", "5", "--k", "0"], "--k and --prompts must be >= 1"),
    "signal_source": (["signal", "{w}/run", "--step", "5", "--source", "oracle"],
                      "--source oracle: expected near_future, self, replay"),
    "signal_tau": (["signal", "{w}/run", "--step", "5", "--tau", "2"], "--tau 2.0: must be in (0, 1]"),
    # guide sources and the baselines (issue 15)
    "source_unknown": (T("npo.source=oracle"), "npo.source: expected near_future, self, replay"),
    "rlep_without_pool": (T("method=rlep"), "npo.source: method rlep replays a pool of verified successes"),
    "luffy_near_future": (T("method=luffy", "npo.source=near_future"), "npo.inject_when: near_future guides"),
    "teacher_missing": (T("method=luffy", "npo.source=teacher:{w}/nope.jsonl"), "teacher:{w}/nope.jsonl: no such file"),
    "pool_bad_row": (T("method=rlep", "npo.source=pool:{w}/data/badpool.jsonl"),
                     "badpool.jsonl: row 3: expected {\"question\": str, \"completion\": str}"),
    "checkpoint_not_model": (T("method=luffy", "npo.source=checkpoint:{w}/model-noconfig"), "model-noconfig"),
    "pool_out_exists": (["pool", "{w}/run", "--out", "{w}/a_file"], "--out {w}/a_file: exists"),
    "pool_no_checkpoint": (["pool", "{w}/run", "--out", "{w}/new.jsonl"], "run: no complete checkpoint"),
    "pool_k": (["pool", "{w}/run", "--k", "0", "--out", "{w}/new.jsonl"], "--k must be >= 1"),
    "compare_pool_missing": (["compare", "rlep", "--pool", "{w}/nope.jsonl", "--out", "{w}/cmp"],
                             "pool:{w}/nope.jsonl: no such file"),
    "signal_exists": (["signal", "{w}/run", "--step", "5"], "step-5.json: exists (an earlier npo signal at this step)"),
    "compare_names": (["compare", f"a={TINY}", f"a={TINY}"], f"compare: config 'a={TINY}': empty or repeated name"),
    "compare_seeds": (["compare", TINY, "--seeds", "0", "--out", "{w}/cmp"], "--seeds: must be >= 1"),
    "compare_bad_config": (["compare", TINY, "{w}/dup.yaml", "--out", "{w}/cmp"], "dup.yaml: line 4: key 'steps'"),
    "demo_bad_set": (["demo", "--set", "train.steps=x", "--out", "{w}/dm"], "train.steps: expected an integer"),
    "warmup_folder": (["warmup", "--set", "model.path={w}/model"], "model.path: warmup applies to the embedded"),
    "import_bad_flag": (["import-smollm2"], "the following arguments are required: out"),
    "import_onto_file": (["import-smollm2", "{w}/a_file"], "import-smollm2 {w}/a_file: exists and is not a folder"),
    "import_not_empty": (["import-smollm2", "{w}/nonempty"], "nonempty: already exists and is not empty"),
}


def snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_in_one_line_with_nothing_written(case, world, tmp_path, monkeypatch, capsys):
    argv, expect = CASES[case]
    argv = [a.replace("{w}", str(world)) for a in argv]
    if argv[:1] == ["train"] and "--out" not in argv and "--resume" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    monkeypatch.chdir(tmp_path)  # default output folders (runs/...) would land here
    monkeypatch.setenv("NPO_CACHE", str(tmp_path / "cache"))  # no warm start is built either
    before = snapshot(world)
    code = main(argv + ["--quiet"] if argv[:1] in (["train"], ["compare"], ["demo"], ["pool"]) else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("npo: error:") and "Traceback" not in err, err
    assert expect.replace("{w}", str(world)) in err, err
    assert snapshot(world) == before and os.listdir(tmp_path) == []


def test_a_second_run_into_a_held_folder_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    held = FolderLock(out).acquire()  # another run holds it (a flock per open file: this process counts)
    try:
        code = main(["train", TINY, "--out", str(out), "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert f"--out {out}: in use by another run (pid {os.getpid()} on " in err
        assert os.listdir(out) == [".npo.lock"]
    finally:
        held.release()


CHECK_NEW_FOLDERS = """
import sys, time
from pathlib import Path
from npo.rundir.lock import check_out
base, start = Path(sys.argv[1]), float(sys.argv[2])
while time.time() < start:
    pass
for i in range(200):
    check_out(base / str(i) / "run", write_test=False)
"""


def test_a_launchs_other_processes_check_a_new_folder_without_writing(tmp_path):
    """`prepare` under a launch: the main process tries the folder first; the others, all at once, only
    look (two processes making and removing the same new folder failed each other: CI, "File exists")."""
    start = str(time.time() + 1.5)  # both processes past their imports, then checking the same folders at once
    procs = [subprocess.Popen([sys.executable, "-c", CHECK_NEW_FOLDERS, str(tmp_path), start],
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert os.listdir(tmp_path) == []  # nothing made
    with pytest.raises(UserError, match="is a file, not a folder"):  # and still the checks that read
        (tmp_path / "file").write_text("")
        check_out(tmp_path / "file" / "run", write_test=False)


def refused(argv, capsys) -> str:
    code = main(argv + ["--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_run_folder_files_are_never_written_through_a_link(tmp_path, capsys):
    """On a shared runs folder another user can plant links: a `.npo.lock` link to your file, a dangling
    link as --out, a folder where the lock goes. Each is refused in one line and nothing is followed."""
    victim = tmp_path / "yours.txt"
    victim.write_text("keep me\n")
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / ".npo.lock").symlink_to(victim)
    err = refused(["train", TINY, "--out", str(planted)], capsys)
    assert "cannot take its lock .npo.lock: a symbolic link (npo does not follow it)" in err
    assert victim.read_text() == "keep me\n" and os.listdir(planted) == [".npo.lock"]

    folder_lock = tmp_path / "folder-lock"
    (folder_lock / ".npo.lock").mkdir(parents=True)
    assert "cannot take its lock .npo.lock: Is a directory" in refused(["train", TINY, "--out", str(folder_lock)], capsys)

    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert "a symbolic link to nothing" in refused(["train", TINY, "--out", str(dangling)], capsys)
    assert not (tmp_path / "nowhere").exists()


def test_appends_to_a_run_log_never_follow_a_link(tmp_path):
    from npo.rundir.layout import append_jsonl

    victim = tmp_path / "yours.txt"
    victim.write_text("keep me\n")
    (tmp_path / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(OSError):
        append_jsonl(tmp_path / "metrics.jsonl", {"step": 1})
    assert victim.read_text() == "keep me\n"


def test_a_yaml_merge_key_merges(tmp_path):
    from npo.config.run import load_config

    path = tmp_path / "merge.yaml"
    path.write_text("base: &base {steps: 7, prompts_per_step: 8}\ntrain:\n  <<: *base\n  steps: 9\n")
    with pytest.raises(Exception, match="base: unknown field"):  # merged as YAML says; the key itself is checked
        load_config(path)
    path.write_text("train:\n  <<: {steps: 7, prompts_per_step: 8}\n  steps: 9\n")
    cfg = load_config(path)
    assert (cfg.train.steps, cfg.train.prompts_per_step) == (9, 8)


def test_a_full_disk_is_named_wherever_it_surfaces():
    """A write refused by the disk, a file-size limit or a quota, as OSError or wrapped by safetensors or
    torch in their own errors: `npo` says it in one line (exit 1), anything else keeps its traceback."""
    import errno

    from npo.cli.main import disk_failure

    assert disk_failure(OSError(errno.ENOSPC, "No space left on device", "ckpt/model.safetensors")) == \
        "No space left on device: ckpt/model.safetensors"
    try:
        try:
            raise OSError(errno.EFBIG, "File too large")
        except OSError as inner:
            raise RuntimeError("SafetensorError: I/O error") from inner
    except RuntimeError as wrapped:
        assert disk_failure(wrapped) == "File too large"
    assert disk_failure(Exception("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                                  "\"No space left on device\" })")) == "No space left on device"
    assert disk_failure(ValueError("a bug")) is None


def test_a_damaged_journal_or_marker_is_one_line(tmp_path, capsys):
    from npo.config.run import dump_yaml, load_config, resolved
    from npo.rundir.layout import checkpoint_state

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_yaml(resolved(load_config(TINY))))
    for damage in ({"format": 1}, [1, 2], {"format": 1, "npo_version": "x"}):
        (run / "run_state.json").write_text(json.dumps(damage))
        err = refused(["train", "--resume", str(run)], capsys)
        assert "run_state.json: not a resumable run state" in err or "written by npo x" in err, err
    marker = tmp_path / "checkpoint-5"
    marker.mkdir()
    for text in ("[]", '{"files": 3}', '{"files": {"a": 1}}', '{"files": {}, "books": []}', "{"):
        (marker / "npo_state.json").write_text(text)
        assert checkpoint_state(marker) is None
