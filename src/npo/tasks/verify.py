"""Verifiers that cannot break a run: an exception scores 0, a hang is cut at a wall-clock limit, a dead
worker is replaced, and a run whose verifications mostly fail stops (`VerifyStats.failure`).

Every verifier that can hang (math-verify's sympy, reasoning-gym's `score_answer`, a user's task) scores
in a worker process that is killed when one verification runs past `timeout` seconds. The limit counts
only the verification: a worker is started and warmed (imports done, one pair scored) before it is
given work, and a spare is kept warm in the background, so a kill costs no start-up inside any limit.
A worker that dies (the OOM killer, a segfault) is replaced and its verification retried once.

A task that parses its reference (`parse_reference(item)`, math-verify) has it parsed once per item in
each worker and cached there; a reference whose parsing fails or hangs scores every answer 0 without
another try. A task that cannot hang (`inline = True`: arith's exact match) scores in-process.

math-verify uses `signal.alarm` for its own timeouts, which fails off the main thread; we disable them
(`parsing_timeout=None`, `timeout_seconds=None`) and enforce ours.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing as mp
import signal
from dataclasses import dataclass, fields

from npo.errors import RunFailed
from npo.tasks.base import Item

BATCH_LIMITS = 10  # a batched call's limit, in verification limits (GuardedScorer.batch_timeout)
STARTUP_LIMIT = 300.0  # seconds a worker may take to import and warm up (a loaded machine; never a verdict)


def math_reference(gold: str):
    """The parsed reference of a math answer (GSM8K `#### 72`, LaTeX, or a bare value)."""
    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled": ours is enforced
    gold = gold.split("####")[-1].strip() if "####" in gold else gold.strip()
    if "$" not in gold:  # math mode: bare, `2\\sqrt{2}` parses as 2 (the reference checks found it)
        gold = f"${gold}$"
    return parse(gold, parsing_timeout=None)


def math_verify_score(answer_text: str, gold: str, reference=None) -> float:
    """1.0 when math-verify finds the completion's final answer equal to `gold` (or its parsed
    `reference`), else 0.0."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled": ours is enforced
    gold_parsed = math_reference(gold) if reference is None else reference
    pred_parsed = parse(answer_text, parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return 0.0
    return 1.0 if verify(gold_parsed, pred_parsed, timeout_seconds=None) else 0.0


def _key(item: Item) -> tuple[str, str]:
    return item.question, item.answer


def verdict(value) -> float:
    """A verifier's score as a reward, or ValueError for what is not a score (None, a string, NaN, a
    number outside [0, 1]): counted as the verifier's error, never as a wrong answer."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:  # NaN fails too
        raise ValueError(f"the verifier returned {value!r}, not a score in [0, 1]")
    return float(value)


def _score(task, answer: str, item: Item, references: dict, trl: dict | None = None) -> float:
    if _key(item) in references:
        return verdict(task.score(answer, item, reference=references[_key(item)]))
    return verdict(task.score(answer, item, **trl) if trl else task.score(answer, item))


def _score_batch(task, answers: list, items: list, trl: dict) -> list[tuple[float, str]]:
    """One call of a batched verifier (TRL's way: every completion at once); each value checked."""
    values = task.score_batch(answers, items, **trl)
    if not isinstance(values, (list, tuple)) or len(values) != len(answers):
        raise ValueError(f"the verifier returned {len(values) if isinstance(values, (list, tuple)) else values!r} "
                         f"values for {len(answers)} completions")
    out = []
    for value in values:
        try:
            out.append((verdict(value), "ok"))
        except ValueError:
            out.append((0.0, "errors"))
    return out


def _serve(conn, task, warm: Item | None) -> None:
    """The worker: warm up, say ready, then answer ("reference", item), ("score", answer, item, trl) and
    ("batch", answers, items, trl), until the parent closes the pipe (or kills the process)."""
    try:
        _answer(conn, task, warm)
    except (EOFError, OSError):  # the parent went away, or replaced this worker before it was needed
        return


def _answer(conn, task, warm: Item | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to report, once: the parent kills workers
    references = {}
    for name in getattr(task, "worker_imports", ()):  # what the task's first call would import (math-verify: sympy)
        with contextlib.suppress(ImportError):  # not installed: then its first call is not going to import it
            importlib.import_module(name)
    conn.send(("imported", None))  # under the start-up limit; what follows is a verification, under its own
    if warm is not None:
        try:
            if hasattr(task, "parse_reference"):
                references[_key(warm)] = task.parse_reference(warm)
            _score(task, warm.answer, warm, references)
        except Exception:  # noqa: BLE001 - warming is best effort; real calls report their own errors
            pass
        references.clear()
    conn.send(("ready", None))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        try:
            if msg[0] == "reference":
                references[_key(msg[1])] = task.parse_reference(msg[1])
                conn.send(("ok", None))
            elif msg[0] == "batch":
                conn.send(("ok", _score_batch(task, *msg[1:])))
            else:
                conn.send(("ok", _score(task, *msg[1:3], references, msg[3])))
        except Exception as exc:  # noqa: BLE001 - any verifier failure is a 0 reward, never a crash
            conn.send(("error", repr(exc)))


class Dead(Exception):
    """The worker process died (its pipe closed) during a request."""


class Worker:
    """One verifier process, started on construction (asynchronously: `wait_ready` blocks)."""

    def __init__(self, task, warm: Item | None, timeout: float):
        self.timeout = timeout  # of the warm-up verification, as of any other
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, task, warm), daemon=True)
        self.proc.start()
        child.close()  # the worker's end lives in the worker only: its death closes the pipe here
        self.ready = False
        self.references: set = set()  # items whose reference this process has parsed

    def wait_ready(self) -> None:
        """Imports under the start-up limit (a loaded machine is no verdict), then the warm-up verification
        under the verification's own limit."""
        if self.ready:
            return
        for stage, limit in (("imported", STARTUP_LIMIT), ("ready", self.timeout)):
            try:
                if self.conn.poll(limit) and self.conn.recv()[0] == stage:
                    continue
            except (EOFError, OSError):
                pass
            died = self.proc.exitcode  # None: alive (hanging); read before the kill sets it
            self.kill()
            if stage == "ready" and died is None:
                raise RunFailed(f"the verifier's warm-up (a training item's reference scored against itself) took "
                                f"over {limit:g} s, the limit of task.verifier_timeout: it hangs before scoring anything")
            why = f"exited with code {died}" if died is not None else f"took over {limit:.0f} s"
            raise RunFailed(f"the verifier's worker process did not start: it {why}")
        self.ready = True

    def ask(self, msg: tuple, timeout: float):
        """The worker's reply, or None past `timeout` seconds; raises Dead if the process died."""
        try:
            self.conn.send(msg)
            if not self.conn.poll(timeout):
                return None
            return self.conn.recv()
        except (EOFError, OSError) as exc:  # BrokenPipeError and ConnectionResetError are OSErrors
            raise Dead from exc

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()


@dataclass
class VerifyStats:
    """Running counts, in metrics.jsonl as verify/<name>: verifications made, those that raised (or
    met a worker that died twice, or a reference that would not parse), those cut at the limit, and
    worker processes replaced."""

    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    restarts: int = 0

    def since(self, before: "VerifyStats") -> "VerifyStats":
        return VerifyStats(**{f.name: getattr(self, f.name) - getattr(before, f.name) for f in fields(self)})

    def failure(self, max_share: float, timeout: float) -> str | None:
        """Why these verifications (one step's) cannot be trusted, if more than `max_share` failed."""
        failed = self.errors + self.timeouts
        if not self.calls or failed <= max_share * self.calls:
            return None
        return (f"{failed} of {self.calls} verifications failed ({self.timeouts} past the "
                f"{timeout:g} s limit of task.verifier_timeout, {self.errors} raised): their rewards would "
                f"be 0 for the verifier's sake, not the answers'. The limit (task.max_failed_share) is "
                f"{max_share:g}")


def _rows(trl: dict, rows: list[int]) -> dict:
    """TRL's keyword arguments for some rows: lists (one value per completion) cut to them, the rest as is."""
    return {k: [v[i] for i in rows] if isinstance(v, list) else v for k, v in trl.items()}


class GuardedScorer:
    """Scores (answer, item) pairs with `task.score`, guarded; results cached per pair."""

    def __init__(self, task, timeout: float, isolate: bool | None = None, cache_size: int = 200_000):
        self.task, self.timeout = task, timeout
        self.isolate = not getattr(task, "inline", False) if isolate is None else isolate
        self.stats = VerifyStats()
        self._cache: dict[tuple[str, str, str], tuple[float, str]] = {}
        self._cache_size = cache_size
        self.parses = hasattr(task, "parse_reference")
        self._bad_references: dict[tuple[str, str], str] = {}  # item -> the outcome its reference met
        self._inline_references: dict = {}
        self._warm: Item | None = None
        self._worker: Worker | None = None
        self._spare: Worker | None = None

    def start(self, warm: Item | None = None) -> None:
        """Start and warm the worker (and its spare) now, before any verification is timed; `warm` is an
        item whose reference is scored against itself (imports and first-call costs paid)."""
        if not self.isolate:
            return
        self._warm = warm if warm is not None else self._warm
        if self._worker is None:
            self._worker = Worker(self.task, self._warm, self.timeout)
        if self._spare is None:
            self._spare = Worker(self.task, self._warm, self.timeout)
        self._worker.wait_ready()

    def score(self, answer: str, item: Item, count: bool = True) -> float:
        return self.score_many([answer], [item], count)[0]

    def score_many(self, answers: list[str], items: list[Item], count: bool = True, trl: dict | None = None
                   ) -> list[float]:
        """The verifier's scores. Every call with `count` is counted in `stats`, a cached pair as it was
        when verified, so the counts depend only on what was scored (a resumed run, whose cache starts
        empty, counts the same); `count=False` re-reads a verdict already counted. A task that scores
        batches (`score_batch`: a TRL reward function) gets the pairs not yet cached in one call, under
        `batch_timeout`, and each one alone only if that call times out or raises; `trl` is TRL's keyword
        arguments for it (lists row by row, and `trainer_state`: npo.tasks.python.RewardTask)."""
        trl = (trl or {}) if getattr(self.task, "takes_trl_kwargs", False) else {}
        step = getattr(trl.get("trainer_state"), "global_step", None)  # a reward that changes with the step
        keys = [(a, it.question, it.answer, step) for a, it in zip(answers, items)]
        if len(self._cache) + len(keys) > self._cache_size:
            self._cache.clear()
        todo = [i for i, key in enumerate(keys) if key not in self._cache]
        if todo and hasattr(self.task, "score_batch"):  # every row not verified yet, repeats too: as TRL calls it
            got = self._batch([answers[i] for i in todo], [items[i] for i in todo], _rows(trl, todo))
            for i, verdict_ in zip(todo, got or ()):
                self._cache[keys[i]] = verdict_
        for i in todo:
            if keys[i] not in self._cache:
                row = _rows(trl, [i])
                self._cache[keys[i]] = (self._isolated(answers[i], items[i], row) if self.isolate
                                        else self._inline(answers[i], items[i], row))
        return [self._counted(self._cache[k], count) for k in keys]

    def _counted(self, cached: tuple[float, str], count: bool) -> float:
        value, outcome = cached
        if count:
            self.stats.calls += 1
            if outcome != "ok":
                setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        return value

    def batch_timeout(self, n: int) -> float:
        """A batch's limit: what its completions alone would have, up to ten verifications' worth (a batch
        that hangs costs at most that, then each completion is tried alone)."""
        return self.timeout * min(n, BATCH_LIMITS)

    def _batch(self, answers: list, items: list, trl: dict) -> list | None:
        """One batched call (None: it timed out, raised or its worker died: score each pair alone)."""
        if not self.isolate:
            try:
                return _score_batch(self.task, answers, items, trl)
            except Exception:  # noqa: BLE001 - each pair alone, below
                return None
        try:
            reply = self._live().ask(("batch", answers, items, trl), self.batch_timeout(len(answers)))
        except Dead:
            reply = None
        if reply is None:
            self._replace()
        return reply[1] if reply is not None and reply[0] == "ok" else None

    def _inline(self, answer: str, item: Item, trl: dict | None = None) -> tuple[float, str]:
        try:
            if self.parses and _key(item) not in self._inline_references:
                self._inline_references[_key(item)] = self.task.parse_reference(item)
            return _score(self.task, answer, item, self._inline_references, trl), "ok"
        except Exception:  # noqa: BLE001
            return 0.0, "errors"

    def _isolated(self, answer: str, item: Item, trl: dict | None = None) -> tuple[float, str]:
        key = _key(item)
        if key in self._bad_references:
            return 0.0, self._bad_references[key]
        for _ in range(2):  # a worker that died is replaced and the verification retried once
            worker = self._live()
            try:
                if self.parses and key not in worker.references:
                    reply = worker.ask(("reference", item), self.timeout)
                    if reply is None or reply[0] != "ok":  # parsed once: a bad reference is not tried again
                        self._bad_references[key] = "timeouts" if reply is None else "errors"
                        if reply is None:
                            self._replace()
                        return 0.0, self._bad_references[key]
                    worker.references.add(key)
                reply = worker.ask(("score", answer, item, trl), self.timeout)
            except Dead:
                self._replace()
                continue
            if reply is None:
                self._replace()
                return 0.0, "timeouts"
            return (reply[1], "ok") if reply[0] == "ok" else (0.0, "errors")
        return 0.0, "errors"

    def _live(self) -> Worker:
        if self._worker is None:
            self.start()
        try:
            self._worker.wait_ready()  # start-up is never part of a verification's limit
        except RunFailed:  # it died before it was ready (a spare the OOM killer took): one fresh start
            self._worker = Worker(self.task, self._warm, self.timeout)
            self._worker.wait_ready()
        return self._worker

    def _replace(self) -> None:
        """Kill the current worker; the warm spare takes its place (a fresh one if the spare died too)
        and a new spare starts behind it."""
        self.stats.restarts += 1
        self._worker.kill()
        spare = self._spare
        if spare is None or not spare.proc.is_alive():
            if spare is not None:
                spare.kill()
            spare = Worker(self.task, self._warm, self.timeout)
        self._worker, self._spare = spare, Worker(self.task, self._warm, self.timeout)

    def close(self) -> None:
        for w in (self._worker, self._spare):
            if w is not None:
                w.kill()
        self._worker = self._spare = None

    def __getstate__(self):  # scorers travel to eval helpers; the worker processes do not
        state = self.__dict__.copy()
        state["_worker"] = state["_spare"] = None
        return state
