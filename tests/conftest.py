import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Warm starts are cached across test sessions in the repo (built once on a fresh clone).
os.environ.setdefault("NPO_CACHE", str(ROOT / ".npo-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


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
    from npo.train import build_split

    _, train_items, _ = build_split(tiny_cfg)
    return resolve_model_path(tiny_cfg, train_items)
