"""Binary verified rewards, the one reward function TRL sees.

`TaskScorer` turns a completion into r in {0, 1}: extract the answer (per prompt style), score it
with the task's verifier under a guard (`npo.tasks.verify.GuardedScorer`), threshold it.
"""

from __future__ import annotations

from dataclasses import replace

from npo.errors import RunFailed
from npo.tasks.base import Item
from npo.tasks.prompting import answer_for_scoring, completion_text
from npo.tasks.verify import GuardedScorer, VerifyStats, math_verify_score


class TaskScorer:
    def __init__(self, task, style: str, threshold: float = 1.0, timeout: float = 5.0, max_failed_share: float = 0.5):
        self.task, self.style, self.threshold = task, style, threshold
        self.guard = GuardedScorer(task, timeout)
        self.max_failed_share = max_failed_share
        self.state_of = None  # () -> the trainer's TrainerState, for reward functions that read it (TRL's kwarg)

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
        return self.rewards([completion], [item], count)[0]

    def rewards(self, completions: list, items: list[Item], count: bool = True, trl: dict | None = None) -> list[float]:
        """Binary rewards of completions, verified in one batch where the task takes batches; `count=False`:
        verdicts the run has counted already (TRL's reward function after the gate); `trl`: TRL's keyword
        arguments of the batch (prompts, completion_ids), with the trainer's state (`state_of`) added."""
        texts = [answer_for_scoring(completion_text(c), self.style, self.task) for c in completions]
        trl = dict(trl or {})
        if self.state_of is not None:
            trl.setdefault("trainer_state", self.state_of())
        return [1.0 if v >= self.threshold else 0.0 for v in self.guard.score_many(texts, items, count, trl)]

    def __getstate__(self):  # the trainer's state stays in its process
        return {**self.__dict__, "state_of": None}

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

    def verified(prompts, completions, item_index, completion_ids=None, **_):  # its __name__ is VERIFIED
        trl = {"prompts": prompts, **({"completion_ids": completion_ids} if completion_ids is not None else {})}
        return scorer.rewards(completions, [items[i] for i in item_index], count=False, trl=trl)  # the gate counted them

    return verified
