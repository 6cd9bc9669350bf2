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
Then split into one recording per processor family (tests/golden.py): the AMD EPYC recording kept
unchanged, an Intel Xeon one added, made at code whose comparison had passed in CI against the AMD
recording (072e16a), on a machine whose warm start's bytes differ.
"""

import json

import pytest

from golden import RECORDINGS, normalized, recording_path, torch_threads, warm_start_hash


def recording_for(model_path) -> dict:
    """This machine's recording: the one made from the same warm start, else a failure that says why."""
    path = recording_path(warm_start_hash(model_path))
    if not path.exists():
        recorded = "; ".join(json.loads(p.read_text())["machine"] for p in sorted(RECORDINGS.glob("*.json")))
        pytest.fail(f"no recording in {RECORDINGS.name}/ for this machine's warm start ({path.name}): CPU "
                    f"numerics differ between processor families, so no trajectory can match here. Recorded on: "
                    f"{recorded}. Record this machine with `python tests/golden.py` only at a commit that passes "
                    "on a recorded one.")
    return json.loads(path.read_text())


def compare_with_recording(now: dict, model_path) -> None:
    """`now`: run name -> normalized files, for some of the recorded runs."""
    golden = recording_for(model_path)
    # conftest trains every test single-threaded, as the recording was: a mismatch here is a failure, not a skip
    assert torch_threads() == golden["torch_threads"], f"recorded with {golden['torch_threads']} torch thread(s)"
    for name, files in now.items():
        for file, records in golden["runs"][name].items():
            assert files[file] == records, (name, file)


def test_the_demo_trains_as_recorded(demo_quick, tiny_model_path):
    now = {f"demo/{p.name}": normalized(p) for p in sorted((demo_quick[0] / "runs").iterdir())}
    assert set(now) == {name for name in recording_for(tiny_model_path)["runs"] if name.startswith("demo/")}
    compare_with_recording(now, tiny_model_path)


def test_autonpo_trains_as_recorded(autonpo_short, tiny_model_path):
    compare_with_recording({"autonpo-short": normalized(autonpo_short[0])}, tiny_model_path)


def test_every_recording_says_where_it_was_made():
    """A recording a machine can be matched to: named by its warm start's hash, with its processor named."""
    recordings = sorted(RECORDINGS.glob("*.json"))
    assert recordings
    for path in recordings:
        golden = json.loads(path.read_text())
        assert path == recording_path(golden["warm_start_sha256"]), path.name
        assert golden["machine"] and golden["torch_threads"] == 1, path.name
        assert {"autonpo-short", "demo/grpo-s0", "demo/npo-s0"} <= set(golden["runs"]), path.name
