"""`npo demo`: the presets, the targets check on known numbers, and the whole job end to end at toy size."""

import json

import pytest

from npo.cli.demo import DEFAULT_CONFIG, method_overrides, targets, targets_markdown
from npo.cli.report import write_report
from npo.config.run import load_config


@pytest.mark.parametrize("quick", [False, True])
def test_presets_differ_only_where_the_method_does(quick):
    cfgs = {name: load_config(DEFAULT_CONFIG, sets) for name, sets in method_overrides(quick, []).items()}
    assert [c.method for c in cfgs.values()] == ["grpo", "npo", "npo", "autonpo"]
    assert cfgs["grpo"].npo.interventions == [] and cfgs["autonpo"].npo.interventions == []
    assert cfgs["self"].npo.source == "self" and cfgs["npo"].npo.source == "near_future"
    assert cfgs["self"].npo.interventions == cfgs["npo"].npo.interventions
    assert [iv["kind"] for iv in cfgs["npo"].npo.interventions] == ["bootstrap", "plateau"]
    for c in cfgs.values():  # same model, task, data, optimizer, evaluation
        assert (c.model, c.task, c.train, c.eval) == (cfgs["grpo"].model, cfgs["grpo"].task, cfgs["grpo"].train,
                                                      cfgs["grpo"].eval)


def summary(final, steps, reached=None, final_steps=200):
    """A result with one seed per method: final accuracy and steps to target."""
    methods = {}
    for name in ("grpo", "self", "npo", "autonpo"):
        seed = {"final_accuracy": final[name], "steps_to_target": steps[name]}
        methods[name] = {"seeds": [seed], "mean": {
            "final_accuracy": final[name], "final_accuracy_se": 0.0, "steps_to_target": steps[name],
            "reached": int(steps[name] is not None), "final_steps": final_steps}}
    return {"methods": methods}


def test_targets_on_known_numbers():
    met = targets(summary({"grpo": 0.40, "self": 0.41, "npo": 0.42, "autonpo": 0.43},
                          {"grpo": 200, "self": 150, "npo": 100, "autonpo": 120}))
    assert [t["met"] for t in met] == [True, True, True, True]
    assert "<= 100" in met[0]["target"] and "NPO 100 steps" in met[0]["measured"]
    # NPO one step past half; self never reaches (NPO is still sooner); AutoNPO between GRPO and self
    missed = targets(summary({"grpo": 0.40, "self": 0.44, "npo": 0.42, "autonpo": 0.42},
                             {"grpo": 200, "self": None, "npo": 101, "autonpo": None}))
    assert [t["met"] for t in missed] == [False, True, True, False]
    assert "self never" in missed[1]["measured"]
    # NPO never reaches the target: neither step target is met
    never = targets(summary({"grpo": 0.40, "self": 0.30, "npo": 0.30, "autonpo": 0.39},
                            {"grpo": 200, "self": None, "npo": None, "autonpo": None}))
    assert [t["met"] for t in never] == [False, False, False, True]


def test_demo_quick_writes_the_three_files(demo_quick):
    out, printed = demo_quick
    assert "# npo demo: grpo, self, npo, autonpo" in printed and "## Targets, as measured" in printed
    s = json.loads((out / "summary.json").read_text())
    assert s["order"] == ["grpo", "self", "npo", "autonpo"] and s["baseline"] == "grpo"
    finals = {m: s["methods"][m]["seeds"][0]["final_accuracy"] for m in s["methods"]}
    assert s["target_accuracy"] == finals["grpo"]
    for name, m in s["methods"].items():
        seed = m["seeds"][0]
        for key in ("final_accuracy", "best_accuracy", "steps_to_target", "final_steps", "total_steps",
                    "generated_tokens", "wall_seconds", "interventions"):
            assert key in seed and key in m["mean"], (name, key)
        assert seed["final_steps"] == 40
    npo, own = s["methods"]["npo"]["seeds"][0], s["methods"]["self"]["seeds"][0]
    assert npo["interventions"] == own["interventions"] == 2
    assert npo["total_steps"] == 60 and own["total_steps"] == 40  # two look-aheads of 10; self looks nowhere
    assert s["methods"]["grpo"]["seeds"][0]["steps_to_target"] <= 40  # GRPO reaches its own final
    report = (out / "report.md").read_text()
    assert "near_future): " in report and "self): " in report and "npo demo --seeds 1" in report
    assert (out / "curves.png").stat().st_size > 10_000
    # the runs are the configs they say they are
    assert load_config(out / "runs" / "self-s0" / "config.yaml").npo.source == "self"


def test_the_report_of_runs_that_all_ended_below_their_start_claims_nothing(tmp_path):
    """Constructed runs: every method ends below where it started; NPO and self intervened twice,
    AutoNPO never. No target is met, the counts are integers, and AutoNPO says it never intervened."""
    from test_report import fake_run

    iv = {"event": "intervention", "kind": "bootstrap", "lookahead": 10, "source": "near_future", "window": [0, 10],
          "guides": {"requested": 8, "found": 6, "injected": 5}, "compute": {"guide_tokens": 100}}
    curves = {"grpo": [0.30, 0.25, 0.20], "self": [0.30, 0.22, 0.18], "npo": [0.30, 0.24, 0.21],
              "autonpo": [0.30, 0.26, 0.22]}
    folders = {name: [fake_run(tmp_path / name, accs, events=[iv, iv] if name in ("self", "npo") else [])]
               for name, accs in curves.items()}
    out = tmp_path / "report"
    write_report(folders, out, ["npo demo"], appendix=lambda r: targets_markdown(targets(r)))
    md = (out / "report.md").read_text()
    table = md[md.index("## Targets, as measured"):]
    assert "| yes |" not in table and table.count("| not measurable |") == 4
    assert "no gain to reach: GRPO ended at 0.2000, not above its start (0.3000)" in table
    assert "| 2 |" in md and "2.0" not in md.replace("0.2000", "")  # intervention counts are integers
    assert "- autonpo seed 0: no intervention" in md
    assert "- grpo seed 0" not in md  # the baseline is plain GRPO by definition


def test_a_method_equal_to_another_is_named_in_the_report(tmp_path):
    from test_report import fake_run

    folders = {"grpo": [fake_run(tmp_path / "g", [0.2, 0.3, 0.4])], "autonpo": [fake_run(tmp_path / "a", [0.2, 0.3, 0.4])]}
    write_report(folders, tmp_path / "report", ["npo demo"])
    assert "`autonpo` evaluated exactly as `grpo` at every step" in (tmp_path / "report" / "report.md").read_text()
