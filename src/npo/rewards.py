"""Binary verified rewards, the one reward function TRL sees.

`TaskScorer` turns a completion into r in {0, 1}: extract the answer (per prompt style), score it
with the task's verifier under a guard (`npo.tasks.verify.GuardedScorer`), threshold it.
"""

from __future__ import annotations

from dataclasses import replace

from npo.errors import RunFailed
from npo.prompting import answer_for_scoring, completion_text
from npo.tasks.base import Item
from npo.tasks.verify import GuardedScorer, VerifyStats, math_verify_score


class TaskScorer:
    def __init__(self, task, style: str, threshold: float = 1.0, timeout: float = 5.0, max_failed_share: float = 0.5):
        self.task, self.style, self.threshold = task, style, threshold
        self.guard = GuardedScorer(task, timeout)
        self.max_failed_share = max_failed_share

    @classmethod
    def for_run(cls, task, style: str, cfg, warm: Item | None = None) -> "TaskScorer":
        """The scorer of a run's config (task section), its verifier workers started and warmed on `warm`."""
        scorer = cls(task, style, cfg.task.reward_threshold, cfg.task.verifier_timeout, cfg.task.max_failed_share)
        scorer.guard.start(warm)
        return scorer

    @property
    def stats(self):
        """`npo.tasks.verify.VerifyStats`: verifications made, and those that raised or timed out."""
        return self.guard.stats

    def reward(self, completion, item: Item, count: bool = True) -> float:
        """`count=False`: a verdict the run has counted already (TRL's reward function after the gate)."""
        text = answer_for_scoring(completion_text(completion), self.style, self.task)
        return 1.0 if self.guard.score(text, item, count) >= self.threshold else 0.0

    def snapshot(self) -> VerifyStats:
        return replace(self.stats)

    def check(self, counted: VerifyStats, where: str) -> None:
        """Stop the run (RunFailed) when more than `max_failed_share` of the verifications `counted`
        (one step's, one evaluation's) raised or timed out: rewards that are 0 because the verifier
        failed would train and report nonsense while the run exits 0."""
        if why := counted.failure(self.max_failed_share, self.guard.timeout):
            raise RunFailed(f"{where}: {why}")

    def close(self) -> None:
        self.guard.close()


def math_verify_reward(completions, answer, **_) -> list[float]:
    """A TRL reward function: 1.0 where math-verify finds the completion's answer equal to the `answer`
    column (`\\boxed{}`, fractions, LaTeX, GSM8K's `#### 72`), else 0.0. As npo's verifier it runs in
    the guarded worker process (`npo.tasks.python`)."""
    return [math_verify_score(completion_text(c), a) for c, a in zip(completions, answer)]


VERIFIED = "verified"  # TRL's name of npo's reward function: reward/mean already is its mean


def make_reward_fn(scorer: TaskScorer, items: list[Item]):
    """A TRL reward function over dataset column `item_index` (row of `items`)."""

    def verified(prompts, completions, item_index, **_):  # its __name__ is VERIFIED
        return [scorer.reward(c, items[i], count=False) for c, i in zip(completions, item_index)]  # the gate counted it

    return verified
