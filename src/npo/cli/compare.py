"""`npo compare CONFIG [CONFIG ...] [--seeds N] [--out DIR]`: the same runs for every config and seed
(paired: a seed fixes data order and sampling in every method), then one report (npo.cli.report).

A config may be named `NAME=PATH` (default name: the file's stem); the first is the baseline whose
mean final accuracy is the target. A bare method name -- grpo, self, npo, autonpo, luffy, exgrpo,
rlep -- is that preset over `--config` (default configs/demo.yaml; `npo.config.presets.METHOD_PRESETS`).
Every config is validated and every run folder checked before the first run starts. `npo demo` is the
same job over presets of one config (npo.cli.demo).

RLEP replays a finished run's verified successes. Without `--pool`, the comparison makes that run
first: GRPO on the same config with seed POOL_SEED (no seed of the comparison), then `npo pool` over
its last checkpoint (k = POOL_K answers per training prompt) into OUT/pool/pool.jsonl. Its cost is
not booked to RLEP's runs (RLEP's paper does not count its seed run either); the report says so.

Re-run into the same `--out`, a comparison continues: finished runs of the same plan are not run
again, a killed run resumes (`npo train --resume`), and a folder holding runs of another plan is
refused before any work.
"""

from __future__ import annotations

from pathlib import Path

from npo.api import NPOTrainer, api_arguments
from npo.cli.pool import build_pool
from npo.cli.report import write_report
from npo.config.presets import DEFAULT_CONFIG, METHOD_PRESETS
from npo.config.run import load_config
from npo.errors import UserError
from npo.loops.run import Prepared, claim, train
from npo.rundir.lock import FolderLock

POOL_SEED, POOL_K = 1000, 4


def parse_specs(specs: list[str], base: Path | None = None) -> dict[str, tuple[Path, list[str]]]:
    """name -> (config, overrides) of each `[NAME=]CONFIG` or preset name (over `base`)."""
    out: dict[str, tuple[Path, list[str]]] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep and spec in METHOD_PRESETS and not Path(spec).is_file():
            name, path, sets = spec, str(base or DEFAULT_CONFIG), list(METHOD_PRESETS[spec])
        elif not sep:
            name, path, sets = Path(spec).stem, spec, []
        else:
            sets = []
        if not name or name in out:
            raise UserError(f"compare: config {spec!r}: empty or repeated name (use NAME=PATH)")
        out[name] = (Path(path), sets)
    return out


def needs_pool(cfg) -> bool:
    return cfg.method == "rlep" and cfg.npo.source == "pool:"


def prepared(cfg, out: Path) -> Prepared:
    """A run of the comparison, checked and set up as `npo train` does it (through npo.api), to resume
    or to skip when the folder holds it already."""
    return NPOTrainer(**api_arguments(cfg, out), resume=True).prepared


def make_pool(path: Path, overrides: list[str], out: Path, show_progress: bool) -> Path:
    """RLEP's pool for a comparison without --pool: a GRPO run of seed POOL_SEED on the config, then its
    verified successes (resumes like every run of the comparison; the pool is written once)."""
    pool = out / "pool" / "pool.jsonl"
    if not pool.exists():
        sets = [x for x in overrides if not x.startswith(("method=", "npo.", "replay."))]
        prep = prepared(load_config(path, [*sets, *METHOD_PRESETS["grpo"], f"seed={POOL_SEED}"]),
                        out / "pool" / "grpo-source")
        if show_progress:
            print(f"[pool] RLEP's pool: GRPO seed {POOL_SEED}, then npo pool --k {POOL_K}", flush=True)
        train(prep, show_progress=show_progress, label=f"grpo s{POOL_SEED} (pool)")
        build_pool(str(prep.out), k=POOL_K, out=str(pool), show_progress=show_progress)
    return pool


def run_methods(methods: dict[str, tuple[Path, list[str]]], seeds: int, out: Path, commands: list[str],
                show_progress: bool = True, **report) -> dict:
    """methods: name -> (config, overrides), baseline first. Trains every method for seeds 0..N-1
    (seed-major, so a partial comparison is still paired) into out/runs/NAME-sS, then writes the report
    (`report`: write_report's title and appendix)."""
    if seeds < 1:
        raise UserError("--seeds: must be >= 1")
    configs = {(name, seed): load_config(path, [*overrides, f"seed={seed}"])  # every field, before any work
               for name, (path, overrides) in methods.items() for seed in range(seeds)}
    pooled = [name for name in methods if needs_pool(configs[name, 0])]
    preps = {key: prepared(cfg, out / "runs" / f"{key[0]}-s{key[1]}")
             for key, cfg in configs.items() if key[0] not in pooled}
    planned = {f"{name}-s{seed}" for name, seed in configs}
    runs = out / "runs"
    others = sorted(p.name for p in runs.iterdir() if p.name not in planned) if runs.is_dir() else []
    if others:
        raise UserError(f"{out}: holds runs of another plan ({', '.join(others)}): choose another --out")
    lock = FolderLock(out).acquire()  # one comparison per folder; then every run's own folder
    for name in pooled:  # RLEP's pool is the comparison's first work; then its runs are checked like the others
        path, overrides = methods[name]
        pool = make_pool(path, overrides, out, show_progress)
        for seed in range(seeds):
            cfg = load_config(path, [*overrides, f"npo.source=pool:{pool}", f"seed={seed}"])
            preps[name, seed] = prepared(cfg, out / "runs" / f"{name}-s{seed}")
    if pooled and report.get("appendix") is None:
        report["appendix"] = lambda result: POOL_NOTE
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


POOL_NOTE = (f"## RLEP's pool\n\nRLEP replays the verified successes of a finished GRPO run of another seed "
             f"({POOL_SEED}; `pool/grpo-source`), {POOL_K} answers sampled per training prompt by its last checkpoint "
             f"(`pool/pool.jsonl`). That run's steps and tokens are not booked to RLEP's runs.\n")


def run_compare(specs: list[str], seeds: int, out: Path, overrides: list[str] = (), show_progress: bool = True,
                command: str = "", base: str | None = None, pool: str | None = None) -> dict:
    methods = {name: (path, [*sets, *overrides]) for name, (path, sets) in
               parse_specs(specs, Path(base) if base else None).items()}
    if pool:  # RLEP's pool given: every rlep method replays it
        methods = {name: (path, [*sets, f"npo.source=pool:{pool}"] if "method=rlep" in sets else sets)
                   for name, (path, sets) in methods.items()}
    return run_methods(methods, seeds, out, [command], show_progress)
