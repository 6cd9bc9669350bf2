"""The GPU install, resolved for real by pip against the package registry: does `npo[gpu]` (vLLM beside
every pin of pyproject.toml) install on a Linux x86_64 node?

    python3 benchmarks/gpu_install.py            # about 2 minutes; pip fetches ~330 MB of metadata and sdists

It runs, in a throwaway virtual environment and with the machine's pip configuration ignored
(`--isolated`: no local wheels, no constraints, so torch resolves to the registry's CUDA build),

    pip install --dry-run --ignore-installed --no-build-isolation --report REPORT ".[gpu,tasks,math,report,peft,dev]"

and, when it resolves, rewrites the two files this resolution is kept in:

- `requirements/lock.txt`: every package of the resolved set, exact (`make` installs with `-c` it, so
  the CPU suite runs the versions a GPU node gets; GPU users install with `-c` it too);
- `tests/data/gpu_resolution.json`: each package's version and `Requires-Dist` lines, which
  `tests/test_pins.py` checks the pins against offline, so a bump that breaks the GPU install fails CI.

DeepSpeed has only a source distribution, and its setup imports torch: the venv gets the CPU torch
(the machine's local wheel) so that its metadata builds without an isolated build pulling a CUDA torch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = "gpu,tasks,math,report,peft,dev"
LOCK = ROOT / "requirements" / "lock.txt"
RECORD = ROOT / "tests" / "data" / "gpu_resolution.json"
PIP = "26.3"
CERT = os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")


def run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, **kw)


def resolve(work: Path) -> tuple[dict, float]:
    venv = work / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    pip = [str(venv / "bin" / "pip")]
    isolated = pip + ["--isolated", "--cert", CERT, "--disable-pip-version-check"]
    run(*isolated, "install", "-q", f"pip=={PIP}", "setuptools==80.9.0")
    run(*pip, "install", "-q", "torch==2.13.0")  # the machine's config: its local CPU wheel (DeepSpeed's build)
    report = work / "report.json"
    t0 = time.perf_counter()
    proc = subprocess.run(isolated + ["install", "--dry-run", "--ignore-installed", "--no-build-isolation",
                                      "--report", str(report), f"{ROOT}[{EXTRAS}]"],
                          text=True, capture_output=True, env={**os.environ, "DS_BUILD_OPS": "0"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        cause = next((i for i, ln in enumerate(lines) if "conflict is caused by" in ln), len(lines) - 12)
        print("does NOT resolve:\n" + "\n".join(lines[cause:cause + 12]))
        sys.exit(1)
    return json.loads(report.read_text()), seconds


def record(report: dict, seconds: float) -> None:
    packages = {}
    for item in report["install"]:
        meta = item["metadata"]
        name = re.sub(r"[-_.]+", "-", meta["name"]).lower()  # PEP 503, as packaging's canonicalize_name
        if name == "npo":
            continue
        packages[name] = {"version": meta["version"], "requires_dist": meta.get("requires_dist", []),
                          "requested_extras": sorted(item.get("requested_extras") or [])}
    command = f"pip install --dry-run --ignore-installed --no-build-isolation '.[{EXTRAS}]' (pip {PIP}, --isolated)"
    env = report.get("environment", {})
    RECORD.write_text(json.dumps({"command": command, "environment": env, "packages": packages},
                                 indent=1, sort_keys=True) + "\n")
    LOCK.parent.mkdir(exist_ok=True)
    lines = [f"# The resolved set of npo[{EXTRAS}] on {env.get('sys_platform')} {env.get('platform_machine')}, "
             f"Python {env.get('python_full_version')}",
             "# written by benchmarks/gpu_install.py (a real pip --dry-run against the registry); do not edit.",
             "# make installs with -c this file; GPU nodes: pip install -c requirements/lock.txt -e '.[gpu,...]'"]
    lines += [f"{name}=={p['version']}" for name, p in sorted(packages.items())]
    LOCK.write_text("\n".join(lines) + "\n")
    keys = ("torch", "vllm", "transformers", "trl", "accelerate", "deepspeed", "peft", "numpy", "huggingface-hub")
    print(f"resolves: {len(packages)} packages in {seconds:.0f} s; "
          + ", ".join(f"{k} {packages[k]['version']}" for k in keys if k in packages))
    cuda = sorted(n for n in packages if n.startswith("nvidia-") or n == "cuda-toolkit")
    print("CUDA packages of torch: " + ", ".join(f"{n} {packages[n]['version']}" for n in cuda))
    print(f"wrote {LOCK.relative_to(ROOT)} and {RECORD.relative_to(ROOT)}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report, seconds = resolve(Path(tmp))
    record(report, seconds)


if __name__ == "__main__":
    main()
