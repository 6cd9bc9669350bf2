"""`npo compare` end to end on the embedded default (tiny runs), and its bad input."""

import json

import yaml

from npo.cli.main import main
from npo.rundir.layout import read_jsonl

from conftest import ROOT


def short_config(tmp_path, name, source, **npo):
    data = yaml.safe_load((ROOT / "configs" / source).read_text())
    data["train"].update(steps=6, checkpoint_every=3)
    data["eval"].update(every=3, n=30, samples=2)
    if npo:
        data["npo"].update(npo)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_compare_two_configs_over_two_seeds(tmp_path, capsys):
    grpo = short_config(tmp_path, "grpo", "tiny-grpo.yaml")
    npo = short_config(tmp_path, "npo", "tiny-npo-bootstrap.yaml",
                       interventions=[{"kind": "bootstrap", "lookahead": 2}])
    out = tmp_path / "cmp"
    assert main(["compare", str(grpo), f"boot={npo}", "--seeds", "2", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| grpo |" in printed and "| boot |" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["order"] == ["grpo", "boot"] and summary["baseline"] == "grpo" and summary["metric"] == "mean_at_k"
    finals = [read_jsonl(out / "runs" / f"grpo-s{s}" / "eval.jsonl")[-1]["mean_at_k"] for s in (0, 1)]
    assert abs(summary["target_accuracy"] - sum(finals) / 2) < 1e-12
    boot = summary["methods"]["boot"]
    assert len(boot["seeds"]) == 2 and all(s["total_steps"] == 8 and s["interventions"] == 1 for s in boot["seeds"])
    assert (out / "curves.png").exists() and "npo compare" in (out / "report.md").read_text()


def test_compare_checks_every_config_before_any_run(tmp_path, capsys):
    grpo = short_config(tmp_path, "grpo", "tiny-grpo.yaml")
    bad = short_config(tmp_path, "bad", "tiny-npo-bootstrap.yaml")  # lookahead 100 > 6 steps
    out = tmp_path / "cmp"
    assert main(["compare", str(grpo), str(bad), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.yaml" in err and "npo.interventions[0]" in err
    assert not (out / "runs" / "grpo-s0").exists()
    assert main(["compare", str(tmp_path / "missing.yaml"), "--out", str(out), "--quiet"]) == 2
    assert "no such config file" in capsys.readouterr().err
