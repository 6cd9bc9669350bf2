"""`npo compare CONFIG [CONFIG ...] [--seeds N] [--out DIR]`: the same runs for every config and seed
(paired: a seed fixes data order and sampling in every method), then one report (npo.report).

A config may be named `NAME=PATH` (default name: the file's stem); the first is the baseline whose
mean final accuracy is the target. Every config is validated and every run folder checked before
the first run starts. `npo demo` is the same job over presets of one config (npo.demo).

Re-run into the same `--out`, a comparison continues: finished runs of the same plan are not run
again, a killed run resumes (`npo train --resume`), and a folder holding runs of another plan is
refused before any work.
"""

from __future__ import annotations

from pathlib import Path

from npo.config import load_config
from npo.errors import UserError
from npo.report import write_report
from npo.runlock import FolderLock
from npo.train import claim, prepare, train


def parse_specs(specs: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).stem, spec
        if not name or name in out:
            raise UserError(f"compare: config {spec!r}: empty or repeated name (use NAME=PATH)")
        out[name] = Path(path)
    return out


def run_methods(methods: dict[str, tuple[Path, list[str]]], seeds: int, out: Path, commands: list[str],
                show_progress: bool = True, **report) -> dict:
    """methods: name -> (config, overrides), baseline first. Trains every method for seeds 0..N-1
    (seed-major, so a partial comparison is still paired) into out/runs/NAME-sS, then writes the report
    (`report`: write_report's title and appendix)."""
    if seeds < 1:
        raise UserError("--seeds: must be >= 1")
    preps = {}
    for name, (path, overrides) in methods.items():  # everything that can fail on bad input, before any work
        for seed in range(seeds):
            cfg = load_config(path, [*overrides, f"seed={seed}"])
            preps[name, seed] = prepare(cfg, out / "runs" / f"{name}-s{seed}", resume=True)
    planned = {p.out.name for p in preps.values()}
    runs = out / "runs"
    others = sorted(p.name for p in runs.iterdir() if p.name not in planned) if runs.is_dir() else []
    if others:
        raise UserError(f"{out}: holds runs of another plan ({', '.join(others)}): choose another --out")
    lock = FolderLock(out).acquire()  # one comparison per folder; then every run's own folder
    for prep in preps.values():
        if prep.status != "finished":
            claim(prep)
    folders: dict[str, list[Path]] = {name: [] for name in methods}
    for i, (name, seed) in enumerate((n, s) for s in range(seeds) for n in methods):
        prep = preps[name, seed]
        state = {"finished": " (finished before: not run again)", "resume": " (resuming)"}.get(prep.status, "")
        if show_progress or state:  # what a re-run skips or resumes is said even when quiet
            print(f"[{i + 1}/{len(preps)}] {name}, seed {seed}{state}", flush=True)
        train(prep, show_progress=show_progress, label=f"{name} s{seed}")
        folders[name].append(preps[name, seed].out)
    result = write_report(folders, out, commands, **report)
    lock.release()
    return result


def run_compare(specs: list[str], seeds: int, out: Path, overrides: list[str] = (), show_progress: bool = True,
                command: str = "") -> dict:
    methods = {name: (path, list(overrides)) for name, path in parse_specs(specs).items()}
    return run_methods(methods, seeds, out, [command], show_progress)
