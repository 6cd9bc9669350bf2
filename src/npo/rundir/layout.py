"""The run directory: atomic files, append-only JSONL logs, and where each thing lives. Every name
of a file or folder in a run is spelled here and nowhere else.

Layout (everything needed to understand and resume a run)::

    RUN/config.yaml          the resolved config, exactly what ran (every GRPO value npo sets included)
    RUN/trl_args.json        every field of the trl.GRPOConfig the run built, TRL's defaults included
    RUN/model.json           the model folder the run started from and the prompt style
    RUN/metrics.jsonl        one line per optimizer step (keys documented in docs/run-directory.md "Metrics")
    RUN/eval.jsonl           one line per evaluation (step 0 is the starting policy)
    RUN/events.jsonl         interventions and other decisions (NPO / AutoNPO)
    RUN/run_state.json       the run's journal: stages done, events, books, a pending file operation
                             (npo.rundir.journal; what `npo train --resume` continues from)
    RUN/checkpoints/         checkpoint-<step>/: weights, optimizer, scheduler, RNG, trainer state
                             + npo_state.json, written last: the files' sizes and sampled digests (the
                             folder is complete only when every file is there as marked), the run's books, the AutoNPO
                             controller's observations and the watch that stopped there
    RUN/lookahead/<i>-<kind>/  a discarded look-ahead: its metrics.jsonl, eval.jsonl, checkpoints
    RUN/guides/<i>-<kind>.json the guide bank of intervention i (with its generation stats)
    RUN/guides/<i>-<kind>.controls.json  npo.controls: its window's assignments and their accuracy after
    RUN/signal/step-<T>[-backward].{json,png}  `npo signal`
    RUN/summary.json         written last; its presence means the run finished

Every file is written atomically (a temp file renamed) except the append-only JSONL logs, whose
torn last line a reader skips and a resume removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from npo.rundir.faults import crash_point

CHECKPOINT_STATE = "npo_state.json"  # inside a checkpoint folder, written last
METRICS, EVALS = "metrics.jsonl", "eval.jsonl"


def default_out(config_path: str | None, prefix: str = "") -> str:
    """runs/<config name>-<time>: where a command writes when no --out is given."""
    stem = Path(config_path).stem if config_path else "run"
    return str(Path("runs") / f"{prefix}{stem}-{time.strftime('%Y%m%d-%H%M%S')}")


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line. A line is written with a single write call, so a crash can at worst
    leave a truncated last line, which `read_jsonl` skips."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)  # never through a planted link
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    """Replace a JSONL file atomically."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line after a crash
    return records


class RunDir:
    """Paths of one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    config = property(lambda self: self.root / "config.yaml")
    trl_args = property(lambda self: self.root / "trl_args.json")
    model_json = property(lambda self: self.root / "model.json")
    metrics = property(lambda self: self.root / METRICS)
    evals = property(lambda self: self.root / EVALS)
    events = property(lambda self: self.root / "events.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    summary = property(lambda self: self.root / "summary.json")
    state = property(lambda self: self.root / "run_state.json")

    def checkpoint(self, step: int) -> Path:
        return checkpoint_folder(self.checkpoints, step)

    def checkpoint_steps(self) -> list[int]:
        """The steps of the final trajectory's complete checkpoints."""
        return complete_steps(self.checkpoints)

    def lookahead(self, index: int, kind: str) -> Path:
        """The folder of intervention `index`'s discarded look-ahead (its own metrics and checkpoints)."""
        return self.root / "lookahead" / f"{index}-{kind}"

    def guide_bank(self, index: int, kind: str) -> Path:
        return self.root / "guides" / f"{index}-{kind}.json"

    def controls(self, index: int, kind: str) -> Path:
        """npo.controls: the assignments of intervention `index`'s window, and each prompt's accuracy after it."""
        return self.root / "guides" / f"{index}-{kind}.controls.json"

    def controls_files(self) -> list[tuple[int, Path]]:
        """(intervention index, path) of every window's `controls` file, in the order of the index."""
        found = [(int(p.name.partition("-")[0]), p) for p in (self.root / "guides").glob("*.controls.json")]
        return sorted(found)

    def signal(self, step: int, backward: bool) -> Path:
        """`npo signal`'s output, without its suffix (.json and .png)."""
        return self.root / "signal" / f"step-{step}{'-backward' if backward else ''}"

    def segment_folders(self) -> list[Path]:
        """Every folder of checkpoints: the final trajectory's, then each look-ahead's or discarded segment's."""
        looks = self.root / "lookahead"
        return [self.checkpoints, *(sorted(p for p in looks.iterdir() if p.is_dir()) if looks.is_dir() else [])]

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))


def checkpoint_folder(folder: Path, step: int) -> Path:
    """Where HF's Trainer writes the checkpoint of `step` under its output folder."""
    return Path(folder) / f"checkpoint-{step}"


def checkpoint_folders(folder: Path) -> dict[int, Path]:
    """step -> checkpoint folder under `folder`, complete or not."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {int(p.name.split("-")[1]): p for p in folder.iterdir()
            if p.is_dir() and p.name.startswith("checkpoint-") and p.name.split("-")[1].isdigit()}


SAMPLE_BYTES = 1 << 16  # of each checkpoint file's start, middle and end, hashed into its marker


def file_marks(folder: Path) -> dict[str, list]:
    """Every file under a checkpoint folder (its marker aside) -> [size, digest of three samples]: the
    digest costs the same for a 1 KB and a 16 GB file, and catches a file cut, extended, or overwritten
    (with garbage of the same size, say) anywhere it samples; not a flipped bit between the samples."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): [p.stat().st_size, sampled_digest(p)] for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != CHECKPOINT_STATE}


def sampled_digest(path: Path) -> str:
    size, digest = path.stat().st_size, hashlib.sha256()
    with open(path, "rb") as f:
        for at in sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)}):
            f.seek(at)
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def mark_complete(folder: Path, state: dict) -> None:
    """The last write of a checkpoint: its marker, with the size and sampled digest of every file it holds."""
    atomic_write_json(Path(folder) / CHECKPOINT_STATE, {**state, "files": file_marks(folder)})


def checkpoint_state(folder: Path) -> dict | None:
    """A checkpoint's marker if the checkpoint is complete (every file listed there, at its size and
    digest), else None: a checkpoint cut short by a crash, or damaged later, is never loaded (a resume
    falls back to the previous whole one); a damaged marker counts as none."""
    try:
        state = json.loads((Path(folder) / CHECKPOINT_STATE).read_text())
        files = state["files"]
        for name, (size, digest) in files.items():
            path = Path(folder) / name
            if not path.is_file() or path.stat().st_size != size or sampled_digest(path) != digest:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(state.get("books", {}), dict):
        return None
    return state


def complete_steps(folder: Path) -> list[int]:
    """The steps of the complete checkpoints under `folder`."""
    return sorted(s for s, p in checkpoint_folders(folder).items() if checkpoint_state(p) is not None)



def move_steps(run: RunDir, after: int, upto: int, folder: Path) -> None:
    """Move the final trajectory's steps (after, upto] into `folder`: their checkpoints (each an atomic
    rename), metrics and evaluation lines (the folder's copy written before the trajectory's file is
    cut). Idempotent: calling it again completes a move a crash interrupted."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for step, path in sorted(checkpoint_folders(run.checkpoints).items()):
        if after < step <= upto:
            os.replace(path, checkpoint_folder(folder, step))
            crash_point("discard")
    for path, name in ((run.metrics, METRICS), (run.evals, EVALS)):
        records = read_jsonl(path)
        moved = [r for r in records if r["step"] > after]
        if moved:
            write_jsonl(folder / name, moved)
            write_jsonl(path, [r for r in records if r["step"] <= after])
