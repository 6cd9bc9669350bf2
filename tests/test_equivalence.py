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
start built single-threaded, as `make test` runs (two workers, one thread each). Re-made at issue 15,
which added `npo/guide_rows` to guided steps' metrics (checked: every other value of every file equal).
Re-made at issue 25, which moved transformers from 5.24.0 to 5.17.0 (the release vLLM 0.31 accepts):
12 values changed, AutoNPO's V, S and their CIs in the two `autonpo_decision` lines, by at most 6.4e-7
relative (float rounding in the forward); every other value of every file, the warm start's bytes
included, equal. Re-made at issue 26, whose chunked scoring, logits-free sampling and split verification
left every value equal but one: with `on_policy` guides `npo/guide_logp` now comes from TRL's own loss
forward (over all rows) instead of a forward over the guide rows alone, 8e-8 relative apart at one
step of the demo's NPO run.
"""

import json

import pytest

from golden import GOLDEN, normalized, torch_threads, warm_start_hash


def compare_with_recording(now: dict, model_path) -> None:
    """`now`: run name -> normalized files, for some of the recorded runs."""
    golden = json.loads(GOLDEN.read_text())
    # conftest trains every test single-threaded, as the recording was: a mismatch here is a failure, not a skip
    assert torch_threads() == golden["torch_threads"], f"recorded with {golden['torch_threads']} torch thread(s)"
    if warm_start_hash(model_path) != golden["warm_start_sha256"]:
        pytest.fail("this machine's warm start differs from the recording's (CPU numerics differ between "
                    "processor families): no trajectory can match here. Re-record on this machine with "
                    "`python tests/golden.py` only if the recorded machine agrees with the code as it is.")
    for name, files in now.items():
        for file, records in golden["runs"][name].items():
            assert files[file] == records, (name, file)


def test_the_demo_trains_as_recorded(demo_quick, tiny_model_path):
    now = {f"demo/{p.name}": normalized(p) for p in sorted((demo_quick[0] / "runs").iterdir())}
    assert set(now) == {name for name in json.loads(GOLDEN.read_text())["runs"] if name.startswith("demo/")}
    compare_with_recording(now, tiny_model_path)


def test_autonpo_trains_as_recorded(autonpo_short, tiny_model_path):
    compare_with_recording({"autonpo-short": normalized(autonpo_short[0])}, tiny_model_path)
