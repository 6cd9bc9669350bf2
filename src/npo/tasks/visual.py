"""Procedural visual tasks: the question is in the image, the answer is short. Drawn with Pillow,
deterministic per item (its image reference `draw:KIND:PAYLOAD` redraws it), exact-match verified.

- `vis-arith`: `arith`'s expression (same options: terms, digits, ops) drawn in black on a white
  strip; the text prompt only says `Compute:`.
- `vis-count`: 1 to `max_count` (default 9) black squares on a white strip, on cells of a grid drawn
  from the item's seed; the text prompt says `Count:`.

Both draw `width` x `height` pixel images (default 48 x 16): with the tiny VLM's 4-pixel patches merged
2 x 2, that is 12 vision tokens per prompt.
"""

from __future__ import annotations

import random
from functools import lru_cache

from npo.errors import UserError
from npo.tasks.arith import ArithTask, make_arith
from npo.tasks.base import Item, SampledTask, register
from npo.tasks.images import drawer

WIDTH, HEIGHT = 48, 16
CELL = 4  # vis-count's squares sit on a grid of 4-pixel cells


@lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    return ImageFont.load_default(size=12)  # Pillow's bundled font: no file, the same everywhere


def _strip():
    from PIL import Image

    return Image.new("L", (WIDTH, HEIGHT), 255)


@drawer("vis-arith")
def draw_expression(expr: str):
    from PIL import ImageDraw

    img = _strip()
    ImageDraw.Draw(img).text((1, 0), expr, fill=0, font=_font())
    return img


@drawer("vis-count")
def draw_squares(payload: str):
    """`payload`: the occupied cells, as comma-separated indices into the (WIDTH/CELL) x (HEIGHT/CELL) grid."""
    from PIL import ImageDraw

    img, cols = _strip(), WIDTH // CELL
    pen = ImageDraw.Draw(img)
    for cell in map(int, payload.split(",")):
        x, y = (cell % cols) * CELL, (cell // cols) * CELL
        pen.rectangle((x, y, x + CELL - 2, y + CELL - 2), fill=0)  # a 3 x 3 square, a pixel of gap
    return img


class VisArithTask(SampledTask):
    def __init__(self, terms: int = 2, digits: int = 2, ops: str = "+-"):
        self.text = ArithTask(terms, digits, ops)
        self.name = f"vis-arith(terms={terms},digits={digits},ops={ops})"

    def sample(self, rng: random.Random) -> Item:
        it = self.text.sample(rng)
        expr = it.meta["expression"]
        return Item("Compute:", it.answer, meta={"expression": expr}, image=f"draw:vis-arith:{expr}")


class VisCountTask(SampledTask):
    def __init__(self, max_count: int = 9):
        self.max_count = max_count
        self.name = f"vis-count(max_count={max_count})"

    def sample(self, rng: random.Random) -> Item:
        count = rng.randint(1, self.max_count)
        cells = sorted(rng.sample(range((WIDTH // CELL) * (HEIGHT // CELL)), count))
        return Item("Count:", str(count), image="draw:vis-count:" + ",".join(map(str, cells)))


def _options(kind: str, arg: str, options: dict, allowed: dict) -> dict:
    if arg:
        raise UserError(f"task.spec: '{kind}' takes no argument, got '{kind}:{arg}'")
    for key in options:
        if key not in allowed:
            raise UserError(f"task.options.{key}: unknown option for {kind} (known: {', '.join(sorted(allowed))})")
    return {**allowed, **options}


@register("vis-arith")
def make_vis_arith(arg: str, options: dict, **_) -> VisArithTask:
    o = _options("vis-arith", arg, options, {"terms": 2, "digits": 2, "ops": "+-"})
    make_arith("", o)  # the same checks as arith's options
    chars = (o["digits"] + 1) * o["terms"] - 1  # the longest expression; the font is about 6 pixels a character
    if chars > WIDTH // 6:
        raise UserError(f"task.options: {o['terms']} terms of {o['digits']} digits ({chars} characters) do not fit "
                        f"a {WIDTH}-pixel image (at most {WIDTH // 6} characters)")
    return VisArithTask(o["terms"], o["digits"], o["ops"])


@register("vis-count")
def make_vis_count(arg: str, options: dict, **_) -> VisCountTask:
    o = _options("vis-count", arg, options, {"max_count": 9})
    m, cells = o["max_count"], (WIDTH // CELL) * (HEIGHT // CELL)
    if not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= cells:
        raise UserError(f"task.options.max_count: expected an integer in 1..{cells}, got {m!r}")
    return VisCountTask(m)
