"""Verifiers that misbehave on purpose, for tests/test_verify.py. A module of its own, light to import:
the guard's worker processes are spawned and unpickle these classes by module name."""

import time

from npo.tasks.arith import ArithTask
from npo.tasks.base import register


class Flaky:
    """Scores 1 when the answer equals the reference; 'raise' raises, 'hang' hangs, 'slow' takes 1 s."""

    name = "flaky"

    def score(self, answer, item):
        if answer == "raise":
            raise RuntimeError("verifier bug")
        if answer == "hang":
            time.sleep(600)
        if answer == "slow":
            time.sleep(1.0)
            return 1.0
        return 1.0 if answer == item.answer else 0.0


class HangingReference(Flaky):
    """A task whose reference parsing hangs for the reference 'pathological'."""

    def parse_reference(self, item):
        if item.answer == "pathological":
            time.sleep(600)
        return item.answer

    def score(self, answer, item, reference=None):
        assert reference == item.answer  # the worker passes the reference it parsed
        return super().score(answer, item)


def burn(seconds: float) -> None:
    """Keep one core busy (a loaded machine)."""
    end = time.time() + seconds
    while time.time() < end:
        pass


class RaisingArith(ArithTask):
    """A task of a user's whose verifier raises on every answer (a broken dependency, say); scored in a
    worker like any verifier that is not declared inline."""

    inline = False
    name = "raising"

    def score(self, answer, item):
        raise RuntimeError("the verifier's dependency is broken")


@register("raising")
def make_raising(arg, options, **_):
    return RaisingArith()


class Misreporting(Flaky):
    """A verifier that answers with something other than a score for some answers: NaN, None, text, 2."""

    OUTPUTS = {"nan": float("nan"), "none": None, "text": "1", "two": 2.0}

    def score(self, answer, item):
        return self.OUTPUTS[answer] if answer in self.OUTPUTS else super().score(answer, item)


class HangsOnEverything(Flaky):
    """A verifier that hangs on every answer, its own reference included (the warm-up's)."""

    def score(self, answer, item):
        time.sleep(600)


def reward_ok(prompts, completions, **_):
    """A TRL-style reward function importable by name."""
    return [1.0 for _ in completions]


class BatchedFlaky(Flaky):
    """A batched verifier (TRL's reward-function shape) whose batch call raises on a 'raise' answer:
    the guard then scores each completion alone."""

    takes_trl_kwargs = True
    batches: list = []

    def score_batch(self, answers, items, **trl):
        type(self).batches.append((len(answers), sorted(trl)))
        if "raise" in answers:
            raise RuntimeError("one bad completion fails the batch")
        return [self.score(a, it) for a, it in zip(answers, items)]

    def score(self, answer, item, **trl):
        return super().score(answer, item)
