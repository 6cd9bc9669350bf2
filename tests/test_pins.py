"""The install story, checked offline: the exact pins of pyproject.toml, the lock file `make` installs
with (`requirements/lock.txt`) and the GPU set pip resolved for real (`tests/data/gpu_resolution.json`,
written with the lock by `benchmarks/gpu_install.py`) agree, and every pin satisfies what each package
of that set requires (its recorded `Requires-Dist` lines, markers evaluated for a Linux x86_64 node).
So a bump past vLLM's transformers cap, or a numpy that mistral-common refuses, fails here rather than
on a user's cluster."""

import tomllib
from importlib.metadata import distributions, requires
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT

RECORD = ROOT / "tests" / "data" / "gpu_resolution.json"
LOCK = ROOT / "requirements" / "lock.txt"
RERECORD = "re-resolve with `python3 benchmarks/gpu_install.py` (it rewrites the lock and the record)"


def pyproject_pins(path: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """Every `name==version` of the project's dependencies and extras."""
    project = tomllib.loads(path.read_text())["project"]
    lines = list(project["dependencies"]) + [x for extra in project["optional-dependencies"].values() for x in extra]
    pins = {}
    for line in lines:
        req = Requirement(line)
        (spec,) = req.specifier  # one exact pin each (the contract: nothing unpinned)
        assert spec.operator == "==", f"pyproject.toml: {line} is not an exact pin"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def lock_pins(path: Path = LOCK) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[canonicalize_name(name)] = version
    return out


def node_environment(record: dict) -> dict:
    """The marker environment pip resolved in (Linux x86_64, CPython 3.11)."""
    return {**default_environment(), **record["environment"]}


def unmet(pins: dict[str, str], record: dict) -> list[str]:
    """Each requirement of a recorded package that a pin does not satisfy, as one line."""
    env = node_environment(record)
    problems = []
    for name, package in sorted(record["packages"].items()):
        extras = [""] + package["requested_extras"]
        for line in package["requires_dist"]:
            req = Requirement(line)
            pinned = pins.get(canonicalize_name(req.name))
            if pinned is None or not any(req.marker is None or req.marker.evaluate({**env, "extra": e}) for e in extras):
                continue
            if not req.specifier.contains(Version(pinned), prereleases=True):
                problems.append(f"{name} {package['version']} requires {line!r}; pinned {req.name}=={pinned}")
    return problems


def test_every_pin_satisfies_the_gpu_set(tmp_path):
    import json

    record = json.loads(RECORD.read_text())
    pins = pyproject_pins()
    assert not unmet(pins, record), unmet(pins, record)
    # can fail: the cap that kept vLLM out before (vLLM 0.31.0: transformers<5.18.0), and numpy 2.4
    assert any("vllm" in p and "transformers" in p for p in unmet({**pins, "transformers": "5.24.0"}, record))
    assert any("numpy<2.4" in p.replace(" ", "") for p in unmet({**pins, "numpy": "2.4.6"}, record))


def test_the_pins_are_the_resolved_set():
    """pyproject's pins, the lock and the recorded resolution name the same versions: a bumped pin
    without a new resolution is stale."""
    import json

    pins, lock = pyproject_pins(), lock_pins()
    recorded = {n: p["version"] for n, p in json.loads(RECORD.read_text())["packages"].items()}
    assert lock == recorded, RERECORD
    smollm = {"gguf"}  # the smollm extra is not part of the GPU set (its GGUF import is CPU-only)
    stale = {n: (v, lock.get(n)) for n, v in pins.items() if n not in smollm and lock.get(n) != v}
    assert not stale, f"pyproject pin vs lock: {stale}; {RERECORD}"


def test_vllm_is_in_trls_supported_range():
    """TRL 1.16 supports the vLLM releases its `vllm` extra names (it only warns outside them)."""
    vllm = pyproject_pins()["vllm"]
    (line,) = [r for r in requires("trl") if r.startswith("vllm")]
    assert Requirement(line.split(";")[0]).specifier.contains(vllm), line


def test_this_environment_is_the_lock():
    """`make` installed the locked versions (torch is the local CPU build of the locked release)."""
    lock = lock_pins()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    differ = {n: (v, lock[n]) for n, v in installed.items() if n in lock and Version(v).public != lock[n]}
    assert not differ, f"installed vs requirements/lock.txt: {differ} (make clean && make test)"
