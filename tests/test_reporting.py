"""TensorBoard for an NPO run (npo.trl_seam.tracking), read back from its event files: one log for the whole
run in RUN/tensorboard, the look-ahead in its own namespace, held-out accuracy, the config attached."""

import pytest

from npo.config.run import load_config
from npo.loops.run import prepare, train
from npo.rundir.layout import read_jsonl

from conftest import ROOT

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

SETS = ["method=npo", "train.steps=4", "train.checkpoint_every=2", "npo.interventions=[{kind: bootstrap, lookahead: 2}]",
        "eval.every=2", "eval.n=20", "eval.samples=2", "npo.k=2", "train.grpo.report_to=[tensorboard]"]


def test_one_tensorboard_log_per_run_with_held_out_accuracy(tmp_path, tiny_model_path):
    out = tmp_path / "run"
    train(prepare(load_config(ROOT / "configs" / "tiny-grpo.yaml", SETS), out), show_progress=False)
    logs = sorted({p.parent for p in out.rglob("events.out.tfevents.*")})
    assert logs == [out / "tensorboard"]  # one run: not one per segment under checkpoints/runs
    tb = event_accumulator.EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    tb.Reload()
    tags = set(tb.Tags()["scalars"])
    assert {"reward/mean", "signal/group_accuracy", "npo/guide_rows", "train/loss", "eval/accuracy",
            "eval/mean_at_k", "lookahead/reward/mean"} <= tags

    def series(tag):
        return [(e.step, e.value) for e in tb.Scalars(tag)]

    evals = read_jsonl(out / "eval.jsonl")
    assert series("eval/accuracy") == [(e["step"], pytest.approx(e["accuracy"])) for e in evals]
    assert series("eval/mean_at_k") == [(e["step"], pytest.approx(e["mean_at_k"])) for e in evals]
    metrics = read_jsonl(out / "metrics.jsonl")  # the final trajectory, once per step: no look-ahead step in it
    assert series("reward/mean") == [(m["step"], pytest.approx(m["reward/mean"])) for m in metrics]
    look = read_jsonl(out / "lookahead" / "0-bootstrap" / "metrics.jsonl")
    assert series("lookahead/reward/mean") == [(m["step"], pytest.approx(m["reward/mean"])) for m in look]
    config = tb.Tensors("npo/config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "method: npo" in config and "tau: 0.6" in config and "kind: bootstrap" in config
