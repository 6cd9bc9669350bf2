"""Kill a run with SIGKILL at a chosen moment, then resume it: the resume tests' tool.

Each run is a real process, killed for real (`npo.rundir.faults`: `NPO_KILL_AT=POINT[:N]`), forked from a
forkserver that imported npo, torch, TRL and DeepSpeed once (accelerate imports DeepSpeed at a run's
first model unwrap: 1 s), so a kill costs the run's work, not ~7 s of imports. `kill_chain` starts a
run, kills it at the first point, resumes and kills it at the next, and so on, then resumes it to the
end in this process.
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
        _context.set_forkserver_preload(["npo.loops.run", "npo.cli.main", "npo.cli.compare", "npo.cli.demo", "deepspeed"])
    return _context


def _main(argv: list[str], kill_at: str | None, stderr: str | None = None, file_limit: int | None = None) -> None:
    from conftest import LAUNCHER_KEYS

    for key in LAUNCHER_KEYS:  # one process, whatever a test before it left in the environment
        os.environ.pop(key, None)
    if kill_at:
        os.environ["NPO_KILL_AT"] = kill_at
    if file_limit:  # a file-size limit (ulimit -f): a write past it fails with EFBIG, as on a full disk
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
    if stderr:  # the process's and its children's (verifier workers') file descriptor 2
        fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)
    from npo.cli.main import main

    sys.exit(main(argv))


def start(argv: list[str], kill_at: str | None = None, stderr: str | None = None, file_limit: int | None = None):
    """`npo ARGV` started in a process of its own (`stderr`: a file its error output goes to;
    `file_limit`: bytes no file it writes may pass)."""
    process = _forkserver().Process(target=_main, args=(argv, kill_at, stderr and str(stderr), file_limit))
    process.start()
    return process


def npo(argv: list[str], kill_at: str | None = None) -> int:
    """`npo ARGV` in a process of its own; its exit code (-9: killed by SIGKILL)."""
    process = start(argv, kill_at)
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
    from npo.cli.main import main

    return main(["train", "--resume", str(out), "--quiet"])
