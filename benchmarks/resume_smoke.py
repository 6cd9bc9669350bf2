"""One run killed with SIGKILL at chosen moments and resumed, against the same run left alone, on
whatever device the run uses (the resume tests' check, for a machine with a GPU).

    .venv/bin/python benchmarks/resume_smoke.py --out runs/resume-smoke [--config configs/tiny-autonpo.yaml]
        [--kills measure:1,discard:1,step:3,commit:1] [--set train.steps=30 ...]

Prints one JSON line: the device, the seconds of the uninterrupted run and of the killed-and-resumed
chain, whether metrics/eval/events (timing aside) and the final weights are identical, and the largest
absolute difference of any final weight (exactness is the contract on CPU; on a GPU it is measured).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from golden import AUTONPO_SHORT, normalized  # noqa: E402
from killing import kill_chain, resume  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny-autonpo.yaml"))
    p.add_argument("--kills", default="measure:1,discard:1,step:3,commit:1")
    p.add_argument("--set", action="append", default=None, help="config overrides (default: the tests' size)")
    a = p.parse_args()
    import torch
    from safetensors.torch import load_file

    from npo.cli.main import main as npo

    out, sets = Path(a.out), a.set if a.set is not None else AUTONPO_SHORT
    reference, chain = out / "reference", out / "killed"
    t0 = time.perf_counter()
    assert npo(["train", a.config, "--out", str(reference), "--quiet", *(x for s in sets for x in ("--set", s))]) == 0
    t1 = time.perf_counter()
    kill_chain(["train", str(reference / "config.yaml")], chain, a.kills.split(","))
    assert resume(chain) == 0
    t2 = time.perf_counter()
    steps = json.loads((reference / "summary.json").read_text())["final_steps"]
    w = [load_file(str(r / "checkpoints" / f"checkpoint-{steps}" / "model.safetensors")) for r in (reference, chain)]
    diff = max(float((w[0][k].float() - w[1][k].float()).abs().max()) for k in w[0])
    files = {name: (normalized(chain)[name], lines) for name, lines in normalized(reference).items()}
    first = next(({"file": name, "step": x.get("step"),
                   "keys": sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))}
                  for name, (got, want) in files.items() for x, y in zip(got, want) if x != y), None)
    print(json.dumps({"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                      "first_difference": first,
                      "kills": a.kills, "reference_seconds": round(t1 - t0, 1), "chain_seconds": round(t2 - t1, 1),
                      "files_identical": normalized(chain) == normalized(reference), "weights_identical": diff == 0.0,
                      "max_weight_diff": diff}))


if __name__ == "__main__":
    main()
