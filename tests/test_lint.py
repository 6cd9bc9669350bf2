"""The linter (ruff, configured in pyproject.toml: pyflakes, pycodestyle, bugbear, isort) finds nothing in
the package, the tests, the benchmarks or the examples; `make lint` runs the same check."""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

RUFF = Path(sys.executable).with_name("ruff")


def ruff(*paths: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUFF), "check", "--no-cache", *paths], cwd=ROOT, capture_output=True, text=True)


def test_the_code_is_lint_clean():
    proc = ruff("src", "tests", "benchmarks", "examples")
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_the_linter_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")  # an unused import
    proc = ruff(str(bad))
    assert proc.returncode == 1 and "F401" in proc.stdout
