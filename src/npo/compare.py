"""`npo compare CONFIG [CONFIG ...] [--seeds N] [--out DIR]`: the same runs for every config and seed
(paired: a seed fixes data order and sampling in every method), then one report (npo.report).

A config may be named `NAME=PATH` (default name: the file's stem); the first is the baseline whose
mean final accuracy is the target. Every config is validated and every run folder checked before
the first run starts.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from npo.errors import UserError


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


def run_compare(specs: list[str], seeds: int, out: Path, overrides: list[str] = (), show_progress: bool = True,
                argv: list[str] | None = None) -> dict:
    from npo.config import load_config
    from npo.report import write_report
    from npo.train import prepare, train

    if seeds < 1:
        raise UserError("--seeds: must be >= 1")
    configs = parse_specs(specs)
    preps = {}
    for name, path in configs.items():  # everything that can fail on bad input, before any work
        for seed in range(seeds):
            cfg = load_config(path, [*overrides, f"seed={seed}"])
            preps[name, seed] = prepare(cfg, out / "runs" / f"{name}-s{seed}")
    folders: dict[str, list[Path]] = {name: [] for name in configs}
    for seed in range(seeds):
        for name in configs:
            prep = preps[name, seed]
            train(prep, show_progress=show_progress)
            folders[name].append(prep.out)
    command = "npo " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    return write_report(folders, out, [command])
