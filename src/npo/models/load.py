"""Resolve `model.path` to a local Hugging Face folder and load a policy from it."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from npo.models.check import check_model_folder
from npo.models.tiny import warmed_up_path
from npo.tasks import build_task

TINY = "tiny"


def resolve_model_path(cfg, train_items, progress=None) -> Path:
    """'tiny' -> the cached warm start (built on first use); anything else must be a local folder."""
    if cfg.model.path == TINY:
        task = build_task(cfg.task.spec, cfg.task.options, question_key=cfg.task.question_key,
                          answer_key=cfg.task.answer_key)
        return warmed_up_path(cfg.model.tiny, cfg.model.warmup, cfg.task, train_items, progress,
                              getattr(task, "demonstration", None))
    return check_model_folder(cfg.model.path)


def load_policy(path: str | Path, dtype=None):
    """(model, tokenizer) from a local folder; the tokenizer pads on the left for generation."""
    path = check_model_folder(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    return model, tokenizer
