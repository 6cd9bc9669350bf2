import fcntl
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Warm starts are cached across test sessions in the repo (built once on a fresh clone).
os.environ.setdefault("NPO_CACHE", str(ROOT / ".npo-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the processes the tests start: sums depend on the thread count
torch.set_num_threads(1)  # the suite trains single-threaded wherever it runs: tests/data/golden/ was recorded so


def torchrun(processes: int, script: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """`torchrun` of a test worker script, one launch at a time across the pytest workers (a file lock):
    two launches at once put four torch processes on two cores, which spin (a 20 s test took 81 s)."""
    lock = Path(tempfile.gettempdir()) / f"npo-torchrun-{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}.lock"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # released when the file closes
        command = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", str(processes),
                   "--master_port", str(free_port()), str(ROOT / "tests" / script), *args]
        return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def launch_engine_worker(processes: int, out: Path, *args: str) -> dict:
    """tests/engine_worker.py under torchrun (MODES OUT [extra...]): the main process's result.json."""
    out.mkdir(parents=True, exist_ok=True)
    proc = torchrun(processes, "engine_worker.py", *args[:1], str(out), *args[1:], timeout=400)  # a hang fails here
    assert proc.returncode == 0, what_failed(proc.stderr)
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="session")
def two_processes(tmp_path_factory):
    """One launch of two processes for every two-process check (test_engine.py, test_distributed.py),
    whichever pytest worker runs them (a launch's start-up is ~10 s per process): the gate on constructed
    groups, DDP (`npo train`), then ZeRO-3, then LoRA under ZeRO-2, then the vLLM stand-in."""
    out = built_once(tmp_path_factory, "two-processes",
                     lambda folder: launch_engine_worker(2, folder, "gate,run,replay-zero3,sharded,replay-lora,vllm_tp"))
    return out, json.loads((out / "result.json").read_text())


def what_failed(stderr: str) -> str:
    """A failed launch's story: every process's own error lines (the first to fail is not the last to
    write: torchrun's teardown and its peers' "connection closed" bury it), then the tail."""
    errors = [line for line in stderr.splitlines() if "Error:" in line and "Traceback" not in line]
    return "\n".join(errors[:20]) + "\n...\n" + stderr[-2000:]


def free_port() -> int:
    """A port nothing listens on now, for a torchrun launch (a fixed one was once taken mid-session:
    EADDRINUSE at the rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `make test-fast`: the pure modules, the config checks, the seam's pins and the docs' pointers; no run
# is trained (under a minute). Everything else is in `make test` only.
FAST = {"test_autonpo", "test_cli", "test_config", "test_controls", "test_generation", "test_injection", "test_interventions",
        "test_layers", "test_lint", "test_pins", "test_precision", "test_readme", "test_report", "test_retention", "test_rules",
        "test_share", "test_signal", "test_tasks", "test_trl_seam"}


# Modules none of whose tests reads the embedded default's 1000-step warm start (measured: the suite run
# with that warm start's training made to raise). `make test` on a fresh clone runs them first, while
# one worker trains that warm start (`first_the_warm_start`).
WARM_FREE = FAST | {"test_bad_input", "test_demo", "test_memory", "test_models", "test_verify", "test_vision"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.stem in FAST:
            item.add_marker(pytest.mark.fast)
    items[:] = first_the_warm_start(items)
    if os.environ.get("NPO_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow/opt-in: run with NPO_SLOW=1 (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# Files whose tests one `make test` worker runs in turn, each set as one unit of work: their tests share
# a run or a launch that the first of them builds (the other worker would wait for it, or build its
# module fixtures again), or they load the machine on purpose (beside each other, test_verify's
# 1-second verification ran past its limit).
TOGETHER = {"test_engine": "launches", "test_distributed": "launches", "test_verify": "test_verify",
            "test_effect": "test_effect", "test_baselines": "test_baselines", "test_npo_trainer": "test_npo_trainer",
            "test_signal_cli": "test_signal_cli", "test_vllm_engine": "test_vllm_engine"}


@pytest.hookimpl(optionalhook=True)  # without xdist (`make test-fast`: -p no:xdist) the hook is unknown
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scheduling with TOGETHER's units (its own `loadgroup` marks no test under pytest 9:
    it renames `item._nodeid`, which pytest 9 no longer reads): every other test a unit of its own, the
    units dealt in collection order (not largest first), the next one to a worker as it finishes."""
    from xdist.scheduler import LoadScopeScheduling

    class Together(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return TOGETHER.get(Path(nodeid.split("::")[0]).stem, nodeid)

    config.option.loadscopereorder = False
    return Together(config, log)


def first_the_warm_start(items: list) -> list:
    """The order `make test`'s two workers are dealt the tests in (`pytest_xdist_make_scheduler`: each
    worker is given the next test, or the next of TOGETHER's sets, as it finishes): one
    test that needs the embedded default's warm start, so that one worker trains it (single-threaded,
    about 3 minutes on a fresh clone; under the warm start's file lock the other would only wait), then
    the tests that need none of it, which keep the other worker busy meanwhile, then the rest, each group
    in its files' order."""
    free = [item for item in items if item.path.stem in WARM_FREE]
    needing = [item for item in items if item.path.stem not in WARM_FREE]
    trigger = next((item for item in needing if "tiny_model_path" in getattr(item, "fixturenames", ())), None)
    if trigger is None:
        return free + needing
    return [trigger, *free, *(item for item in needing if item is not trigger)]


@pytest.fixture(scope="session")
def tiny_cfg():
    """The config of configs/tiny-grpo.yaml: the embedded default on arith."""
    from npo.config.run import load_config

    return load_config(ROOT / "configs" / "tiny-grpo.yaml")


@pytest.fixture(scope="session")
def tiny_model_path(tiny_cfg):
    """The cached warm start of the embedded default (built on first use)."""
    from npo.models.load import resolve_model_path
    from npo.tasks import build_split

    _, train_items, _ = build_split(tiny_cfg)
    return resolve_model_path(tiny_cfg, train_items)


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder trained once per test session, also under `make test`'s two pytest-xdist workers: the
    first worker to ask builds it (`build(folder)`) under a file lock; the other waits and reads it."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # shared by the workers
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def demo_quick(tmp_path_factory):
    """`npo demo --quick` once per session (from its own 300-step warm start, not the suite's): (its output
    folder, what its last run printed). Several tests read it. It is killed with SIGKILL inside its last
    run (AutoNPO's step 10: 40 + 40 + 60 steps of GRPO, self and NPO come first) and run again into the
    same folder, which finishes it (test_resume.py checks how; test_equivalence.py that the four runs
    equal the uninterrupted ones)."""

    def build(folder):
        import contextlib
        import io

        from npo.cli.main import main

        from killing import npo

        printed = io.StringIO()
        assert npo(["demo", "--quick", "--out", str(folder / "demo"), "--quiet"], kill_at="step:150") == -9
        with contextlib.redirect_stdout(printed):
            assert main(["demo", "--quick", "--out", str(folder / "demo"), "--quiet"]) == 0
        (folder / "printed.txt").write_text(printed.getvalue())

    folder = built_once(tmp_path_factory, "demo-quick", build)
    return folder / "demo", (folder / "printed.txt").read_text()


@pytest.fixture(scope="session")
def autonpo_short(tmp_path_factory, tiny_model_path):
    """configs/tiny-autonpo.yaml at test size (tests/golden.py's AUTONPO_SHORT), trained once per session:
    a bootstrap trigger at 10, Delta* 5, the window 5-10 guided. Returns (run folder, summary)."""

    def build(folder):
        from npo.config.run import load_config
        from npo.loops.run import prepare, train

        from golden import AUTONPO_SHORT

        train(prepare(load_config(ROOT / "configs" / "tiny-autonpo.yaml", AUTONPO_SHORT), folder / "run"),
              show_progress=False)

    run = built_once(tmp_path_factory, "autonpo-short", build) / "run"
    return run, json.loads((run / "summary.json").read_text())


LAUNCHER_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_LAUNCHED = {key for key in LAUNCHER_KEYS if key in os.environ}  # set by a launcher around pytest: kept


@pytest.fixture(autouse=True)
def _launcher_environment():
    """No launcher variables outlive the test that set them (module fixtures included): TRL's colocated
    vLLM path sets RANK, LOCAL_RANK and MASTER_PORT for vLLM, and a later run in the same worker (or
    forked from it) would take that for a launch and start a gloo group on port 29500, colliding with
    the other worker's."""
    yield
    for key in set(LAUNCHER_KEYS) - _LAUNCHED:
        os.environ.pop(key, None)
