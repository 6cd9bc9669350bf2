"""Preemption-safe runs (issue 13). A run killed with SIGKILL at any moment and resumed with
`npo train --resume` writes the same metrics.jsonl, eval.jsonl and events.jsonl (timing fields
aside), the same final weights and the same books (steps, tokens by kind, interventions) as the
same run left alone. The kills are real (tests/killing.py); the references are uninterrupted runs
the session trains anyway (the demo's NPO and GRPO runs, the test-size AutoNPO run)."""

import hashlib
import json
import shutil

import pytest

from npo.cli.main import main
from npo.config.run import load_config
from npo.errors import UserError
from npo.loops.run import prepare, train
from npo.rundir.layout import checkpoint_folders, checkpoint_state, read_jsonl

from conftest import ROOT
from golden import normalized
from killing import kill_chain, npo, resume, start

BOOKS = ("final_steps", "total_steps", "lookahead_steps", "generated_tokens", "generated_tokens_by_kind",
         "guide_samples", "interventions", "final_accuracy", "final_mean_at_k")


def weights(run, step):
    return hashlib.sha256((run / "checkpoints" / f"checkpoint-{step}" / "model.safetensors").read_bytes()).hexdigest()


def assert_same_run(resumed, reference, steps, resumes):
    assert normalized(resumed) == normalized(reference)
    assert weights(resumed, steps) == weights(reference, steps)
    got, want = (json.loads((p / "summary.json").read_text()) for p in (resumed, reference))
    assert {k: got[k] for k in BOOKS} == {k: want[k] for k in BOOKS}
    assert got["resumes"] == resumes and got["lost_seconds"] > 0 and want["resumes"] == 0
    # nothing half-written is left: every checkpoint complete, every log line whole
    for folder in [resumed / "checkpoints", *(resumed / "lookahead").glob("*")]:
        assert all(checkpoint_state(p) is not None for p in checkpoint_folders(folder).values())
    assert not list(resumed.rglob(".*.tmp"))


def test_autonpo_killed_anywhere_resumes_exactly(tmp_path, autonpo_short):
    """Killed while measuring Q/V/S at the trigger (step 10), while moving the discarded steps 6-10
    out of the final trajectory, inside the guided window 5-10, and after its stage ended but before
    the journal said so."""
    reference, _ = autonpo_short
    out = tmp_path / "run"
    kill_chain(["train", str(reference / "config.yaml")], out, ["measure:1", "discard:1", "step:3", "commit:1"])
    assert resume(out) == 0
    assert_same_run(out, reference, 30, resumes=4)


def test_npo_killed_anywhere_resumes_exactly(tmp_path, demo_quick):
    """The demo's NPO run (bootstrap: look-ahead 0->10, window 0-10; plateau at 20: look-ahead
    20->30, window 20-30), killed right after the starting policy's evaluation (before any checkpoint or
    snapshot of the books: its verifications must be counted once), inside the first look-ahead before
    its first checkpoint, after it and before its guides were made, inside the guided window, and during
    a checkpoint's write."""
    reference = demo_quick[0] / "runs" / "npo-s0"
    out = tmp_path / "run"
    kill_chain(["train", str(reference / "config.yaml")], out,
               ["evaluated:1", "step:4", "lookahead:1", "step:3", "checkpoint:3"])
    assert resume(out) == 0
    assert_same_run(out, reference, 40, resumes=5)


def test_grpo_resumes_past_a_truncated_checkpoint_and_a_torn_log_line(tmp_path, demo_quick):
    """Killed on the final trajectory at step 12; then the last checkpoint (10) has its optimizer state
    overwritten with garbage of the same size (its size-only marker of old would match) and metrics.jsonl
    loses its last line's end, as a disk or a copy can leave them: resume falls back to checkpoint 5,
    and the run still equals the one left alone."""
    reference = demo_quick[0] / "runs" / "grpo-s0"
    out = tmp_path / "run"
    kill_chain(["train", str(reference / "config.yaml")], out, ["step:12"])
    optimizer = out / "checkpoints" / "checkpoint-10" / "optimizer.pt"
    optimizer.write_bytes(bytes(optimizer.stat().st_size))
    text = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(text[:-10])
    assert checkpoint_state(out / "checkpoints" / "checkpoint-10") is None
    # readers refuse it with one line (exit 2) instead of loading half a checkpoint
    assert npo(["eval", str(out), "--step", "10"]) == 2
    assert npo(["signal", str(out), "--step", "5", "--deltas", "5", "--prompts", "8"]) == 2
    assert resume(out) == 0
    assert_same_run(out, reference, 40, resumes=1)


def test_plateau_search_killed_before_its_commit(tmp_path, tiny_model_path):
    """NPO's auto-plateau: killed after the watch stopped the run at the plateau (step 6) but before
    the stage was committed: the resumed run finds it once, at the same step, from the checkpoint's record."""
    sets = ["train.steps=10", "train.checkpoint_every=5", "eval.every=0", "eval.n=50", "eval.samples=0",
            "npo.interventions=[{kind: plateau, at_step: auto-plateau, lookahead: 2}]", "npo.plateau_window=3",
            "npo.plateau_min_gain=1.0", "npo.plateau_min_step=0"]
    reference = tmp_path / "reference"
    train(prepare(load_config(ROOT / "configs" / "tiny-npo-plateau.yaml", sets), reference), show_progress=False)
    out = tmp_path / "run"
    kill_chain(["train", str(reference / "config.yaml")], out, ["commit:1"])
    assert resume(out) == 0
    assert [e["event"] for e in read_jsonl(out / "events.jsonl")] == ["plateau_detected", "intervention"]
    assert_same_run(out, reference, 10, resumes=1)


def test_demo_rerun_skips_finished_runs(demo_quick):
    """The session's `npo demo --quick` was killed inside its last run (AutoNPO, step 10) and run
    again into the same folder (conftest.demo_quick): the finished runs were not run again, the
    killed one resumed, and the four runs equal the uninterrupted recording (test_equivalence)."""
    out, printed = demo_quick
    for name in ("grpo", "self", "npo"):
        assert f"{name}, seed 0 (finished before: not run again)" in printed
        assert json.loads((out / "runs" / f"{name}-s0" / "summary.json").read_text())["resumes"] == 0
    assert "autonpo, seed 0 (resuming)" in printed
    assert json.loads((out / "runs" / "autonpo-s0" / "summary.json").read_text())["resumes"] == 1


def test_a_finished_run_says_so_and_a_foreign_folder_is_refused(tmp_path, autonpo_short, capsys):
    reference, _ = autonpo_short
    assert main(["train", "--resume", str(reference)]) == 0
    assert "finished" in capsys.readouterr().out
    assert npo(["train", "--resume", str(tmp_path)]) == 2  # not a run folder
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy, ignore=shutil.ignore_patterns("checkpoints", "lookahead", "summary.json"))
    state = json.loads((copy / "run_state.json").read_text())
    (copy / "run_state.json").write_text(json.dumps({**state, "npo_version": "0.0.0"}))
    assert npo(["train", "--resume", str(copy)]) == 2  # another npo version: refused, nothing written
    kept = [p.name for p in reference.iterdir() if p.name not in ("checkpoints", "lookahead", "summary.json")]
    assert sorted(p.name for p in copy.iterdir()) == sorted(kept)


def test_compare_refuses_an_out_folder_of_another_plan(demo_quick):
    """Re-run with another plan (here: another step count) into the demo's folder: one line, exit 2,
    before any work (every run is checked first)."""
    out, _ = demo_quick
    before = {p: p.stat().st_mtime for p in out.rglob("*.json*")}
    assert npo(["demo", "--quick", "--out", str(out), "--quiet", "--set", "train.steps=20"]) == 2
    assert {p: p.stat().st_mtime for p in out.rglob("*.json*")} == before


def test_a_resume_continues_only_the_run_that_was_killed(tmp_path, autonpo_short, capsys):
    """The journal keeps what the run started from (the resolved config, parsed, and its data): a learning
    rate edited into config.yaml after the kill, or changed data, is refused naming what differs, with
    nothing written; a comment edited in is no change."""
    from npo.rundir.resume import run_status
    from npo.tasks import build_split

    reference, _ = autonpo_short
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy, ignore=shutil.ignore_patterns("checkpoints", "lookahead", "summary.json"))
    text = (copy / "config.yaml").read_text()
    assert "learning_rate: 0.0003" in text
    (copy / "config.yaml").write_text(text.replace("learning_rate: 0.0003", "learning_rate: 0.001"))
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*")}
    assert main(["train", "--resume", str(copy), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.yaml differs from the config the run started with " \
                                           "(train.grpo.learning_rate; run_state.json keeps it)" in err, err
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == before

    (copy / "config.yaml").write_text("# resumed by hand\n" + text)
    cfg = load_config(copy / "config.yaml")
    _, train_items, eval_items = build_split(cfg)
    assert run_status(copy, cfg, train_items + eval_items) == "resume"
    changed = [type(train_items[0])(train_items[0].question, "not the answer")] + train_items[1:]
    with pytest.raises(UserError, match="the data of task.spec arith differs from the data the run started with"):
        run_status(copy, cfg, changed + eval_items)


def test_sigterm_then_a_full_disk_each_stop_in_one_line_and_the_run_resumes_exactly(tmp_path, demo_quick):
    """A scheduler's preemption (SIGTERM) mid-run: one line (no worker's traceback), exit 143. The resumed
    process then meets a file-size limit below a checkpoint's weights (the tiny model's are ~4 MB): its
    next checkpoint's write fails inside safetensors, as on a full disk: one line naming it, exit 1.
    The run resumed once more equals the one left alone."""
    import os
    import signal
    import time

    reference = demo_quick[0] / "runs" / "grpo-s0"
    out, err = tmp_path / "run", tmp_path / "stderr.txt"
    process = start(["train", str(reference / "config.yaml"), "--out", str(out), "--quiet"], stderr=err)
    deadline = time.time() + 300
    while len(read_jsonl(out / "metrics.jsonl")) < 7 and process.is_alive() and time.time() < deadline:
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGTERM)
    process.join()
    assert process.exitcode == 143, err.read_text()[-2000:]
    lines = [line for line in err.read_text().splitlines() if line.strip()]
    assert lines == ["npo: terminated (a run continues with npo train --resume RUN)"], lines

    process = start(["train", "--resume", str(out), "--quiet"], stderr=err, file_limit=1 << 20)
    process.join()
    lines = [line for line in err.read_text().splitlines() if line.strip() and not line.startswith("resume:")]
    assert process.exitcode == 1 and len(lines) == 1, lines[-20:]
    assert lines[0].startswith("npo: run stopped: a write failed (File too large") and "--resume" in lines[0]
    assert resume(out) == 0
    assert_same_run(out, reference, 40, resumes=2)
