"""The restructuring contract (issue 11): on CPU the same configs give the same `metrics.jsonl`,
`eval.jsonl` and `events.jsonl`, timing fields aside, as the code before it.

`tests/data/golden/` holds those files of `npo demo --quick` (four runs) and of the AutoNPO run of
`configs/tiny-autonpo.yaml` at test size (AUTONPO_SHORT), one recording per processor family, named by
the first 16 hex digits of the warm start's hash, recorded by

    OMP_NUM_THREADS=1 .venv/bin/python tests/golden.py      # writes tests/data/golden/<hash>.json

with the processor's name and torch's thread count (`make test` runs one thread per process): CPU
numerics differ between processor families (an AMD EPYC and an Intel Xeon build different warm starts
from the same seed) and between thread counts, so the warm start's bytes say which recording a machine
can match. tests/conftest.py trains every test single-threaded; on a machine with no recording for its
warm start, the comparison fails and says so.

When to record: on a new processor family, only at a commit whose comparison passes on a recorded
machine (so both recordings pin the same code); for a change that means to alter training, record on
the machine at hand, delete the recordings it cannot remake, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = ROOT / "tests" / "data" / "golden"
AUTONPO_SHORT = ["train.steps=30", "train.checkpoint_every=5", "eval.every=10", "eval.n=50", "eval.samples=0",
                 "autonpo.warmup_steps=10", "autonpo.r_low=0.9", "autonpo.deltas=[5]", "autonpo.window=5",
                 "autonpo.cooldown=100", "autonpo.signal_prompts=16", "autonpo.signal_k=2"]
FILES = ("metrics.jsonl", "eval.jsonl", "events.jsonl")
TIMING_KEYS = {"train/step_time", "seconds", "lookahead_seconds", "guide_seconds"}
MEASURED_IN = re.compile(r" \(measured in [0-9.]+ s\)")


def _strip(value):
    """A record with its wall-clock fields removed, recursively."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, str):
        return MEASURED_IN.sub("", value)
    return value


def normalized(run: Path) -> dict[str, list[dict]]:
    out = {}
    for name in FILES:
        path = run / name
        out[name] = [_strip(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []
    return out


def warm_start_hash(model_path: Path) -> str:
    return hashlib.sha256((Path(model_path) / "model.safetensors").read_bytes()).hexdigest()


def recording_path(warm_sha256: str) -> Path:
    """The recording a machine whose warm start has this hash can match."""
    return RECORDINGS / f"{warm_sha256[:16]}.json"


def machine() -> str:
    """The processor and torch's vector unit, for the reader of a recording (the hash is what matches)."""
    import platform

    import torch

    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{names[0] if names else platform.processor()}, torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}"


def collect(demo_out: Path, autonpo_run: Path) -> dict:
    runs = {f"demo/{p.name}": normalized(p) for p in sorted((demo_out / "runs").iterdir())}
    runs["autonpo-short"] = normalized(autonpo_run)
    model = json.loads((autonpo_run / "model.json").read_text())["model_path"]
    return {"warm_start_sha256": warm_start_hash(Path(model)), "torch_threads": torch_threads(), "machine": machine(),
            "runs": runs}


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def record() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from npo.cli.main import main
    from npo.config.run import load_config
    from npo.loops.run import prepare, train

    import conftest  # noqa: F401  (the tests' cache and offline settings)

    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo"
        assert main(["demo", "--quick", "--out", str(demo), "--quiet"]) == 0
        cfg = load_config(ROOT / "configs" / "tiny-autonpo.yaml", AUTONPO_SHORT)
        train(prepare(cfg, Path(tmp) / "autonpo"), show_progress=False)
        recording = collect(demo, Path(tmp) / "autonpo")
    path = recording_path(recording["warm_start_sha256"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recording, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    record()
