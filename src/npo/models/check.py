"""A model folder checked before anything is written: config, weights complete, tokenizer present and
within the embedding, and every prompt plus its completion within the context.

Each problem is one UserError naming the field and the file. Weights are checked without loading
them: a safetensors file's header says how long the file must be (a download cut short is shorter),
and a sharded model's index says which shards must be there.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

from npo.errors import UserError
from npo.models.generation import conversations, text_tokenizer
from npo.models.tiny import build_tokenizer, unmapped
from npo.models.tiny_vl import QWEN_VL, build_processor, load_processor
from npo.tasks.images import open_image
from npo.tasks.prompting import INSTRUCTION, prompt_style

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def check_model_folder(path: str | Path, field: str = "model.path") -> Path:
    """`path` if it is a loadable Hugging Face causal-LM folder; else a UserError naming `field`."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{field}: no such model folder: {p}")
    config = p / "config.json"
    if not config.is_file():
        raise UserError(f"{field}: {p} is not a Hugging Face model folder (no config.json)")
    try:
        json.loads(config.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise UserError(f"{field}: {config}: not valid JSON{line}") from None
    _check_weights(p, field)
    if not any((p / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{field}: {p} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    return p


def _check_weights(p: Path, field: str) -> None:
    index = next((p / n for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json")
                  if (p / n).is_file()), None)
    if index is not None:
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError):
            raise UserError(f"{field}: {index}: not a weight index (no weight_map)") from None
        for shard in shards:
            _check_weight_file(p / shard, field)
    elif (p / "model.safetensors").is_file():
        _check_weight_file(p / "model.safetensors", field)
    elif (p / "pytorch_model.bin").is_file():
        _check_weight_file(p / "pytorch_model.bin", field)
    else:
        raise UserError(f"{field}: {p} has no weights (model.safetensors, pytorch_model.bin or a sharded index)")


def _check_weight_file(f: Path, field: str) -> None:
    if not f.is_file():
        raise UserError(f"{field}: {f}: missing (listed in the weight index)")
    size = f.stat().st_size
    if f.suffix == ".bin":
        if not zipfile.is_zipfile(f):
            raise UserError(f"{field}: {f}: not a complete torch checkpoint")
        return
    with f.open("rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        try:
            header = json.loads(fh.read(n)) if 0 < n <= size - 8 else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = None
    if not isinstance(header, dict):
        raise UserError(f"{field}: {f}: not a safetensors file (its header is unreadable)")
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if size != 8 + n + end:
        raise UserError(f"{field}: {f}: {size} bytes where its header says {8 + n + end} (cut short?)")


def check_chat(items, tokenizer, model: str) -> None:
    """Chat-message prompts (a dataset's `prompt` column of TRL's conversational format) need a chat
    template to become text; without one TRL stops mid-run on its first batch."""
    row = next((it for it in items if it.meta.get("messages")), None)
    if row is not None and not getattr(text_tokenizer(tokenizer), "chat_template", None):
        raise UserError(f"train_dataset: row {row.meta.get('row')}: column 'prompt' holds chat messages, and the "
                        f"tokenizer of model {model} has no chat template: give text prompts, or a model "
                        "(processing_class) with a chat template")


def check_generates(config, p: Path, vision: bool) -> None:
    """The folder holds a model GRPO can train: one transformers loads as a causal LM (a VLM: as an
    image-text-to-text model), not an encoder such as BERT, which cannot generate."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    kinds = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES if vision else MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if config.model_type not in kinds:
        raise UserError(f"model.path: {p}: a {config.model_type!r} model is not a "
                        f"{'vision-language' if vision else 'causal language'} model (transformers has no "
                        f"{'AutoModelForImageTextToText' if vision else 'AutoModelForCausalLM'} class for it): GRPO "
                        "trains a model that generates")


SAMPLED_TENSORS = 8  # tensors whose first row is read and checked finite (a few KB of any model)


def check_weight_values(p: Path, vocab: int | None) -> None:
    """What config.json and the weights must agree on, read from the safetensors headers (no weights are
    loaded): the embedding's rows are the config's vocab_size; and a sample of tensors (their first row)
    is finite: a model saved after its training diverged is all NaN."""
    from safetensors import safe_open

    files = sorted(p.glob("*.safetensors"))
    for f in files:
        with safe_open(str(f), "pt") as weights:
            names = sorted(weights.keys())
            for name in names:
                if vocab is not None and name.endswith(("embed_tokens.weight", "wte.weight", "word_embeddings.weight")):
                    rows = weights.get_slice(name).get_shape()[0]
                    if rows != vocab:
                        raise UserError(f"model.path: {p}: config.json says vocab_size {vocab}, but {f.name} holds "
                                        f"{name} with {rows} rows: the config does not describe these weights")
            step = max(1, len(names) // max(1, SAMPLED_TENSORS // len(files)))
            for name in names[::step]:
                piece = weights.get_slice(name)
                row = piece[:1] if piece.get_shape() else weights.get_tensor(name)
                if row.is_floating_point() and not row.float().isfinite().all():
                    raise UserError(f"model.path: {p}: {f.name}: {name} holds NaN or infinite values (weights saved "
                                    "from a diverged run?)")


def check_tokenizer(tokenizer, model_config, field: str = "model.path") -> None:
    """Every token id the tokenizer can produce has a row in the embedding."""
    vocab = getattr(model_config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise UserError(f"{field}: the tokenizer has {len(tokenizer)} tokens but the model's embedding only "
                        f"{vocab} rows (config.json vocab_size): a mismatched tokenizer")


def check_context(longest: tuple[str, int], completion: int, context: int | None, field: str) -> None:
    """The longest prompt (where it comes from, e.g. `jsonl:a.jsonl row 12`, and its tokens) plus
    `completion` tokens must fit the model's `context` (max_position_embeddings)."""
    where, tokens = longest
    if context is not None and tokens + completion > context:
        raise UserError(f"{field}: a context of {context} tokens cannot hold {where} ({tokens} prompt tokens) plus "
                        f"{completion} completion tokens (train.grpo.max_completion_length, eval.max_new_tokens)")


def check_model(cfg, items, completion: int) -> None:
    """The run's model (a folder, or the embedded default) against its data: config and tokenizer
    load, the tokenizer fits the embedding, the longest prompt of `items` plus `completion` tokens fits
    the context. The embedded default is checked with its tokenizer and `model.tiny` (it is built later)."""
    from transformers import AutoConfig, AutoTokenizer

    images = bool(items) and items[0].image is not None
    grpo = cfg.train.grpo
    if images and cfg.method != "grpo" and grpo.get("use_vllm") and grpo.get("vllm_mode", "colocate") == "server":
        raise UserError("train.grpo.vllm_mode: guides for image prompts are sampled through colocated vLLM only "
                        "(npo asks a vLLM server with token ids, which carry no image); use colocate")
    if cfg.model.path in ("tiny", "tiny-vl"):  # the embedded defaults (npo.models.load.EMBEDDED)
        if images != (cfg.model.path == "tiny-vl"):
            want = "tiny-vl" if images else "tiny"
            raise UserError(f"model.path: {cfg.model.path} cannot train on {cfg.task.spec} "
                            f"({'image' if images else 'text'} prompts); use {want}")
        if cfg.model.path == "tiny-vl":
            tokenizer = build_processor(cfg.model.vision)
        else:
            tokenizer = build_tokenizer()
        warn_unmapped(cfg.task.spec, items)
        context, field = cfg.model.tiny.max_position_embeddings, "model.tiny.max_position_embeddings"
    else:
        p = check_model_folder(cfg.model.path)
        try:
            config = AutoConfig.from_pretrained(p)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad config
            raise UserError(f"model.path: {p}/config.json: transformers cannot read it ({_first_line(exc)})") from None
        vision = hasattr(config, "vision_config")
        if images != vision:
            raise UserError(f"model.path: {p} is {'a vision-language' if vision else 'a text-only'} model and "
                            f"{cfg.task.spec} has {'image' if images else 'text'} prompts")
        if vision and getattr(config, "model_type", None) not in QWEN_VL:
            raise UserError(f"model.path: {p}: npo trains the Qwen-VL family ({', '.join(QWEN_VL)}), not "
                            f"{getattr(config, 'model_type', None)!r} (its image batches are sliced by image grid)")
        try:
            tokenizer = load_processor(p) if vision else AutoTokenizer.from_pretrained(p)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"model.path: {p}: the tokenizer does not load ({_first_line(exc)})") from None
        check_generates(config, p, vision)
        config = getattr(config, "text_config", config)
        check_tokenizer(text_tokenizer(tokenizer), config)
        check_weight_values(p, getattr(config, "vocab_size", None))
        context, field = getattr(config, "max_position_embeddings", None), f"model.path {p}"
    check_chat(items, tokenizer, cfg.model.path)
    try:
        where, tokens = longest_prompt(tokenizer, items, prompt_style(tokenizer))
    except Exception as exc:  # noqa: BLE001 - a chat template is code (Jinja): it may fail any way
        raise UserError(f"model.path: {cfg.model.path}: its chat template does not render a prompt "
                        f"({_first_line(exc)})") from None
    check_context((f"{cfg.task.spec} {where}", tokens), completion, context, field)


def warn_unmapped(spec: str, items) -> None:
    """One warning line when the tiny tokenizer has to map characters of the task's text (it drops
    accents and writes other non-ASCII characters as `?`): the run goes on, on the mapped text."""
    found = [(i, unmapped(it.question + it.answer)) for i, it in enumerate(items)]
    found = [(i, chars) for i, chars in found if chars]
    if found:
        i, chars = found[0]
        where = f"row {items[i].meta['row']}" if items[i].meta.get("row") is not None else f"item {i}"
        print(f"npo: warning: {len(found)} of {len(items)} prompts of {spec} have characters outside the tiny "
              f"model's ASCII vocabulary (first: {where}, {''.join(chars[:5])!r}); accents are dropped and the "
              f"rest is read as '?'", file=sys.stderr)


def longest_prompt(tokenizer, items, style: str) -> tuple[str, int]:
    """('row 12' (a data file's row) or 'item 3', its prompt tokens) for the longest prompt of `items`.
    Image prompts count their vision tokens (`image_prompt_lengths`)."""
    if items and items[0].image is not None:
        lengths = image_prompt_lengths(tokenizer, items, style)
        i = max(range(len(items)), key=lengths.__getitem__)
        row = items[i].meta.get("row")
        return (f"row {row}" if row is not None else f"item {i}"), lengths[i]
    texts = [it.question if style == "plain" else it.question + INSTRUCTION for it in items]
    overhead = 0
    if style == "chat":  # the template's own tokens around one user message, and the generation prompt
        overhead = len(chat_ids(tokenizer, [{"role": "user", "content": ""}]))
    unique = list(dict.fromkeys(texts))  # a sampled task repeats its questions (arith: 7,609 in 20,000)
    ids = tokenizer(unique, add_special_tokens=style == "plain")["input_ids"]
    length_of = {text: len(row) + overhead for text, row in zip(unique, ids)}
    lengths = [length_of[text] for text in texts]
    for i, it in enumerate(items):  # chat messages given from Python (a system message, turns): rendered as TRL will
        if style == "chat" and it.meta.get("messages"):
            lengths[i] = len(chat_ids(tokenizer, it.meta["messages"]))
    i = max(range(len(items)), key=lengths.__getitem__)
    row = items[i].meta.get("row")
    return (f"row {row}" if row is not None else f"item {i}"), lengths[i]


def chat_ids(tokenizer, messages: list) -> list[int]:
    """The token ids of `messages` rendered with the generation prompt (transformers 5 returns a
    BatchEncoding where 4.x returned the list: its len() would be 2, its keys)."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return out["input_ids"] if hasattr(out, "keys") else out


def image_prompt_lengths(processor, items, style: str) -> list[int]:
    """Prompt tokens of image prompts without processing their pixels (a data set's images would not
    fit in memory at once): the template's text with one image placeholder, plus the vision tokens
    of the image's size (Qwen-VL: its patches over merge_size^2)."""
    texts = processor.apply_chat_template(conversations(items, style), add_generation_prompt=True, tokenize=False)
    ids = text_tokenizer(processor)(texts, add_special_tokens=False)["input_ids"]
    images, per_size, out = processor.image_processor, {}, []
    for it, x in zip(items, ids):
        w, h = open_image(it.image).size
        if (h, w) not in per_size:
            per_size[(h, w)] = images.get_number_of_image_patches(h, w, {}) // images.merge_size ** 2
        out.append(len(x) - 1 + per_size[(h, w)])
    return out


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
