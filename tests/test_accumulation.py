"""Gradient accumulation, as TRL means it: an NPO bootstrap (look-ahead 1, window 2) with the same 8
prompts x 8 samples per optimizer step in one micro-batch of 64 or in four of 16 is one run (the same data order, gate
decisions, guides, rollback points and evaluations; the float metrics equal within rounding), and the
accumulated run killed inside its guided window resumes exactly."""

import json
import math

from npo.cli.main import main

from conftest import ROOT
from golden import normalized
from killing import kill_chain, resume

CONFIG = str(ROOT / "configs" / "tiny-npo-bootstrap.yaml")
SETS = ["train.steps=3", "train.checkpoint_every=1", "train.prompts_per_step=8", "eval.every=2", "eval.n=20",
        "eval.samples=0", "npo.k=2", "npo.interventions=[{kind: bootstrap, lookahead: 1, window: 2}]"]
# what a micro-batch's float sums change: compared within rounding, everything else exactly; TRL logs the
# entropy as the mean of its micro-batches' token means, which weighs tokens differently (measured: 0.3%)
FLOATS = {"train/loss": 1e-4, "train/grad_norm": 1e-4, "npo/guide_logp": 1e-4, "signal/entropy": 1e-2}


def argv(accumulation: int) -> list[str]:
    sets = SETS + [f"train.grpo.gradient_accumulation_steps={accumulation}"]
    return ["train", CONFIG, *[x for s in sets for x in ("--set", s)]]


def same_within_rounding(a: list[dict], b: list[dict]) -> None:
    assert [sorted(r) for r in a] == [sorted(r) for r in b]
    for x, y in zip(a, b):
        for key in x:
            if key in FLOATS:
                assert math.isclose(x[key], y[key], rel_tol=FLOATS[key], abs_tol=1e-6), (x["step"], key, x[key], y[key])
            else:
                assert x[key] == y[key], (x["step"], key)


def test_one_or_four_micro_batches_train_the_same_run(tmp_path):
    runs = {}
    for accumulation in (1, 4):
        out = tmp_path / f"ga{accumulation}"
        assert main([*argv(accumulation), "--out", str(out), "--quiet"]) == 0
        runs[accumulation] = out
        trl = json.loads((out / "trl_args.json").read_text())
        assert (trl["per_device_train_batch_size"], trl["gradient_accumulation_steps"]) == (64 // accumulation,
                                                                                            accumulation)
    one, four = (normalized(runs[a]) for a in (1, 4))
    assert four["events.jsonl"] == one["events.jsonl"]  # the window, the guides asked, found and injected
    assert four["eval.jsonl"] == one["eval.jsonl"]
    same_within_rounding(four["metrics.jsonl"], one["metrics.jsonl"])  # gate decisions and rewards exact
    assert one["events.jsonl"][0]["guides"]["injected"] > 0  # the gate let guides in: there was something to compare
    banks = [json.loads((runs[a] / "guides" / "0-bootstrap.json").read_text()) for a in (1, 4)]
    assert banks[0]["tried"] == banks[1]["tried"]  # the window's prompts: the same data order

    # killed inside the guided window (its second step, after the look-ahead's 1), resumed: the same run
    killed = tmp_path / "killed"
    kill_chain(argv(4), killed, ["step:3"])
    assert resume(killed) == 0
    assert normalized(killed) == four
