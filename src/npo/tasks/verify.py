"""Verifiers that cannot kill a run: exceptions score 0, hangs are cut off by a timeout.

math-verify uses `signal.alarm` for its own timeouts, which fails off the main thread; we disable
those (`parsing_timeout=None`, `timeout_seconds=None`) and enforce ours by scoring in a separate
worker process that is killed and restarted when one verification runs past `timeout` seconds.
Cheap exact-match tasks score inline (they cannot hang) with exceptions still caught.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass

from npo.tasks.base import Item


def math_verify_score(answer_text: str, gold: str) -> float:
    """1.0 when math-verify finds the completion's final answer equal to `gold`, else 0.0."""
    from math_verify import parse, verify

    gold = gold.split("####")[-1].strip() if "####" in gold else gold.strip()
    if "$" not in gold and "\\" not in gold:
        gold = f"${gold}$"
    gold_parsed = parse(gold, parsing_timeout=None)
    pred_parsed = parse(answer_text, parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return 0.0
    return 1.0 if verify(gold_parsed, pred_parsed, timeout_seconds=None) else 0.0


def _worker(conn, task) -> None:
    while True:
        msg = conn.recv()
        if msg is None:
            return
        answer, item = msg
        try:
            conn.send(("ok", float(task.score(answer, item))))
        except Exception as exc:  # noqa: BLE001 - any verifier failure is a 0 reward, never a crash
            conn.send(("error", repr(exc)))


@dataclass
class VerifyStats:
    calls: int = 0
    errors: int = 0
    timeouts: int = 0


class GuardedScorer:
    """Scores (answer, item) pairs with `task.score`, guarded; results cached per pair."""

    def __init__(self, task, timeout: float, isolate: bool | None = None, cache_size: int = 200_000):
        self.task, self.timeout = task, timeout
        self.isolate = getattr(task, "needs_isolation", False) if isolate is None else isolate
        self.stats = VerifyStats()
        self._cache: dict[tuple[str, str, str], float] = {}
        self._cache_size = cache_size
        self._proc = None
        self._conn = None

    def score(self, answer: str, item: Item, count: bool = True) -> float:
        """The verifier's score. Every call with `count` is counted in `stats`, a cached pair as it was
        when verified, so the counts depend only on what was scored (a resumed run, whose cache starts
        empty, counts the same); `count=False` re-reads a verdict already counted."""
        key = (answer, item.question, item.answer)
        if key not in self._cache:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[key] = self._isolated(answer, item) if self.isolate else self._inline(answer, item)
        value, outcome = self._cache[key]
        if not count:
            return value
        self.stats.calls += 1
        if outcome != "ok":
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        return value

    def _inline(self, answer: str, item: Item) -> tuple[float, str]:
        try:
            return float(self.task.score(answer, item)), "ok"
        except Exception:  # noqa: BLE001
            return 0.0, "errors"

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child, self.task), daemon=True)
        self._proc.start()

    def _isolated(self, answer: str, item: Item) -> tuple[float, str]:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((answer, item))
        if not self._conn.poll(self.timeout):
            self.close()
            return 0.0, "timeouts"
        status, value = self._conn.recv()
        if status != "ok":
            return 0.0, "errors"
        return value, "ok"

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
            self._proc = None

    def __getstate__(self):  # scorers travel to eval helpers; the worker process does not
        state = self.__dict__.copy()
        state["_proc"] = state["_conn"] = None
        return state
