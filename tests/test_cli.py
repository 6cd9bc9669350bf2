"""The command line as a process: exit codes and no traceback (the bad-input corpus: test_bad_input.py)."""

import subprocess
import sys

import pytest

from npo.cli.main import main

from conftest import ROOT

TINY = str(ROOT / "configs" / "tiny-grpo.yaml")


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "npo.cli.main", "train", TINY, "--set", "train.steps=x",
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


def test_the_wheel_ships_the_demo_config(tmp_path):
    """`npo demo` from an installed wheel finds its regime: the shipped configs are package data."""
    import zipfile

    from npo.config.presets import DEFAULT_CONFIG

    assert DEFAULT_CONFIG.is_file() and DEFAULT_CONFIG.parent == ROOT / "src" / "npo" / "configs"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob("npo-*.whl"))).namelist()
    assert "npo/configs/demo.yaml" in names and "npo/configs/accelerate/zero2.yaml" in names
