"""Resuming a run: `npo train --resume RUN`, and `npo compare` / `npo demo` re-run into the same folder.

`run_status` says what a folder holds for a planned config: nothing yet, a finished run, or a run to
resume; a folder of another config is refused (one line, exit 2). `recover` (the main process, before
anything is trained) puts a killed run's folder back into a state it could have been left in without
a crash, then reads the run's books (`npo.rundir.journal`):
  1. completes the multi-file operation the journal records as pending (AutoNPO's discard);
  2. removes checkpoint folders without a complete marker (a crash during their write), saying so;
  3. cuts every metrics.jsonl / eval.jsonl back to the last complete checkpoint of its folder (a
     look-ahead folder without one loses all its lines): those steps run again, and appear once;
  4. rewrites events.jsonl from the journal (events of a stage that never committed go).
Each segment then continues from its latest complete checkpoint (`npo.loops.segment.run_segment`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from npo.config.run import RunConfig, dump_yaml, resolved
from npo.errors import UserError
from npo.rundir.journal import Journal
from npo.rundir.layout import (
    EVALS,
    METRICS,
    RunDir,
    checkpoint_folder,
    checkpoint_folders,
    checkpoint_state,
    complete_steps,
    move_steps,
    read_jsonl,
    write_jsonl,
)
from npo.rundir.lock import LOCK, is_empty


def run_status(out: Path, cfg: RunConfig, items: list | None = None) -> str:
    """'new' (absent, empty, or started but never past its first write), 'finished' or 'resume'. The
    config is compared as parsed (a comment edited into config.yaml is no change); a run to resume must
    also be the run its journal started: the same resolved config and data (`items`, the run's train +
    held-out items), else one line names what differs."""
    run = RunDir(out)
    if not out.exists() or (out.is_dir() and is_empty(out)):
        return "new"
    if not run.config.is_file():
        raise UserError(f"{out}: exists and is not a run folder (no config.yaml)")
    planned = parsed(cfg)
    try:
        found = yaml.safe_load(run.config.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise UserError(f"{run.config}: not readable as YAML (damaged?)") from None
    if planned != found:
        raise UserError(f"{out}: holds a run of another config ({_first_difference(planned, found)} differs): "
                        "choose another --out")
    if _complete_json(run.summary):
        return "finished"
    if not run.state.is_file():
        return "new"  # killed before its journal was written: nothing was trained
    journal = Journal.load(run.state)  # a run of another npo version is refused here
    started = journal.fingerprint
    if started is not None:
        if started.get("config") != planned:
            field = _first_difference(planned, started.get("config"))
            raise UserError(f"{out}: config.yaml differs from the config the run started with ({field}; "
                            f"{RunDir(out).relative(run.state)} keeps it): a resume continues the killed run as it "
                            "was; undo the edit, or start a new run in another --out")
        if items is not None and started.get("data") != data_fingerprint(items):
            raise UserError(f"{out}: the data of task.spec {cfg.task.spec} differs from the data the run started "
                            "with (its rows changed since): a resume continues the killed run as it was; restore "
                            "them, or start a new run in another --out")
    return "resume"


def fingerprint(cfg: RunConfig, items: list) -> dict:
    """What a run starts from, kept in its journal: the resolved config as parsed, and its data."""
    return {"config": parsed(cfg), "data": data_fingerprint(items)}


def parsed(cfg: RunConfig) -> dict:
    """The resolved config as config.yaml holds it, read back: what two runs' configs are compared as."""
    return yaml.safe_load(dump_yaml(resolved(cfg)))


def data_fingerprint(items: list) -> str:
    """A hash of the run's items in order (question, reference, image): a data file, a procedural task's
    draws and a Python dataset alike."""
    digest = hashlib.sha256()
    for it in items:
        digest.update(json.dumps([it.question, it.answer, it.image]).encode())
    return digest.hexdigest()


def _first_difference(a, b, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "the config"


def _complete_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


def clear(out: Path) -> None:
    """A folder whose run never got past its first write starts over."""
    for p in out.iterdir():
        if p.name != LOCK:  # the lock this run holds
            shutil.rmtree(p) if p.is_dir() else p.unlink()


@dataclass
class Recovered:
    books: dict  # the latest snapshot of the run's books
    step: int  # the final trajectory's last complete checkpoint (0: none)


def recover(run: RunDir, journal: Journal, repair: bool, say=lambda line: print(line, file=sys.stderr)
            ) -> Recovered:
    """Where a killed run stands, its journal numbering snapshots after the latest. `repair` (the main
    process, while the others wait): first measure what the crash lost (from the later of the last
    snapshot and the last resume, to the last write), then repair the folder (see the module's
    docstring), then count the resume in the journal."""
    books = latest_books(run, journal)
    journal.seq = max(journal.seq, books.get("seq", 0))  # later snapshots must outrank every earlier one
    if repair:
        last_write = max((p.stat().st_mtime for p in run.root.rglob("*") if p.is_file()), default=time.time())
        crashes = journal.crashes
        lost = max(0.0, last_write - max(books.get("time", last_write), crashes["resumed_at"] or 0))
        _repair(run, journal, say)
        crashes.update(resumes=crashes["resumes"] + 1, lost_seconds=crashes["lost_seconds"] + lost,
                       resumed_at=time.time())
        journal.save()
    return Recovered(books, max(run.checkpoint_steps(), default=0))


def _repair(run: RunDir, journal: Journal, say) -> None:
    pending = (journal.pending or {}).get("move_steps")
    if pending:
        move_steps(run, pending["after"], pending["upto"], run.root / pending["folder"])
        say(f"resume: completed moving steps ({pending['after']}, {pending['upto']}] to {pending['folder']}")
        journal.pending = None  # saved by `recover`
    for tmp in run.root.rglob(".*.tmp"):  # an atomic write cut short
        tmp.unlink()
    for folder in run.segment_folders():
        complete = complete_steps(folder)
        for step, path in sorted(checkpoint_folders(folder).items()):
            if step not in complete:
                shutil.rmtree(path)
                have = [s for s in complete if s < step]
                back = f"checkpoint-{have[-1]}" if have else "the segment's start"
                say(f"resume: {run.relative(path)} is incomplete (a crash during its write): removed; "
                    f"continuing from {back}")
        main = folder == run.checkpoints  # the final trajectory's logs are in the run's root
        last = max(complete, default=0 if main else -1)
        for path in (run.metrics, run.evals) if main else (folder / METRICS, folder / EVALS):
            if path.exists():
                keep = [r for r in read_jsonl(path) if r["step"] <= last]
                if len(keep) != len(path.read_text().splitlines()):  # later steps, or a torn last line
                    write_jsonl(path, keep)
    write_jsonl(run.events, journal.events)


def latest_books(run: RunDir, journal: Journal) -> dict:
    """The run's latest books: the journal's, or a checkpoint marker's if one is later."""
    snapshots = [journal.books]
    for folder in run.segment_folders():
        snapshots += [checkpoint_state(checkpoint_folder(folder, step))["books"] for step in complete_steps(folder)]
    banks = run.root / "guides"  # a bank made ahead is saved with the books of its making (its verifications)
    if banks.is_dir():
        snapshots += [json.loads(p.read_text()).get("books") or {} for p in sorted(banks.glob("*.json"))]
    return max(snapshots, key=lambda books: books.get("seq", 0))
