"""The embedded default: a ~1M-parameter Qwen2 causal LM with a character-level tokenizer (and the
warm start of its vision-language sibling `tiny-vl`, `npo.models.tiny_vl`).

Built from a config (no weights are downloaded), saved and loaded as a normal Hugging Face folder
(`AutoModelForCausalLM` / `AutoTokenizer`). `warmup` gives it a short supervised warm start on a
task's training split, to a *weak* base that leaves RL room to climb; the result is cached under
`$NPO_CACHE` (default `~/.cache/npo`) keyed by everything that determines it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from npo.config.run import TaskConfig, TinyModelConfig, WarmupConfig

SPECIALS = ["<pad>", "<bos>", "<eos>"]
CHARS = ["\n"] + [chr(c) for c in range(32, 127)]  # newline + printable ASCII
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
UNMAPPED = "[^\n -~]"  # a character of none of CHARS: the tokenizer writes it as "?"


def unmapped(text: str) -> list[str]:
    """The characters of `text` the tiny tokenizer maps (accented letters lose the accent; others become ?)."""
    return sorted({c for c in text if not (c == "\n" or " " <= c <= "~")})


def build_tokenizer(vocab_size: int = 0):
    """Character-level tokenizer: one token per printable ASCII character and newline. Other text is
    mapped explicitly (`npo.models.check` warns before a run): accents are dropped (é -> e, by NFKD),
    and what is still not ASCII becomes `?`. Never `<pad>`: the policy would read padding.
    `vocab_size`: filler tokens up to that size (text never encodes to them; a model samples them)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = SPECIALS + CHARS
    vocab = {tok: i for i, tok in enumerate(tokens + [f"<f{i}>" for i in range(len(tokens), vocab_size)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(),
                                           normalizers.Replace(Regex(UNMAPPED), "?")])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")  # "." misses "\n"
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        unk_token="<pad>", padding_side="left",
    )


def build_model(arch: TinyModelConfig, seed: int, vocab_size: int = 0):
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=max(vocab_size, len(SPECIALS) + len(CHARS)),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=EOS_ID, pad_token_id=PAD_ID, bos_token_id=BOS_ID)
    return model


QWEN_VOCAB = 151_936  # Qwen2's and Qwen3's vocabulary


def real_vocab_folder(folder: Path, arch: TinyModelConfig, vocab_size: int = QWEN_VOCAB, seed: int = 0) -> Path:
    """A model folder built from a config with a real vocabulary (the tiny tokenizer's characters, then
    fillers) and random weights: the proxy, on CPU, of what grows with the vocabulary at 1.5B-8B
    (logits, log-softmax, the head). Not a model to learn with."""
    model, tok = build_model(arch, seed, vocab_size), build_tokenizer(vocab_size)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


def cache_root() -> Path:
    return Path(os.environ.get("NPO_CACHE", Path.home() / ".cache" / "npo"))


def warmup_key(arch: TinyModelConfig, warm: WarmupConfig, task: TaskConfig, extra: dict | None = None) -> str:
    import transformers

    blob = json.dumps({
        "arch": vars(arch), "warmup": vars(warm), "vocab": SPECIALS + CHARS,
        "task": [task.spec, task.options, task.train_size, task.eval_size, task.split_seed],
        "versions": [torch.__version__, transformers.__version__], "format": 4, **(extra or {}),
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sft_batch(tokenizer, items, max_len: int, targets: list[str] | None = None, encode=None):
    """Right-padded `question target <eos>` rows (target: the answer, or `targets[i]`); loss only on the
    target and <eos>. `encode(text)`: the tokenizer's ids of a text (a cache of them, for the warm start)."""
    encode = encode or (lambda text: tokenizer(text, add_special_tokens=False)["input_ids"])
    ids, labels = [], []
    for i, it in enumerate(items):
        q = encode(it.question)
        a = encode(targets[i] if targets else it.answer) + [EOS_ID]
        seq = (q + a)[:max_len]
        ids.append(seq)
        labels.append(([-100] * len(q) + a)[:max_len])
    width = max(len(s) for s in ids)
    input_ids = torch.full((len(ids), width), PAD_ID)
    label_t = torch.full((len(ids), width), -100)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(ids, labels)):
        input_ids[i, : len(s)] = torch.tensor(s)
        label_t[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(s)] = 1
    return input_ids, mask, label_t


@dataclass
class Recipe:
    """How an embedded model is built, batched for its supervised warm start and saved: `tiny` here,
    `tiny-vl` in npo.models.tiny_vl. `key`: what else determines its warm start (the cache key)."""

    build: Callable  # seed -> (model, tokenizer or processor)
    batch: Callable  # (tokenizer, items, max_len, targets) -> the model's inputs with labels
    save: Callable  # (model, tokenizer, folder) -> None
    key: dict = field(default_factory=dict)


def text_recipe(arch: TinyModelConfig) -> Recipe:
    known: dict[str, list[int]] = {}  # text -> ids: the warm start draws the same items again and again

    def encode(tok, text: str) -> list[int]:
        if text not in known:
            known[text] = tok(text, add_special_tokens=False)["input_ids"]
        return known[text]

    def batch(tok, items, max_len, targets):
        rows = sft_batch(tok, items, max_len, targets, encode=lambda text: encode(tok, text))
        return dict(zip(("input_ids", "attention_mask", "labels"), rows))

    def save(model, tok, folder):
        model.save_pretrained(folder)
        tok.save_pretrained(folder)

    return Recipe(lambda seed: (build_model(arch, seed), build_tokenizer()), batch, save)


def train_warmup(arch: TinyModelConfig, warm: WarmupConfig, train_items, progress=None, demonstrate=None,
                 recipe: Recipe | None = None):
    """Supervised warm start; deterministic for `warm.seed` on CPU. `demonstrate(item, rng)`: the
    target of an example when the task writes its answers in several styles (else the answer)."""
    recipe = recipe or text_recipe(arch)
    model, tokenizer = recipe.build(warm.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=warm.lr)
    # Linear warm-up, then cosine decay to `lr_floor` * lr. Bases annealed to a small lr were knocked
    # over by GRPO's first Adam steps at lr >= 2e-4 in our runs, so the floor stays high.
    warm_steps = max(1, min(50, warm.steps // 10))

    def lr_factor(s: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * s / max(1, warm.steps)))
        return min(1.0, (s + 1) / warm_steps) * (warm.lr_floor + (1 - warm.lr_floor) * cosine)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    rng, styles = random.Random(warm.seed), random.Random(warm.seed + 1)  # two streams: arith's batches unchanged
    for step in range(warm.steps):
        batch = rng.sample(train_items, min(warm.batch_size, len(train_items)))
        targets = [demonstrate(it, styles) for it in batch] if demonstrate else None
        loss = model(**recipe.batch(tokenizer, batch, arch.max_position_embeddings, targets)).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if progress is not None:
            progress(step + 1, warm.steps, loss.item())
    model.eval()
    return model, tokenizer


def warmed_up_path(arch: TinyModelConfig, warm: WarmupConfig, task_cfg: TaskConfig, train_items,
                   progress=None, demonstrate=None, recipe: Recipe | None = None) -> Path:
    """The cached warm-started model folder (`recipe`: tiny by default), built (atomically) on first use."""
    recipe = recipe or text_recipe(arch)
    root = cache_root() / "warmup"
    key = warmup_key(arch, warm, task_cfg, recipe.key)
    path = root / key
    if (path / "config.json").exists():
        return path
    root.mkdir(parents=True, exist_ok=True)
    # One builder per key: another process asking for the same warm start (a second run, a test worker)
    # waits for the first one's folder instead of spending the same minutes again.
    with open(root / f".{key}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"npo: waiting for another process building the warm start {path}", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "config.json").exists():
            build_warm_start(arch, warm, task_cfg, train_items, progress, demonstrate, recipe, path)
    return path


def build_warm_start(arch, warm, task_cfg, train_items, progress, demonstrate, recipe: Recipe, path: Path) -> None:
    """Train the warm start and write its folder at `path` atomically (a folder renamed into place)."""
    root = path.parent
    # a new cache entry is minutes of work: say so, and why (any of these differing from a cached one)
    print(f"npo: building the warm start ({warm.steps} steps) for task {task_cfg.spec} {task_cfg.options or ''} "
          f"(train_size {task_cfg.train_size}, eval_size {task_cfg.eval_size}, split_seed {task_cfg.split_seed}): "
          f"no cached one for this model, warmup and split in {root}", file=sys.stderr)
    model, tokenizer = train_warmup(arch, warm, train_items, progress, demonstrate, recipe)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".building-"))
    try:
        recipe.save(model, tokenizer, tmp)
        (tmp / "npo_warmup.json").write_text(json.dumps(
            {"arch": vars(arch), "warmup": vars(warm), "task": task_cfg.spec, "options": task_cfg.options,
             **recipe.key}, indent=2))
        os.replace(tmp, path)  # atomic
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
