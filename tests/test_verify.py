"""The verifier guard (npo.tasks.verify): limits without start-up, replaced workers, references
parsed once, and the share of failed verifications that stops a run."""

import multiprocessing as mp
import os
import signal
import threading
import time

import pytest
from verifiers import Flaky, HangingReference, HangsOnEverything, Misreporting, burn

from npo.errors import RunFailed
from npo.tasks import Item, build_task
from npo.tasks.rewards import TaskScorer
from npo.tasks.verify import GuardedScorer, VerifyStats

from conftest import ROOT


def test_a_raising_verifier_scores_zero_inline():
    g = GuardedScorer(Flaky(), timeout=1.0, isolate=False)
    item = Item("q", "1")
    assert g.score("raise", item) == 0.0 and g.stats.errors == 1
    assert g.score("1", item) == 1.0 and g.stats == VerifyStats(calls=2, errors=1)


def test_a_hanging_reasoning_gym_verifier_is_cut_at_the_limit_and_scoring_goes_on():
    task = build_task("rg:countdown", {})  # its score_answer evaluates the expression: 9**9**9**9 never ends
    train, _ = task.splits(3, 1, 0)
    g = GuardedScorer(task, timeout=1.0)
    g.start(train[0])
    assert g.score(train[0].answer, train[0]) == 1.0
    t0 = time.perf_counter()
    assert g.score("9**9**9**9", train[0]) == 0.0
    cut = time.perf_counter() - t0
    assert 1.0 <= cut < 3.0, cut  # the limit, not the worker's start-up nor the hang
    assert g.stats == VerifyStats(calls=2, timeouts=1, restarts=1)
    assert [g.score(it.answer, it) for it in train[1:]] == [1.0, 1.0]  # the warm spare took over
    g.close()


def test_a_killed_worker_is_replaced_and_its_verification_retried():
    g = GuardedScorer(Flaky(), timeout=5.0, isolate=True)
    g.start(Item("q", "1"))
    victim = g._worker.proc.pid
    threading.Timer(0.3, os.kill, (victim, signal.SIGKILL)).start()  # the OOM killer, mid-verification
    assert g.score("slow", Item("q", "1")) == 1.0  # retried once on the spare
    assert g.stats == VerifyStats(calls=1, restarts=1) and g._worker.proc.pid != victim
    assert g.score("1", Item("q", "1")) == 1.0
    g.close()


def test_a_hanging_reference_costs_one_limit_then_scores_zero_at_once():
    g = GuardedScorer(HangingReference(), timeout=1.0)
    g.start(Item("warm", "1"))
    bad, good = Item("q", "pathological"), Item("p", "2")
    t0 = time.perf_counter()
    assert [g.score(a, bad) for a in ("1", "2", "3", "4")] == [0.0] * 4
    assert time.perf_counter() - t0 < 4.0  # one timeout, not four
    assert g.stats == VerifyStats(calls=4, timeouts=4, restarts=1)  # every answer counted as failed
    assert g.score("2", good) == 1.0 and g.score("x", good) == 0.0
    g.close()


def test_a_one_second_limit_on_a_loaded_machine_changes_no_reward(tmp_path):
    rows = [("\\frac{1}{2}", ["1/2", "0.5", "\\frac{2}{4}", "2"]), ("3", ["3", "3.0", "4", "$3$"]),
            ("72", ["#### 72", "72", "27", "\\boxed{72}"]), ("x^2", ["x^2", "x**2", "2x", "x\\cdot x"])]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(f'{{"question": "q{i}", "answer": {a!r}}}\n'.replace("'", '"').replace("\\", "\\\\")
                            for i, (a, _) in enumerate(rows)))
    task = build_task(f"jsonl:{path}", {})
    pairs = [(answer, item) for item, (_, answers) in zip(task.items, rows) for answer in answers]
    expected = [GuardedScorer(task, 60.0, isolate=False).score(a, it) for a, it in pairs]
    assert 0 < sum(expected) < len(pairs)
    load = [mp.get_context("spawn").Process(target=burn, args=(60.0,), daemon=True) for _ in range(3)]
    for p in load:
        p.start()
    try:
        g = GuardedScorer(task, timeout=1.0)
        g.start(task.items[0])  # start-up under load (seconds) is outside every limit
        assert [g.score(a, it) for a, it in pairs] == expected
        assert g.stats == VerifyStats(calls=len(pairs))
    finally:
        for p in load:
            p.kill()
        g.close()


def test_failed_share_stops_only_past_the_limit():
    assert VerifyStats(calls=10, errors=3, timeouts=2).failure(0.5, 5.0) is None  # 5 of 10 is not more than half
    why = VerifyStats(calls=10, errors=3, timeouts=3).failure(0.5, 5.0)
    assert why.startswith("6 of 10 verifications failed (3 past the 5 s limit of task.verifier_timeout, 3 raised)")
    assert VerifyStats().failure(0.0, 1.0) is None and VerifyStats(calls=4, errors=4).failure(1.0, 1.0) is None
    scorer = TaskScorer(Flaky(), "plain", max_failed_share=0.25)
    with pytest.raises(RunFailed, match=r"^step 3: 2 of 4 verifications failed"):
        scorer.check(VerifyStats(calls=4, errors=2), "step 3")


def test_a_run_whose_verifications_all_fail_stops_in_one_line(tmp_path, capsys):
    from npo.cli.main import main

    out = tmp_path / "run"
    code = main(["train", str(ROOT / "configs" / "tiny-grpo.yaml"), "--out", str(out), "--quiet",
                 "--set", "task.spec=raising", "--set", "task.options={}", "--set", "eval.n=4", "--set",
                 "eval.samples=0", "--set", "model.warmup.steps=0"])  # a task kind of tests/verifiers.py
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith(
        "npo: run stopped: evaluation at step 0: 4 of 4 verifications failed (0 past the 5 s limit of "
        "task.verifier_timeout, 4 raised)"), err
    assert not (out / "summary.json").exists()


def test_a_run_goes_on_when_its_verifier_workers_are_killed(tmp_path, capsys):
    import json

    from npo.cli.main import main

    data = tmp_path / "sums.jsonl"
    data.write_text("".join(f'{{"question": "{i}+{j}=", "answer": "{i + j}"}}\n' for i in range(12) for j in range(5)))
    out = tmp_path / "run"

    def kill_every_worker_once_training_started():  # the OOM killer takes the worker and its spare
        while not (out / "metrics.jsonl").exists():
            time.sleep(0.05)
        for child in mp.active_children():
            os.kill(child.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_every_worker_once_training_started, daemon=True)
    killer.start()
    code = main(["train", str(ROOT / "configs" / "tiny-grpo.yaml"), "--out", str(out), "--quiet",
                 "--set", f"task.spec=jsonl:{data}", "--set", "task.options={}", "--set", "task.eval_size=10",
                 "--set", "eval.n=10", "--set", "eval.samples=0", "--set", "train.prompts_per_step=4",
                 "--set", "train.steps=12", "--set", "train.checkpoint_every=6", "--set", "eval.every=0",
                 "--set", "model.warmup.steps=0"])
    assert code == 0, capsys.readouterr().err
    killer.join(timeout=1)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    # both killed at once: the one retry may meet the spare that died with the worker (scored 0, counted)
    assert last["verify/restarts"] >= 1 and last["verify/errors"] <= 1 and last["verify/timeouts"] == 0, last
    assert (out / "summary.json").exists()


@pytest.mark.parametrize("isolate", [False, True])
def test_what_is_not_a_score_is_the_verifiers_error(isolate):
    """NaN, None, text and numbers outside [0, 1] are counted as the verifier's errors (toward
    task.max_failed_share), never as answers that scored 0."""
    g = GuardedScorer(Misreporting(), timeout=5.0, isolate=isolate)
    g.start(Item("q", "1"))
    assert [g.score(a, Item("q", "1")) for a in ("nan", "none", "text", "two", "1")] == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert g.stats == VerifyStats(calls=5, errors=4)
    g.close()


def test_a_verifier_that_hangs_at_its_warm_up_fails_at_its_own_limit():
    g = GuardedScorer(HangsOnEverything(), timeout=1.0)
    t0 = time.perf_counter()
    with pytest.raises(RunFailed, match="warm-up .* took over 1 s, the limit of task.verifier_timeout"):
        g.start(Item("q", "1"))
    assert time.perf_counter() - t0 < 60  # the start-up (imports) and one second, not the 300 s start-up limit
    g.close()


def test_a_verifier_a_worker_cannot_import_runs_in_process(tmp_path):
    """A module loaded from a file path pickles here (it is in sys.modules) but a spawned worker cannot
    import it: it is scored in this process instead of a worker that dies at start."""
    import importlib.util
    import sys

    import verifiers

    from npo.tasks.python import importable

    (tmp_path / "by_path_reward.py").write_text("def reward(prompts, completions, **_):\n    return [1.0]\n")
    spec = importlib.util.spec_from_file_location("by_path_reward", tmp_path / "by_path_reward.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["by_path_reward"] = module
    try:
        spec.loader.exec_module(module)
        assert not importable(module.reward)
        assert importable(verifiers.reward_ok)  # tests/ is on the path a worker starts with
    finally:
        del sys.modules["by_path_reward"]


def test_ctrl_c_is_the_runs_to_report_not_the_workers():
    """A terminal's Ctrl-C reaches the whole process group: the verifier's workers ignore it (no traceback
    of theirs beside the run's one line; the run kills them as it ends)."""
    g = GuardedScorer(Flaky(), timeout=5.0, isolate=True)
    g.start(Item("q", "1"))
    os.kill(g._worker.proc.pid, signal.SIGINT)
    time.sleep(0.5)
    assert g._worker.proc.is_alive() and g.score("1", Item("q", "1")) == 1.0
    assert g.stats == VerifyStats(calls=1)
    g.close()


def test_a_batched_verifier_gets_one_call_and_falls_back_to_each_completion_when_it_raises():
    from verifiers import BatchedFlaky

    g = GuardedScorer(BatchedFlaky(), timeout=5.0, isolate=False)
    items = [Item(f"q{i}", str(i)) for i in range(4)]
    BatchedFlaky.batches.clear()
    assert g.score_many(["0", "1", "x", "3"], items, trl={"prompts": ["a", "b", "c", "d"]}) == [1.0, 1.0, 0.0, 1.0]
    assert BatchedFlaky.batches == [(4, ["prompts"])] and g.stats == VerifyStats(calls=4)
    assert g.score_many(["raise", "1", "2", "3"], [items[0]] * 4) == [0.0, 0.0, 0.0, 0.0]  # each alone: 1 raised
    assert g.stats == VerifyStats(calls=8, errors=1)
