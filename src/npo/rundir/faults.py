"""Crash points, for the resume tests and benchmarks/kill_resume.py.

`NPO_KILL_AT=POINT[:N]` ends this process with SIGKILL the N-th time (default 1) it passes the
crash point POINT: `step` (an optimizer step ended), `checkpoint` (a checkpoint's files are written,
its completion marker not yet), `lookahead` (a look-ahead ended, its guides not made), `measure`
(AutoNPO loaded a candidate to measure it), `discard` (AutoNPO moved one discarded checkpoint),
`commit` (a stage ended, its journal entry not written), `evaluated` (an evaluation's line written;
the first is the starting policy's, before any checkpoint). Unset, which is always outside those
tests, a crash point does nothing.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_passed: Counter = Counter()


def crash_point(name: str) -> None:
    spec = os.environ.get("NPO_KILL_AT")
    if not spec:
        return
    point, _, n = spec.partition(":")
    if point != name:
        return
    _passed[name] += 1
    if _passed[name] == int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)
