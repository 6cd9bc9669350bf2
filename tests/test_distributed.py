"""NPO's gate across two CPU processes: a group straddling the processes is gated on its *whole*
group's rewards, and the decisions equal a single-process run's (tests/dist_gate_worker.py)."""

import json

EXPECTED_FLAGS = {  # rows of the guide slot in gated groups 0 and 1 (group 2 has p_hat 0.75)
    "0": [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
    "-1": [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
}


def test_gate_decisions_match_across_process_counts(tmp_path, two_processes):
    """Two processes: the session's two-process launch (tests/engine_worker.py, mode `gate`); one: here."""
    import dist_gate_worker

    two = two_processes[1]["gate"]
    dist_gate_worker.main(str(tmp_path / "one.json"))  # one process: this one
    one = json.loads((tmp_path / "one.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    for slot, flags in EXPECTED_FLAGS.items():
        assert [int(f) for f in two[slot]["flags"]] == flags
        assert two[slot] == one[slot]
        assert two[slot]["gated"] == 2 and two[slot]["replaced"] == 2
    # two real guided steps ran in both processes, and their guide banks stayed identical
    assert two["trained_steps"] == 2 and len(set(two["bank_sizes"])) == 1
