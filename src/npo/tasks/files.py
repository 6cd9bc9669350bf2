"""`jsonl:PATH` and `parquet:PATH`: question/answer rows verified with math-verify.

Columns are `task.question_key` / `task.answer_key`, and `task.image_key` for image prompts (a path
relative to the file, or base64; parquet image records of `datasets` too). Answers may be `\\boxed{}`, fractions, LaTeX or
GSM8K-style `#### 72`; math-verify compares parsed values. Every row is checked up front: a missing
column or an empty answer is a UserError naming the file and row. Needs the `math` extra.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import random
import signal
import threading
from pathlib import Path

from npo.config.checks import short
from npo.errors import UserError
from npo.tasks.base import Item, held_out_split, register
from npo.tasks.images import image_reference
from npo.tasks.verify import math_reference, math_verify_score

REFERENCE_SAMPLE = 256  # references verified against themselves at start (all of a smaller file)


def read_rows(path: Path, kind: str) -> list[tuple[int, dict]]:
    """(row number, row) of every row: a jsonl row's number is its line (blank lines count, so that an
    error names the line an editor shows)."""
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
                row = json.loads(line, object_pairs_hook=_unique_keys)
            except _DuplicateKey as exc:
                raise UserError(f"{path}: row {i}: key {exc.args[0]!r} given twice (JSON keeps the last)") from None
            except (json.JSONDecodeError, RecursionError):
                raise UserError(f"{path}: row {i}: not valid JSON") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}: row {i}: expected a JSON object")
            rows.append((i, row))
        return rows
    import pyarrow.parquet as pq

    try:
        return list(enumerate(pq.read_table(path).to_pylist(), start=1))
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise UserError(f"{path}: not a readable parquet file ({type(exc).__name__})") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list) -> dict:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def text_value(value, row: str, column: str, what: str) -> str:
    """A question or answer cell (`row`: "FILE: row N") as text: a string, or a finite number written as
    Python writes it. Any other value (an object, a list, bytes, NaN, true) would reach the model or the
    verifier as its repr, which no completion can match."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        text = str(value)
    else:
        raise UserError(f"{row}: column {column!r}: expected a string or a number, got {type(value).__name__} "
                        f"{short(value)}")
    if not text.strip():
        raise UserError(f"{row}: empty {what} in column {column!r}")
    return text


def rows_to_items(rows: list[tuple[int, dict]], path: Path, qkey: str, akey: str, ikey: str = "image") -> list[Item]:
    """Items of the rows, each checked; one question with two different answers is refused (which one
    would the verifier hold the policy to?). A row's image (column `ikey`) must open; a file is all
    image prompts or none."""
    items, first, with_image = [], {}, None
    for i, row in rows:
        for key, field_name in ((qkey, "task.question_key"), (akey, "task.answer_key")):
            if key not in row:
                raise UserError(f"{path}: row {i}: missing column {key!r} ({field_name})")
        q = text_value(row[qkey], f"{path}: row {i}", qkey, "question")
        a = text_value(row[akey], f"{path}: row {i}", akey, "answer")
        image = _row_image(row.get(ikey), path, i, ikey)
        if with_image is None:
            with_image = (i, image is not None)
        elif with_image[1] != (image is not None):
            raise UserError(f"{path}: rows {with_image[0]} and {i}: one has an image (column {ikey!r}) and the other "
                            "not; a file is all image prompts or all text prompts")
        it = Item(question=q, answer=a, meta={"row": i}, image=image)
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
    worker_imports = ("math_verify",)  # imported by a verifier worker before its timed warm-up

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

    def check_references(self, timeout: float, sample: int = REFERENCE_SAMPLE, seed: int = 0) -> None:
        """Every reference (a seeded sample of `sample` rows in a larger file) must verify against itself,
        written as the prompt asks for it (`\\boxed{...}`): math-verify scores 0, without an error, for a
        reference it finds no value in, and every reward of such rows would be 0 with nothing said."""
        rows = self.items if len(self.items) <= sample else random.Random(seed).sample(self.items, sample)
        bad = [it for it in rows if not _verifies_itself(it.answer, timeout)]
        if bad:
            shown = ", ".join(str(it.meta["row"]) for it in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise UserError(f"{self.path}: row{'s' if len(bad) > 1 else ''} {shown}: the reference answer cannot verify "
                            f"(math-verify finds no value in {bad[0].answer!r} equal to itself within "
                            f"task.verifier_timeout): no completion could score 1")

    def parse_reference(self, item: Item):
        """Parsed once per item by the verifier guard (sympy's parse of a reference can be slow)."""
        return math_reference(item.answer)

    def score(self, answer_text: str, item: Item, reference=None) -> float:
        return math_verify_score(answer_text, item.answer, reference)


def _verifies_itself(gold: str, timeout: float) -> bool:
    """Whether the reference `gold`, boxed as a completion would write it, scores 1 against itself; cut
    at `timeout` seconds on the main thread (math-verify's own alarms are off: npo.tasks.verify)."""
    answer = gold.split("####")[-1].strip() if "####" in gold else gold.strip()
    try:
        with alarm(timeout):
            return math_verify_score(f"\\boxed{{{answer}}}", gold) == 1.0
    except (Exception, _TimedOut):  # noqa: BLE001 - a reference that raises cannot verify either
        return False


class _TimedOut(BaseException):
    pass


@contextlib.contextmanager
def alarm(seconds: float):
    """Raise _TimedOut in the main thread after `seconds` (elsewhere: no limit, signals are the main thread's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ring(*_):
        raise _TimedOut

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
