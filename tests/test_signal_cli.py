"""`npo signal` on a short GRPO run of the embedded default: table, JSON, PNG, source kinds, bad input."""

import json

import pytest
import torch

from npo.cli.main import main
from npo.config.run import load_config
from npo.loops.run import prepare, train
from npo.models.generation import Policy
from npo.tasks import build_split

from conftest import ROOT


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("signal") / "run"
    cfg = load_config(ROOT / "configs" / "tiny-grpo.yaml",
                      ["train.steps=10", "train.checkpoint_every=5", "eval.every=0", "eval.n=20", "eval.samples=0"])
    train(prepare(cfg, out), show_progress=False)
    return out


def test_signal_table_json_png_and_every_source_kind(run_dir, tmp_path, capsys):
    traces, pool = tmp_path / "teacher.jsonl", tmp_path / "pool.jsonl"
    cfg = load_config(run_dir / "config.yaml")
    _, items, _ = build_split(cfg)
    traces.write_text("".join(json.dumps({"question": it.question, "completion": it.answer}) + "\n"
                              for it in items))
    pool.write_text("".join(json.dumps({"question": it.question, "completion": it.answer}) + "\n"
                            for it in items[::2]))  # half the questions
    later = run_dir / "checkpoints" / "checkpoint-10"
    kinds = ["self", "replay", "teacher:reference", f"teacher:{traces}", f"teacher_model:{later}",
             f"checkpoint:{later}", f"pool:{pool}"]
    argv = ["signal", str(run_dir), "--step", "5", "--deltas", "5", "--k", "2", "--prompts", "48", "--tau", "0.9",
            "--bootstrap", "30", *(x for kind in kinds for x in ("--source", kind))]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| self | 0 | 5 |" in out and "| near_future | 5 | 5 |" in out and "| replay |  | 5 |" in out
    result = json.loads((run_dir / "signal" / "step-5.json").read_text())
    assert (run_dir / "signal" / "step-5.png").stat().st_size > 10_000 and result["tau"] == 0.9
    rows = {r["source"]: r for r in result["rows"] if r["delta"] is None}
    assert set(rows) == set(kinds) - {"self"}  # every kind through the one factory
    own = result["rows"][0]
    assert own["source"] == "self" and own["V"] == pytest.approx(1.0) and own["S"] == pytest.approx(own["Q"])
    for r in result["rows"]:
        assert 0 <= r["Q"] <= 1 and r["n_failed"] == own["n_failed"] > 0
        assert r["Q_ci"][0] <= r["Q"] <= r["Q_ci"][1]
    for perfect in (f"teacher:{traces}", "teacher:reference"):  # the traces are the reference answers
        assert rows[perfect]["Q"] == 1.0 and "proxy" in rows[perfect]["V_kind"]
    assert rows[f"pool:{pool}"]["Q"] < 1.0  # it covers half the questions
    # the checkpoint at step 10, as a checkpoint or as a teacher model, is the near-future source at Delta = 5
    future = next(r for r in result["rows"] if r["source"] == "near_future")
    assert rows[f"checkpoint:{later}"]["Q"] == rows[f"teacher_model:{later}"]["Q"] == future["Q"]
    # replay: GRPO kept no buffer, so it is rebuilt from checkpoint 0's groups: its successes, on F
    assert rows["replay"]["n_trajectories"] > 0 and rows["replay"]["V_kind"].startswith("token-level")
    # the premise, paired on the same F: Q - Q(0) from the per-prompt outcomes of both rows
    assert future["dQ"] == pytest.approx(future["Q"] - own["Q"])
    assert future["dQ_ci"][0] <= future["dQ"] <= future["dQ_ci"][1]
    assert "dQ" not in own


@pytest.mark.parametrize("argv,expect", [
    (["--step", "7"], "no checkpoint at step 7"),
    (["--step", "5", "--deltas", "5,x"], "--deltas 5,x: expected comma-separated integers"),
    (["--step", "5", "--source", "teacher:/nonexistent.jsonl"], "no such file"),
    (["--step", "5", "--source", "oracle"], "--source oracle: expected near_future, self, replay"),
    (["--step", "5", "--source", "pool:/nonexistent.jsonl"], "no such file"),
    (["--step", "5", "--tau", "1.5"], "--tau 1.5: must be in (0, 1]"),
])
def test_signal_bad_input(run_dir, capsys, argv, expect):
    assert main(["signal", str(run_dir), "--prompts", "8", "--k", "1", "--bootstrap", "0", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err


def test_token_logps_with_left_padding_match_unpadded(tiny_model_path):
    from npo.models.load import load_policy
    from npo.tasks.base import Item

    model, tok = load_policy(tiny_model_path)
    items = [Item("12+3=", "15"), Item("7-4", "3")]
    prompts = [tok.encode(it.question, add_special_tokens=False) for it in items]
    comps = [tok.encode("15", add_special_tokens=False) + [tok.eos_token_id], tok.encode("-3", add_special_tokens=False)]
    batched = Policy(model, tok, "plain").token_logps(items, comps)
    for p, c, got in zip(prompts, comps, batched):
        with torch.no_grad():
            logits = model(torch.tensor([p + c])).logits[0, len(p) - 1:-1]
        ref = logits.log_softmax(-1).gather(-1, torch.tensor(c)[:, None]).squeeze(-1)
        assert torch.allclose(ref, torch.tensor(got), atol=1e-5)


def test_signal_is_deterministic_for_a_seed(run_dir):
    from npo.cli.signal import run_signal

    def rows(seed):
        r = run_signal(run_dir, 5, [5], k=2, prompts=24, seed=seed, boot=20, backward=True, force=True)
        return [{k: v for k, v in row.items() if k != "seconds"} for row in r["rows"]]

    first = rows(1)
    assert first == rows(1)
    assert first != rows(2)
    assert (run_dir / "signal" / "step-5-backward.png").exists()
