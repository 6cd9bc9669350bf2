"""Prompt formatting per model kind, and answer extraction.

- **plain** (the embedded tiny model, any tokenizer without a chat template): the prompt is the
  question text itself (`12+34=`) and the whole completion is the answer (`46<eos>`).
- **chat** (instruct models, a tokenizer with a chat template): the prompt is one user message, the
  question followed by `INSTRUCTION`; TRL applies the chat template. The answer is the content of the
  last `\\boxed{...}`, else the text after the last `Answer:`, else the last line.
- Tasks with `wants_full_text` (math-verify) get the whole completion: math-verify finds the answer.
- A conversational prompt of a Python dataset (`npo.tasks.python`) is used as given, system turn and all.
- An image prompt (`Item.image`) is always one user message, as TRL's multimodal path requires; its
  image is added by TRL from the dataset's `image` column (or by `npo.models.generation.conversations`).
  `tiny-vl`'s chat template carries `PLAIN_MARK`: its prompts and answers are plain.
"""

from __future__ import annotations

from npo.tasks.base import Item

INSTRUCTION = "\n\nThink briefly, then put the final answer within \\boxed{}."
PLAIN_MARK = "npo:plain"  # in a chat template: plain prompts and answers (tiny-vl)


def prompt_style(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None)
    return "chat" if template and PLAIN_MARK not in template else "plain"


def build_prompt(item: Item, style: str):
    if "messages" in item.meta:  # a conversational prompt given from Python (npo.tasks.python): as it is
        return item.meta["messages"]
    if style == "plain":
        return item.question if item.image is None else [{"role": "user", "content": item.question}]
    return [{"role": "user", "content": item.question + INSTRUCTION}]


def completion_text(completion) -> str:
    """TRL passes plain strings, or message lists for conversational prompts."""
    if isinstance(completion, list):
        return completion[-1]["content"] if completion else ""
    return completion


def last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract_answer(text: str, style: str) -> str:
    if style == "plain":
        return text.strip()
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    low = text.lower()
    k = low.rfind("answer:")
    if k >= 0:
        return text[k + len("answer:"):].strip()
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def answer_for_scoring(text: str, style: str, task) -> str:
    return text if getattr(task, "wants_full_text", False) else extract_answer(text, style)
