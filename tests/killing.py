"""Kill a run with SIGKILL at a chosen moment, then resume it: the resume tests' tool.

Each run is a real process, killed for real (`npo.faults`: `NPO_KILL_AT=POINT[:N]`), forked from a
forkserver that imported npo, torch and TRL once, so a kill costs the run's work, not ~6 s of
imports. `kill_chain` starts a run, kills it at the first point, resumes and kills it at the next,
and so on, then resumes it to the end in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys

_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = mp.get_context("forkserver")
        _context.set_forkserver_preload(["npo.train", "npo.cli", "npo.compare", "npo.demo"])
    return _context


def _main(argv: list[str], kill_at: str | None) -> None:
    if kill_at:
        os.environ["NPO_KILL_AT"] = kill_at
    from npo.cli import main

    sys.exit(main(argv))


def npo(argv: list[str], kill_at: str | None = None) -> int:
    """`npo ARGV` in a process of its own; its exit code (-9: killed by SIGKILL)."""
    process = _forkserver().Process(target=_main, args=(argv, kill_at))
    process.start()
    process.join()
    return process.exitcode


def kill_chain(first: list[str], out, points: list[str]) -> None:
    """`npo train FIRST --out OUT` killed at points[0], `npo train --resume OUT` killed at each next
    point; every one must have died by SIGKILL (a point the run never reached fails the test)."""
    argv = [*first, "--out", str(out), "--quiet"]
    for point in points:
        code = npo(argv, point)
        assert code == -signal.SIGKILL, f"{point}: the run was not killed there (exit code {code})"
        argv = ["train", "--resume", str(out), "--quiet"]


def resume(out) -> int:
    from npo.cli import main

    return main(["train", "--resume", str(out), "--quiet"])
