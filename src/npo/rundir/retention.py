"""Which checkpoints a run keeps whole, which it keeps as weights only, and which it removes.

A full checkpoint (weights, optimizer, scheduler, RNG) is needed only where a rollback or a resume
can land; the weights alone are enough for everything else npo reads from a checkpoint (`npo eval`,
`npo signal`, `npo pool`, a `checkpoint:` source, a look-ahead's guide). So after every save:

- full: the two latest checkpoints of every segment folder (a resume continues from the latest, or
  from the one before when it finds the latest torn; in the final trajectory the latest is also the
  start of a look-ahead, the rollback target t), and with AutoNPO every final-trajectory checkpoint
  within `horizon` = max(Delta) of the latest (a trigger at T rolls back to T - Delta*);
- weights only: every other checkpoint;
- removed: with `keep` > 0, the weights-only checkpoints of a folder beyond its `keep` newest
  (TRL's save_total_limit, which never touches a full checkpoint).

When the run has finished, no rollback or resume can come: only the final trajectory's last
checkpoint stays full (to continue training from it).

Stripping a checkpoint rewrites its completion marker first (atomically, listing the files that stay
and `weights_only: true`), then deletes the optimizer's files: a crash in between leaves a complete
weights-only checkpoint with some extra files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from npo.rundir.layout import CHECKPOINT_STATE, atomic_write_json, checkpoint_state, complete_steps

FULL, WEIGHTS, REMOVE = "full", "weights", "remove"
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
# What only a resume reads: HF's optimizer, scheduler and RNG files, DeepSpeed's optimizer shards
# (global_stepN/*optim_states.pt; its module states stay: a DeepSpeed rollback loads weights from them).
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "rng_state")


def retention(steps: dict[str, list[int]], main: str, horizon: int = 0, keep: int = 0,
              finished: bool = False, protect: set[int] = frozenset()) -> dict[str, dict[int, str]]:
    """The plan for every folder's complete checkpoints (`steps`: folder -> steps; `main`: the final
    trajectory's folder; `protect`: final-trajectory steps a caller will roll back to): step -> FULL,
    WEIGHTS or REMOVE."""
    plan = {}
    for folder, folder_steps in steps.items():
        ordered = sorted(folder_steps)
        latest = ordered[-1] if ordered else None
        newest_two = ordered[-2:]
        out = {}
        for step in ordered:
            if folder == main and step == latest:
                out[step] = FULL
            elif not finished and (step in newest_two or (folder == main and (step >= latest - horizon
                                                                              or step in protect))):
                out[step] = FULL
            else:
                out[step] = WEIGHTS
        if keep:
            weights_only = [s for s in ordered if out[s] == WEIGHTS]
            for step in weights_only[:max(0, len(weights_only) - keep)]:
                out[step] = REMOVE
        plan[folder] = out
    return plan


def is_training_state(name: str) -> bool:
    """`name`: a file's path inside a checkpoint folder."""
    base = Path(name).name
    return base.startswith(TRAINING_STATE) or base.endswith("optim_states.pt")


def apply_retention(folders: list[Path], main: Path, horizon: int = 0, keep: int = 0, finished: bool = False,
                    protect: set[int] = frozenset()) -> None:
    """Carry out `retention` on the complete checkpoints of `folders` (the run's segment folders)."""
    steps = {str(f): complete_steps(f) for f in folders}
    for folder, plan in retention(steps, str(main), horizon, keep, finished, protect).items():
        for step, what in plan.items():
            path = Path(folder) / f"checkpoint-{step}"
            if what == REMOVE:
                shutil.rmtree(path)
            elif what == WEIGHTS:
                strip(path)


def strip(path: Path) -> None:
    """Keep a checkpoint's weights, drop what only a resume needs. A checkpoint without a weights file
    (DeepSpeed ZeRO-3 keeps its weights in the optimizer's shards) is left whole."""
    state = checkpoint_state(path)
    if state is None or state.get("weights_only") or not any((path / name).is_file() for name in WEIGHT_FILES):
        return
    files = {n: size for n, size in state["files"].items() if not is_training_state(n)}
    atomic_write_json(path / CHECKPOINT_STATE, {**state, "files": files, "weights_only": True})
    for name in state["files"]:
        if is_training_state(name):
            (path / name).unlink(missing_ok=True)


def checkpoint_counts(run) -> dict:
    """Complete checkpoints of a run (`run`: an npo.rundir.layout.RunDir), all folders: whole and weights-only."""
    states = [checkpoint_state(p) for folder in run.segment_folders() for p in Path(folder).glob("checkpoint-*")]
    weights = sum(bool(s.get("weights_only")) for s in states if s is not None)
    return {"full": sum(s is not None for s in states) - weights, "weights_only": weights}


def disk_bytes(root: Path) -> int:
    """Bytes of every file under a run folder."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
