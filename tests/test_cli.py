"""Bad input: one line naming the file, field or row, exit code 2, no traceback, no run directory."""

import json
import subprocess
import sys

import pytest

from npo.cli import main

from conftest import ROOT

TINY = str(ROOT / "configs" / "tiny-grpo.yaml")


def run_main(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def rows_file(tmp_path, rows, name):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


GOOD = [{"question": f"{i}+{i}=", "answer": str(2 * i)} for i in range(30)]


@pytest.mark.parametrize("case", ["unknown_task", "missing_column", "empty_answer", "unknown_key",
                                  "mistyped_key", "missing_model", "non_numeric_set", "bad_grpo_field",
                                  "lookahead_past_end", "npo_without_interventions"])
def test_bad_input(case, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", TINY, "--out", str(out), "--quiet"]
    expect = {
        "unknown_task": (["--set", "task.spec=nosuchtask"], "task.spec"),
        "missing_column": (["--set", f"task.spec=jsonl:{rows_file(tmp_path, GOOD[:5] + [{'question': 'q'}], 'a.jsonl')}",
                            "--set", "task.options={}"], "row 6: missing column 'answer'"),
        "empty_answer": (["--set", f"task.spec=jsonl:{rows_file(tmp_path, GOOD[:3] + [{'question': 'q', 'answer': ''}], 'b.jsonl')}",
                          "--set", "task.options={}"], "row 4: empty answer"),
        "unknown_key": (["--set", "train.nonsense=1"], "train.nonsense: unknown field"),
        "mistyped_key": (["--set", "eval.sample=3"], "eval.sample: unknown field"),
        "missing_model": (["--set", f"model.path={tmp_path / 'no-model'}"], "model.path: no such model folder"),
        "non_numeric_set": (["--set", "train.steps=many"], "train.steps: expected an integer"),
        "bad_grpo_field": (["--set", "train.grpo.temperatur=1.0"], "train.grpo.temperatur"),
        "lookahead_past_end": (["--set", "method=npo", "--set",
                                "npo.interventions=[{kind: plateau, at_step: 590, lookahead: 40}]"],
                               "npo.interventions[0]: at_step + max(lookahead, window) = 630 exceeds train.steps"),
        "npo_without_interventions": (["--set", "method=npo"], "npo.interventions: method npo needs"),
    }[case]
    code, err = run_main(capsys, argv + expect[0])
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("npo: error:")
    assert expect[1] in err
    assert not out.exists()


def test_existing_output_dir_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    code, err = run_main(capsys, ["train", TINY, "--out", str(tmp_path / "run")])
    assert code == 2 and "already exists" in err
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_missing_config_file_and_bad_flag(tmp_path, capsys):
    code, err = run_main(capsys, ["train", str(tmp_path / "nope.yaml")])
    assert code == 2 and "nope.yaml: no such config file" in err
    code, err = run_main(capsys, ["eval", "tiny", "--n", "many"])
    assert code == 2 and len(err.splitlines()) == 1


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
