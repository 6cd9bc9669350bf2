"""`jsonl:PATH` and `parquet:PATH`: question/answer rows verified with math-verify.

Columns are `task.question_key` / `task.answer_key`, and `task.image_key` for image prompts (a path
relative to the file, or base64; parquet image records of `datasets` too). Answers may be `\\boxed{}`, fractions, LaTeX or
GSM8K-style `#### 72`; math-verify compares parsed values. Every row is checked up front: a missing
column or an empty answer is a UserError naming the file and row. Needs the `math` extra.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from npo.errors import UserError
from npo.images import image_reference
from npo.tasks.base import Item, held_out_split, register
from npo.tasks.verify import math_reference, math_verify_score


def read_rows(path: Path, kind: str) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path}: no such dataset file")
    if kind == "jsonl":
        rows = []
        for i, raw in enumerate(path.read_bytes().splitlines(), start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}: row {i}: not UTF-8 (byte {exc.start} of the row)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}: row {i}: not valid JSON") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}: row {i}: expected a JSON object")
            rows.append(row)
        return rows
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise UserError(f"{path}: not a readable parquet file ({type(exc).__name__})") from None


def rows_to_items(rows: list[dict], path: Path, qkey: str, akey: str, ikey: str = "image") -> list[Item]:
    """Items of the rows, each checked; one question with two different answers is refused (which one
    would the verifier hold the policy to?). A row's image (column `ikey`) must open; a file is all
    image prompts or none."""
    items, first, with_image = [], {}, None
    for i, row in enumerate(rows, start=1):
        for key, field_name in ((qkey, "task.question_key"), (akey, "task.answer_key")):
            if key not in row:
                raise UserError(f"{path}: row {i}: missing column {key!r} ({field_name})")
        q, a = row[qkey], row[akey]
        if q is None or not str(q).strip():
            raise UserError(f"{path}: row {i}: empty question in column {qkey!r}")
        if a is None or not str(a).strip():
            raise UserError(f"{path}: row {i}: empty answer in column {akey!r}")
        image = _row_image(row.get(ikey), path, i, ikey)
        if with_image is None:
            with_image = (i, image is not None)
        elif with_image[1] != (image is not None):
            raise UserError(f"{path}: rows {with_image[0]} and {i}: one has an image (column {ikey!r}) and the other "
                            "not; a file is all image prompts or all text prompts")
        it = Item(question=str(q), answer=str(a), meta={"row": i}, image=image)
        if it.key in first and first[it.key][1].strip() != it.answer.strip():
            raise UserError(f"{path}: rows {first[it.key][0]} and {i}: the same question with different answers "
                            f"({first[it.key][1]!r}, {it.answer!r})")
        first.setdefault(it.key, (i, it.answer))
        items.append(it)
    if not items:
        raise UserError(f"{path}: no rows")
    return items


def _row_image(value, path: Path, row: int, column: str) -> str | None:
    """A row's image reference (None: a text prompt); parquet images written by `datasets` are
    {bytes, path} records."""
    if value is None:
        return None
    if isinstance(value, dict):
        raw, where = value.get("bytes"), value.get("path")
        value = "data:image;base64," + base64.b64encode(raw).decode() if raw else where
    try:
        return image_reference(value, path.parent)
    except ValueError as exc:
        raise UserError(f"{path}: row {row}: column {column!r}: {exc}") from None


class FileTask:
    # math-verify finds the final answer in the whole completion itself.
    wants_full_text = True

    def __init__(self, path: Path, kind: str, items: list[Item]):
        self.path, self.items = path, items
        self.name = f"{kind}:{path}"

    def splits(self, train_size: int, eval_size: int, seed: int):
        rows, fifth = len(self.items), max(1, len(self.items) // 5)
        if eval_size > rows:
            raise UserError(f"task.eval_size: {eval_size} > the {rows} rows of {self.path}: hold out fewer "
                            f"(e.g. --set task.eval_size={fifth} --set eval.n={fifth}; "
                            f"npo eval: --n {rows} evaluates every row)")
        train, eval_items = held_out_split(self.items, eval_size, seed)
        return train[:train_size], eval_items

    def parse_reference(self, item: Item):
        """Parsed once per item by the verifier guard (sympy's parse of a reference can be slow)."""
        return math_reference(item.answer)

    def score(self, answer_text: str, item: Item, reference=None) -> float:
        return math_verify_score(answer_text, item.answer, reference)


def _make(kind: str, arg: str, options: dict, question_key="question", answer_key="answer", image_key="image",
          **_) -> FileTask:
    if not arg:
        raise UserError(f"task.spec: expected {kind}:PATH")
    if options:
        raise UserError(f"task.options: {kind} tasks take no options (use task.question_key/answer_key)")
    try:
        import math_verify  # noqa: F401
    except ImportError:
        raise UserError(f"task.spec: {kind}:PATH needs math-verify; pip install 'npo[math]'") from None
    path = Path(arg)
    return FileTask(path, kind, rows_to_items(read_rows(path, kind), path, question_key, answer_key, image_key))


@register("jsonl")
def make_jsonl(arg, options, **kw):
    return _make("jsonl", arg, options, **kw)


@register("parquet")
def make_parquet(arg, options, **kw):
    return _make("parquet", arg, options, **kw)
