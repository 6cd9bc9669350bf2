"""Binary verified rewards, the one reward function TRL sees.

`TaskScorer` turns a completion into r in {0, 1}: extract the answer (per prompt style), score it
with the task's verifier under a guard (`npo.tasks.verify.GuardedScorer`), threshold it.
"""

from __future__ import annotations

from npo.prompting import answer_for_scoring, completion_text
from npo.tasks.base import Item
from npo.tasks.verify import GuardedScorer


class TaskScorer:
    def __init__(self, task, style: str, threshold: float = 1.0, timeout: float = 5.0):
        self.task, self.style, self.threshold = task, style, threshold
        self.guard = GuardedScorer(task, timeout)

    @property
    def stats(self):
        """`npo.tasks.verify.VerifyStats`: verifications made, and those that raised or timed out."""
        return self.guard.stats

    def reward(self, completion, item: Item, count: bool = True) -> float:
        """`count=False`: a verdict the run has counted already (TRL's reward function after the gate)."""
        text = answer_for_scoring(completion_text(completion), self.style, self.task)
        return 1.0 if self.guard.score(text, item, count) >= self.threshold else 0.0

    def close(self) -> None:
        self.guard.close()


def make_reward_fn(scorer: TaskScorer, items: list[Item]):
    """A TRL reward function over dataset column `item_index` (row of `items`)."""

    def verified(prompts, completions, item_index, **_):
        return [scorer.reward(c, items[i], count=False) for c, i in zip(completions, item_index)]  # the gate counted it

    return verified
