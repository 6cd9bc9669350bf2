"""Which checkpoints stay whole (npo.rundir.retention): the plan by hand, and stripping a checkpoint folder."""

from npo.rundir.layout import RunDir, checkpoint_state, mark_complete
from npo.rundir.retention import FULL, REMOVE, WEIGHTS, checkpoint_counts, retention, strip

MAIN, LOOK = "checkpoints", "lookahead/0-bootstrap"
STEPS = {MAIN: [0, 5, 10, 15, 20], LOOK: [5, 10]}


def fulls(plan: dict) -> dict:
    return {folder: [s for s, what in steps.items() if what == FULL] for folder, steps in plan.items()}


def test_while_running_the_two_newest_of_each_folder_stay_whole():
    plan = retention(STEPS, MAIN)
    assert fulls(plan) == {MAIN: [15, 20], LOOK: [5, 10]}
    assert plan[MAIN][0] == plan[MAIN][10] == WEIGHTS


def test_autonpo_keeps_every_checkpoint_it_may_roll_back_to():
    assert fulls(retention(STEPS, MAIN, horizon=10))[MAIN] == [10, 15, 20]  # T - Delta for Delta <= 10
    assert fulls(retention(STEPS, MAIN, protect={0}))[MAIN] == [0, 15, 20]  # a rollback target named by the loop


def test_a_finished_run_keeps_only_its_last_checkpoint_whole():
    plan = retention(STEPS, MAIN, horizon=10, finished=True, protect={0})
    assert fulls(plan) == {MAIN: [20], LOOK: []}


def test_keep_removes_the_oldest_weights_only_checkpoints_never_a_whole_one():
    plan = retention(STEPS, MAIN, keep=1)
    assert plan[MAIN] == {0: REMOVE, 5: REMOVE, 10: WEIGHTS, 15: FULL, 20: FULL}
    assert plan[LOOK] == {5: FULL, 10: FULL}
    assert retention({MAIN: [5]}, MAIN, keep=1, finished=True) == {MAIN: {5: FULL}}


def checkpoint(folder, weights=True):
    folder.mkdir(parents=True)
    files = ["optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "global_step5/mp_rank_00_model_states.pt",
             "global_step5/zero_pp_rank_0_mp_rank_00_optim_states.pt"] + (["model.safetensors"] if weights else [])
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x" * 10)
    mark_complete(folder, {"step": 5})
    return folder


def test_strip_keeps_weights_and_a_complete_marker(tmp_path):
    ck = checkpoint(tmp_path / "checkpoints" / "checkpoint-5")
    strip(ck)
    left = sorted(str(p.relative_to(ck)) for p in ck.rglob("*") if p.is_file())
    assert left == ["global_step5/mp_rank_00_model_states.pt", "model.safetensors", "npo_state.json",
                    "trainer_state.json"]  # DeepSpeed's module states stay: its rollback loads weights from them
    state = checkpoint_state(ck)
    assert state is not None and state["weights_only"] and state["step"] == 5
    strip(ck)  # idempotent
    assert checkpoint_state(ck) == state
    assert checkpoint_counts(RunDir(tmp_path)) == {"full": 0, "weights_only": 1}


def test_a_checkpoint_without_a_weights_file_is_left_whole(tmp_path):
    ck = checkpoint(tmp_path / "checkpoint-5", weights=False)  # ZeRO-3: the weights are in the optimizer's shards
    before = checkpoint_state(ck)
    strip(ck)
    assert checkpoint_state(ck) == before and (ck / "optimizer.pt").exists()
