"""`rg:NAME`: any reasoning-gym procedural dataset, scored by its own `score_answer`.

Options pass through to `reasoning_gym.create_dataset(NAME, size=..., seed=..., **options)`.
Binary reward (score >= task.reward_threshold, default 1.0) is applied by the reward function.
Needs the `tasks` extra (`pip install npo[tasks]`).
"""

from __future__ import annotations

from npo.errors import UserError
from npo.tasks.base import Item, disjoint_split, register


class ReasoningGymTask:
    def __init__(self, name: str, options: dict):
        self.rg_name, self.options = name, options
        self.name = f"rg:{name}"
        self._scorer = self._dataset(1, 0)

    def _dataset(self, size: int, seed: int):
        import reasoning_gym

        try:
            return reasoning_gym.create_dataset(self.rg_name, size=size, seed=seed, **self.options)
        except (TypeError, ValueError, AssertionError) as exc:
            raise UserError(f"task.options: reasoning-gym {self.rg_name!r} rejected the options: {exc}") from None

    def _items(self, size: int, seed: int) -> list[Item]:
        ds = self._dataset(size, seed)
        return [Item(question=e["question"], answer=str(e["answer"]), meta={"entry": e}) for e in ds]

    def splits(self, train_size: int, eval_size: int, seed: int):
        eval_items = self._items(eval_size, seed)
        train, eval_items = disjoint_split(eval_items, self._items(train_size, seed + 1))
        return train, eval_items

    def score(self, answer_text: str, item: Item) -> float:
        entry = item.meta.get("entry") or {"question": item.question, "answer": item.answer, "metadata": {}}
        return float(self._scorer.score_answer(answer_text, entry))


@register("rg")
def make_rg(arg: str, options: dict, **_) -> ReasoningGymTask:
    try:
        import reasoning_gym
    except ImportError:
        raise UserError("task.spec: rg:NAME needs reasoning-gym; pip install 'npo[tasks]'") from None
    if not arg:
        raise UserError("task.spec: expected rg:NAME, e.g. rg:chain_sum")
    names = set(reasoning_gym.factory.DATASETS)
    if arg not in names:
        raise UserError(f"task.spec: unknown reasoning-gym dataset {arg!r}")
    return ReasoningGymTask(arg, options)
