import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Warm starts are cached across test sessions in the repo (built once on a fresh clone).
os.environ.setdefault("NPO_CACHE", str(ROOT / ".npo-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("NPO_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow/opt-in: run with NPO_SLOW=1 (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_cfg():
    """The config of configs/tiny-grpo.yaml: the embedded default on arith."""
    from npo.config import load_config

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
def demo_quick(tmp_path_factory, tiny_model_path):
    """`npo demo --quick` once per session: (its output folder, what its last run printed). Several
    tests read it. It is killed with SIGKILL inside its last run (AutoNPO's step 10: 40 + 40 + 60 steps
    of GRPO, self and NPO come first) and run again into the same folder, which finishes it
    (test_resume.py checks how; test_equivalence.py that the four runs equal the uninterrupted ones)."""

    def build(folder):
        import contextlib
        import io

        from killing import npo
        from npo.cli import main

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
        from golden import AUTONPO_SHORT
        from npo.config import load_config
        from npo.train import prepare, train

        train(prepare(load_config(ROOT / "configs" / "tiny-autonpo.yaml", AUTONPO_SHORT), folder / "run"),
              show_progress=False)

    run = built_once(tmp_path_factory, "autonpo-short", build) / "run"
    return run, json.loads((run / "summary.json").read_text())
