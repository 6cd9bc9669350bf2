"""A task given from Python (`npo.NPOTrainer`): rows of a Hugging Face dataset (or dicts) and a
reward function that verifies them, as TRL's `GRPOTrainer` takes them.

A row's prompt is its `prompt` column (TRL's name: a string, or a list of chat messages used as they
are) or its question column (`task.question_key`); its reference answer, when it has one, is the
answer column (`task.answer_key`); every column of the row reaches the reward functions as a keyword
argument, as in TRL. The verifier is called as TRL calls a reward function: once per batch with every
completion, `fn(prompts=[...], completions=[...], completion_ids=[...], trainer_state=state,
**{column: [...]})`, each completion as TRL would pass it (a string, or one assistant message for a
conversational prompt); npo's evaluation and guides have no token ids to give (no `completion_ids`).

A verifier importable by name (a module's function, such as `npo.tasks.rewards.math_verify_reward`) runs in
the guarded worker process with `task.verifier_timeout`, like the built-in tasks; any other (a
closure, a function of the script being run) is called in this process, without a time limit. One
that raises scores 0 and is counted; `task.max_failed_share` stops a run whose verifier fails on most
answers.
"""

from __future__ import annotations

import importlib.machinery
import pickle
import sys
from pathlib import Path

from npo.errors import UserError
from npo.tasks.base import Item
from npo.tasks.images import image_reference

TRL_OWN = ("prompt", "completion", "completion_ids")  # columns TRL passes by name, never as keywords
RESERVED = ("item_index",)  # npo's own column of TRL's dataset


def rows_of(dataset, where: str) -> list[dict]:
    """The rows of a `datasets.Dataset` or a list of dicts."""
    if isinstance(dataset, (list, tuple)):
        rows = list(dataset)
    elif hasattr(dataset, "to_list"):
        rows = dataset.to_list()
    else:
        raise UserError(f"{where}: expected a datasets.Dataset or a list of dicts, got {type(dataset).__name__}")
    if not rows:
        raise UserError(f"{where}: no rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UserError(f"{where}: row {i}: expected a dict, got {type(row).__name__}")
    return rows


def dataset_items(dataset, where: str, question_key: str = "question", answer_key: str = "answer",
                  image_key: str = "image") -> list[Item]:
    """Items of a dataset's rows, each checked; a row keeps its columns in `meta["columns"]`."""
    items = []
    for i, row in enumerate(rows_of(dataset, where)):
        if clash := [k for k in RESERVED if k in row]:
            raise UserError(f"{where}: row {i}: column {clash[0]!r} is npo's own; rename it")
        prompt = row.get("prompt", row.get(question_key))
        if prompt is None:
            raise UserError(f"{where}: row {i}: no 'prompt' column and no {question_key!r} column (task.question_key)")
        messages = None
        if isinstance(prompt, list):  # conversational: used as given; the question is the last user turn
            users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
            if not users or not isinstance(users[-1], str):
                raise UserError(f"{where}: row {i}: a conversational prompt needs a user message with text content")
            messages, prompt = prompt, users[-1]
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(f"{where}: row {i}: empty prompt")
        answer = row.get(answer_key)
        image = row.get(image_key)
        try:
            image = None if image is None else image_reference(image, Path.cwd())
        except (ValueError, TypeError) as exc:
            raise UserError(f"{where}: row {i}: column {image_key!r}: {exc}") from None
        columns = {k: v for k, v in row.items() if k not in TRL_OWN and k != image_key}
        meta = {"row": i, "columns": columns, **({"messages": messages} if messages else {})}
        items.append(Item(question=prompt, answer="" if answer is None else str(answer), meta=meta, image=image))
    return items


def importable(fn) -> bool:
    """Whether a fresh worker process can import `fn` by name (pickle stores functions by reference): it
    pickles here, and its module is found on the search path a spawned worker starts with, not only in
    this process's `sys.modules` (a module loaded from a file path by importlib is found nowhere else)."""
    module = getattr(fn, "__module__", None)
    if module in (None, "__main__", "__mp_main__") or "<locals>" in getattr(fn, "__qualname__", "<locals>"):
        return False
    try:
        pickle.dumps(fn)
        spec = importlib.machinery.PathFinder.find_spec(module.partition(".")[0], sys.path)
    except Exception:  # noqa: BLE001 - anything that does not pickle runs in-process
        return False
    return spec is not None or module.partition(".")[0] in sys.builtin_module_names


class RewardTask:
    """Given items, verified by a TRL-style reward function."""

    wants_full_text = True  # a reward function reads the whole completion, as TRL gives it
    takes_trl_kwargs = True  # the guard passes TRL's prompts, completion_ids and trainer_state through
    worker_imports = ("math_verify",)  # npo.math_verify_reward's (lazy) import, paid before the timed warm-up

    def __init__(self, verifier, train_items: list[Item], eval_items: list[Item]):
        self.verifier, self.train_items, self.eval_items = verifier, train_items, eval_items
        self.name = f"python:{getattr(verifier, '__name__', type(verifier).__name__)}"
        self.inline = not importable(verifier)  # else the worker process imports it by name

    def __getstate__(self):  # what a worker process needs: the verifier, not the rows
        return {**self.__dict__, "train_items": [], "eval_items": []}

    def splits(self, train_size: int, eval_size: int, seed: int):
        return self.train_items[:train_size], self.eval_items[:eval_size]

    def score(self, answer_text: str, item: Item, **trl) -> float:
        return self.score_batch([answer_text], [item], **trl)[0]

    def score_batch(self, answers: list[str], items: list[Item], prompts: list | None = None, **trl) -> list:
        """One call of the verifier, as TRL makes it: every completion at once, every dataset column a list
        (a row without one gives None), and TRL's keyword arguments given (`trl`: `completion_ids`,
        `trainer_state`, ...); the values are checked by the guard (npo.tasks.verify.verdict)."""
        if prompts is None:
            prompts = [it.meta.get("messages") or it.question for it in items]
        completions = [[{"role": "assistant", "content": a}] if it.meta.get("messages") else a
                       for a, it in zip(answers, items)]
        names = dict.fromkeys(k for it in items for k in it.meta.get("columns", {}))
        columns = {k: [it.meta.get("columns", {}).get(k) for it in items] for k in names}
        return self.verifier(prompts=prompts, completions=completions, **{**columns, **trl})
