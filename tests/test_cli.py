"""The command line as a process: exit codes and no traceback (the bad-input corpus: test_bad_input.py)."""

import subprocess
import sys

import pytest

from npo.cli import main

from conftest import ROOT

TINY = str(ROOT / "configs" / "tiny-grpo.yaml")


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "npo.cli", "train", TINY, "--set", "train.steps=x",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"npo: error: {TINY}: train.steps: expected an integer, got 'x'"]


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"npo {version('npo')}"
