"""One run per folder, and output folders checked before anything is written.

A run (and a comparison) holds an exclusive `flock` on `FOLDER/.npo.lock` while its process lives; the
kernel drops it when the process dies, so a killed run leaves no stale lock and `--resume` just works.
The file names its holder, so a second run into the same folder is refused with one line that says
who. `check_out` refuses, before any work, an output path that cannot be created or written.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from npo.errors import UserError

LOCK = ".npo.lock"


def is_empty(folder: Path) -> bool:
    """No entries but a lock file (a run refused or killed before its first write leaves only that)."""
    return not any(p.name != LOCK for p in folder.iterdir())


def check_out(out: Path, flag: str = "--out", write_test: bool = True) -> None:
    """`out` is a folder we can write in, or can be made one: tried, not guessed from permission bits
    (root passes every `os.access`, and /proc refuses anyway); what the try makes is removed again.
    Without `write_test` (a launch's other processes, after the main one tried) nothing is made: two
    processes making and removing the same folder at once fail each other ("File exists")."""
    if out.is_symlink() and not out.exists():
        raise UserError(f"{flag} {out}: a symbolic link to nothing ({os.readlink(out)}); remove it or name a folder")
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{flag} {out}: exists and is not a folder")
        try:
            if write_test:
                tempfile.TemporaryFile(dir=out).close()
        except OSError as exc:
            raise UserError(f"{flag} {out}: not writable ({exc.strerror})") from None
        return
    missing, parent = [], out.absolute()
    while not parent.exists() and not parent.is_symlink():
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {out}: cannot be created: {parent} is a file, not a folder")
    if not write_test:
        return
    made = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise UserError(f"{flag} {out}: cannot be created ({exc.strerror}{where})") from None
    finally:
        for folder in reversed(made):
            folder.rmdir()


class FolderLock:
    """`acquire` creates the folder and takes its lock, or raises a UserError naming the holder."""

    def __init__(self, folder: Path, flag: str = "--out"):
        self.folder, self.flag, self.fd = Path(folder), flag, None

    def acquire(self) -> "FolderLock":
        if self.fd is not None:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a link planted as the lock (a shared runs folder) must not make npo overwrite its target
            fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            what = "a symbolic link (npo does not follow it)" if exc.errno == errno.ELOOP else exc.strerror
            raise UserError(f"{self.flag} {self.folder}: cannot take its lock {LOCK}: {what}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace")
            os.close(fd)
            raise UserError(f"{self.flag} {self.folder}: in use by another run ({describe(holder)})") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime(
            "%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (its content is only informative)
            self.fd = None


def describe(holder: str) -> str:
    try:
        h = json.loads(holder)
        return f"pid {h['pid']} on {h['host']} since {h['since']}: {h['command']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet written its name"
