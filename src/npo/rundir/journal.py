"""The run's journal, `RUN/run_state.json`: what `npo train --resume` continues from.

A run's loop is a sequence of *stages* (reaching a plateau, one intervention, one AutoNPO trigger and
its decision). A stage ends by committing, in one atomic write of the journal: its result, the
events it produced (events.jsonl is a copy, rewritten from here on resume), and a snapshot of the
run's *books*. A resumed run runs its loop from the top: a committed stage returns its result without
running; the stage in progress runs again, and each of its training segments continues from its last
complete checkpoint (`npo.loops.segment.run_segment`).

Books are what no rollback undoes: the ledger (steps, tokens by kind, interventions), AutoNPO's own
decisions (`npo.algo.controller.Made`), evaluation and wall seconds. A snapshot is also written into every
checkpoint's marker; every snapshot carries a sequence number, and a resume takes the latest
(highest) one, wherever it is: what was spent after it was lost with the crash and is spent again.

A file operation that touches several files (AutoNPO's discard) is recorded as `pending` before it
starts and cleared when it is done; a resume completes it first (the operation is idempotent).
"""

from __future__ import annotations

import json
from importlib.metadata import version as _version
from pathlib import Path
from typing import Any

from npo.errors import UserError
from npo.rundir.layout import atomic_write_json

FORMAT = 1  # the journal's own layout; a run written by another npo version is not resumed
__version__ = _version("npo")
SHAPE = {"seq": int, "done": dict, "events": list, "books": dict, "pending": (dict, type(None)),
         "crashes": dict, "fingerprint": (dict, type(None))}


class Journal:
    def __init__(self, path: Path, version: str = __version__, seq: int = 0, done: dict | None = None,
                 events: list | None = None, books: dict | None = None, pending: dict | None = None,
                 crashes: dict | None = None, fingerprint: dict | None = None):
        self.path, self.version, self.seq = Path(path), version, seq
        self.done: dict[str, Any] = done or {}  # stage key -> its result
        self.events: list[dict] = events or []  # every event of the committed stages, in order
        self.books: dict = books or {}  # the snapshot taken at the last commit
        self.pending: dict | None = pending  # a multi-file operation under way
        # what crashes cost: resumes, seconds lost (work after the last snapshot, each resumed start-up),
        # and when the last resume began (written when it begins: never rolled back, never lost)
        self.crashes: dict = crashes or {"resumes": 0, "lost_seconds": 0.0, "resumed_at": None}
        # what the run started from (npo.rundir.resume.fingerprint): a resume over anything else is refused
        self.fingerprint: dict | None = fingerprint

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def save(self) -> None:
        atomic_write_json(self.path, {"format": FORMAT, "npo_version": self.version, "seq": self.seq,
                                      "done": self.done, "events": self.events, "books": self.books,
                                      "pending": self.pending, "crashes": self.crashes,
                                      "fingerprint": self.fingerprint})

    @classmethod
    def load(cls, path: Path) -> "Journal":
        """The journal of a run folder, or a one-line error when it cannot be resumed by this code."""
        try:
            data = json.loads(Path(path).read_text())
            fmt, version = data["format"], data["npo_version"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a resumable run state ({type(e).__name__})") from None
        if fmt != FORMAT or version != __version__:
            raise UserError(f"{path}: written by npo {version} (state format {fmt}); this is npo {__version__} "
                            f"(format {FORMAT}): resume it with the version that started it")
        for key, kind in SHAPE.items():  # a hand-edited or damaged journal: one line, not a KeyError later
            if not isinstance(data.get(key, ...), kind) or isinstance(data.get(key), bool):
                name = (kind if isinstance(kind, type) else kind[0]).__name__
                raise UserError(f"{path}: not a resumable run state ({key!r} missing or not a {name})")
        if not {"resumes", "lost_seconds", "resumed_at"} <= set(data["crashes"]):
            raise UserError(f"{path}: not a resumable run state ('crashes' incomplete)")
        return cls(path, version, data["seq"], data["done"], data["events"], data["books"], data["pending"],
                   data["crashes"], data.get("fingerprint"))
