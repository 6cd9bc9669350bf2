"""Training must not change by accident: `npo demo --quick` (four runs) and the AutoNPO run of
tiny-autonpo.yaml at test size give the recorded metrics.jsonl, eval.jsonl and events.jsonl
(tests/golden.py), timing fields aside, bit for bit.

History of the recording: made before issue 11's restructuring, which left every file unchanged (its
one addition, `lookahead_tokens` in AutoNPO's intervention event, was the fix it asked for); re-made at
issue 12, which changed how guides are made on purpose (one seed per prompt; near-future banks written
ahead by the live policy at the end of the look-ahead; AutoNPO sampling pi_T once and scoring its
candidates in place) and added `verify/calls`: the GRPO run and the untriggered AutoNPO run of the demo
were unchanged by it, so the one-engine rollback itself changed nothing. Re-made at issue 13: first
with only `verify/calls` changed (it counts every verification, a cached verdict too, so that a
resumed run counts the same; checked: every other value equal), then single-threaded, with a warm
start built single-threaded, as `make test` runs (two workers, one thread each).
"""

import json

import pytest

from golden import GOLDEN, collect, torch_threads, warm_start_hash

pytestmark = pytest.mark.xdist_group("trained-runs")  # one worker trains the shared runs once (conftest)


def test_same_metrics_evals_and_events_as_recorded(demo_quick, autonpo_short, tiny_model_path):
    golden = json.loads(GOLDEN.read_text())
    if torch_threads() != golden["torch_threads"]:
        pytest.skip(f"recorded with {golden['torch_threads']} torch thread(s) (make test: OMP_NUM_THREADS=1), "
                    f"this process has {torch_threads()}: float sums differ, so no trajectory could match")
    if warm_start_hash(tiny_model_path) != golden["warm_start_sha256"]:
        pytest.skip("this processor's warm start differs from the one the golden files were recorded with "
                    "(CPU numerics differ between processor families), so no trajectory could match")
    now = collect(demo_quick[0], autonpo_short[0])
    assert set(now["runs"]) == set(golden["runs"])
    for name, files in golden["runs"].items():
        for file, records in files.items():
            assert now["runs"][name][file] == records, (name, file)
