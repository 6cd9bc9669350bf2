"""The comparison report from a small synthetic set of runs: known numbers give a known table and
speed-up, including a method that never reaches the target."""

import json

import pytest

from npo.cli.report import write_report


def fake_run(folder, accs, tokens_per_step=100, total_steps=None, events=()):
    """A run directory with evaluations every 10 steps (accs[i] at step 10 i) and a summary."""
    folder.mkdir(parents=True)
    steps = [10 * i for i in range(len(accs))]
    (folder / "eval.jsonl").write_text("".join(json.dumps({"step": s, "accuracy": a, "mean_at_k": a}) + "\n"
                                               for s, a in zip(steps, accs)))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "signal/generated_tokens": tokens_per_step * s}) + "\n" for s in range(1, steps[-1] + 1)))
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (folder / "summary.json").write_text(json.dumps({
        "final_steps": steps[-1], "total_steps": total_steps or steps[-1], "generated_tokens": tokens_per_step * steps[-1],
        "wall_seconds": 10.0, "interventions": len([e for e in events if e.get("event") == "intervention"])}))
    return folder


def test_known_runs_give_a_known_table_and_speedups(tmp_path):
    # baseline: finals 0.5 and 0.7 -> target 0.6, reached at steps 40 and 20 (mean 30)
    grpo = [fake_run(tmp_path / "g0", [0.1, 0.3, 0.4, 0.5, 0.6, 0.5]),
            fake_run(tmp_path / "g1", [0.1, 0.4, 0.6, 0.6, 0.7, 0.7])]
    # npo: reaches 0.6 at steps 10 and 20 (mean 15): 2x per step; its guide tokens (window from 0)
    # and a 20-step look-ahead cost more compute
    iv = {"event": "intervention", "kind": "bootstrap", "lookahead": 20, "source": "near_future", "window": [0, 10],
          "guides": {"requested": 8, "found": 6, "injected": 5}, "compute": {"guide_tokens": 1000}}
    npo = [fake_run(tmp_path / "n0", [0.1, 0.6, 0.6, 0.6, 0.6, 0.65], total_steps=70, events=[iv]),
           fake_run(tmp_path / "n1", [0.1, 0.5, 0.6, 0.7, 0.7, 0.7], total_steps=70, events=[iv])]
    never = [fake_run(tmp_path / "x0", [0.1, 0.2, 0.3, 0.3, 0.3, 0.3]),
             fake_run(tmp_path / "x1", [0.1, 0.2, 0.2, 0.2, 0.2, 0.2])]
    out = tmp_path / "report"
    r = write_report({"grpo": grpo, "npo": npo, "stuck": never}, out, ["npo compare a.yaml b.yaml"])
    assert r["target_accuracy"] == pytest.approx(0.6) and r["metric"] == "mean_at_k"
    g, n, x = (r["methods"][m]["mean"] for m in ("grpo", "npo", "stuck"))
    assert g["steps_to_target"] == 30 and n["steps_to_target"] == 15
    assert n["speedup_per_step"] == pytest.approx(2.0) and g["speedup_per_step"] == pytest.approx(1.0)
    # tokens at the step reached: grpo 100*40, 100*20 -> 3000; npo 100*10 + 1000, 100*20 + 1000 -> 2500
    assert g["tokens_to_target"] == 3000 and n["tokens_to_target"] == 2500
    assert n["speedup_per_compute"] == pytest.approx(1.2)
    assert x["steps_to_target"] is None and x["reached"] == 0 and x["speedup_per_step"] is None
    assert [s["steps_to_target"] for s in r["methods"]["stuck"]["seeds"]] == [None, None]
    assert n["final_accuracy"] == pytest.approx(0.675) and n["total_steps"] == 70 and n["interventions"] == 1
    assert g["final_accuracy_se"] == pytest.approx(0.1)  # std 0.1414 / sqrt 2
    md = (out / "report.md").read_text()
    assert "| npo | 0.6750 ± 0.0250 |" in md and "| 15 (2/2) | 2.00x | 1.20x |" in md
    assert "| never (0/2) | never | never |" in md
    # best: grpo 0.6 and 0.7 -> 0.65 ± 0.05, range 0.6-0.7
    assert "| grpo | 0.6000 ± 0.1000 | 0.5000-0.7000 | 0.6500 ± 0.0500 | 0.6000-0.7000 | 30 (2/2) |" in md
    assert ("- npo seed 1: bootstrap at 0 (Delta 20, window 0-10, near_future): 6 of 8 prompts asked had a guide, "
            "5 guide rows injected") in md
    assert "npo compare a.yaml b.yaml" in md
    assert "| 10 | 0.3500 | 0.5500 | 0.2000 |" in md and "| 50 | 0.6000 | 0.6750 | 0.2500 |" in md  # the curves
    assert (out / "curves.png").stat().st_size > 10_000
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved["methods"]) == {"grpo", "npo", "stuck"}
    for m in saved["methods"].values():
        assert {"final_accuracy", "best_accuracy", "steps_to_target", "final_steps", "total_steps",
                "generated_tokens", "wall_seconds", "interventions"} <= set(m["seeds"][0]) \
        <= set(m["mean"]) | {"tokens_to_target", "interventions_made"}
