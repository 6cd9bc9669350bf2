"""`scratch`: sums such as `12+34+5=` answered with a scratchpad, `34+5=39,39+12=51#51`.

The scratchpad adds the terms one at a time in any order: the terms' 3! = 6 orders (for 3 terms) are
six different correct completions of one question, and only the answer after the last `#` is verified.
So, unlike `arith` (one short correct string per question), guide sources can differ in *how* they
solve a prompt, not only in how many prompts they solve: a teacher writing one canonical order (left
to right, `reference_completion`) can be far from a policy that prefers another, while the policy's
own near future writes in the orders the policy already uses. The warm start learns every order
(`demonstration` draws one at random per example).

Options: `terms` (default 3), `digits` (max digits per operand, default 2).
"""

from __future__ import annotations

import itertools
import random

from npo.errors import UserError
from npo.tasks.arith import ArithTask
from npo.tasks.base import Item, register


class ScratchTask(ArithTask):
    inline = True  # an exact match of the final answer: scored in-process
    wants_full_text = True  # the verifier reads the whole completion and takes the answer after the last '#'

    def __init__(self, terms: int = 3, digits: int = 2):
        super().__init__(terms, digits, "+")
        self.name = f"scratch(terms={terms},digits={digits})"

    def sample(self, rng: random.Random) -> Item:
        nums = [rng.randint(0, 10 ** rng.randint(1, self.digits) - 1) for _ in range(self.terms)]
        return Item(question="+".join(map(str, nums)) + "=", answer=str(sum(nums)), meta={"terms": nums})

    def scratchpad(self, terms: list[int]) -> str:
        """The completion adding `terms` in the order given: `a+b=s,s+c=t#t`."""
        steps, total = [], terms[0]
        for x in terms[1:]:
            steps.append(f"{total}+{x}={total + x}")
            total += x
        return ",".join(steps) + f"#{total}"

    def orders(self, item: Item) -> list[str]:
        """Every correct completion of `item`, one per order of its terms (duplicates removed)."""
        return list(dict.fromkeys(self.scratchpad(list(p)) for p in itertools.permutations(item.meta["terms"])))

    def reference_completion(self, item: Item) -> str:
        """The teacher's one canonical style: left to right."""
        return self.scratchpad(item.meta["terms"])

    def demonstration(self, item: Item, rng: random.Random) -> str:
        """A warm-start target: the terms added in a random order."""
        terms = list(item.meta["terms"])
        rng.shuffle(terms)
        return self.scratchpad(terms)

    def score(self, answer_text: str, item: Item) -> float:
        return 1.0 if answer_text.rpartition("#")[2].strip() == item.answer else 0.0


@register("scratch")
def make_scratch(arg: str, options: dict, **_) -> ScratchTask:
    if arg:
        raise UserError(f"task.spec: 'scratch' takes no argument, got 'scratch:{arg}'")
    for key in options:
        if key not in ("terms", "digits"):
            raise UserError(f"task.options.{key}: unknown option for scratch (known: digits, terms)")
    terms, digits = options.get("terms", 3), options.get("digits", 2)
    if not isinstance(terms, int) or isinstance(terms, bool) or not 2 <= terms <= 5:
        raise UserError(f"task.options.terms: expected an integer in 2..5, got {terms!r}")
    if not isinstance(digits, int) or isinstance(digits, bool) or not 1 <= digits <= 4:
        raise UserError(f"task.options.digits: expected an integer in 1..4, got {digits!r}")
    return ScratchTask(terms, digits)
