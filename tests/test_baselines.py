"""The baselines end to end at test size: each preset (luffy, exgrpo, rlep) trains on the embedded
default, and what its injection rules promise is checked on the batches TRL scores and the rows that
reach its loss (a spy around GuidedGRPOTrainer's two TRL methods); `npo pool` builds a pool from a run."""

import json

import pytest
import torch

from npo.cli.main import main
from npo.config.run import load_config
from npo.loops.run import prepare, train
from npo.rundir.layout import read_jsonl
from npo.tasks import build_split
from npo.trl_seam.trainer import GuidedGRPOTrainer

from conftest import ROOT

SMALL = ["train.steps=4", "train.prompts_per_step=4", "train.checkpoint_every=2", "eval.every=0", "eval.n=20",
         "eval.samples=0"]
PRESET_SETS = {
    "luffy": ["method=luffy"],
    "exgrpo": ["method=exgrpo", "npo.start_solve_rate=0.2", "train.steps=6"],  # the latch can fire in 6 steps
    "rlep": ["method=rlep"],  # + the pool below
}


@pytest.fixture(scope="module")
def presets(tmp_path_factory, tiny_model_path):
    """method -> (run folder, the batches TRL scored, the inputs of every loss call)."""
    root = tmp_path_factory.mktemp("presets")
    _, items, _ = build_split(load_config(ROOT / "configs" / "tiny-grpo.yaml"))
    pool = root / "pool.jsonl"  # every training question's answer, twice: RLEP's M = 2 find two entries
    pool.write_text("".join(json.dumps({"question": it.question, "completion": it.answer}) + "\n"
                            for it in items for _ in range(2)))
    scored, losses = [], []
    generate, compute_loss = GuidedGRPOTrainer._generate_and_score_completions, GuidedGRPOTrainer._compute_loss

    def spy_generate(self, inputs):
        out = generate(self, inputs)
        scored.append({"step": self.state.global_step, "n": self.num_generations, "kept": self.kept,
                       "replayed": set(self._replayed), "items": list(self._batch_index),
                       "flags": out.get("npo_guide"), "advantages": out["advantages"].clone(),
                       "completion_ids": out["completion_ids"].clone(), "mask": out["completion_mask"].clone()})
        return out

    def spy_loss(self, model, inputs):
        losses.append({"flags": inputs.get("npo_guide"), "advantages": inputs["advantages"].clone()})
        return compute_loss(self, model, inputs)

    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GuidedGRPOTrainer, "_generate_and_score_completions", spy_generate)
        mp.setattr(GuidedGRPOTrainer, "_compute_loss", spy_loss)
        for method, sets in PRESET_SETS.items():
            extra = [f"npo.source=pool:{pool}"] if method == "rlep" else []
            cfg = load_config(ROOT / "configs" / "tiny-grpo.yaml", [*SMALL, *sets, *extra])
            scored.clear(), losses.clear()
            train(prepare(cfg, root / method), show_progress=False)
            runs[method] = (root / method, list(scored), list(losses))
    return runs, items


def rewards_of(batch, items, tokenizer_decode):
    texts = [tokenizer_decode(ids[:int(m.sum())]) for ids, m in zip(batch["completion_ids"], batch["mask"])]
    return torch.tensor([1.0 if t.strip() == items[i].answer else 0.0 for t, i in zip(texts, batch["items"])])


def decode(ids):
    from npo.models.tiny import build_tokenizer

    return build_tokenizer().decode(ids.tolist(), skip_special_tokens=True)


def test_luffy_guides_every_group_and_shapes_its_tokens(presets):
    runs, items = presets
    _, scored, losses = runs["luffy"]
    for batch in scored:
        flags, n = batch["flags"], batch["n"]
        assert flags.view(-1, n).sum(1).tolist() == [1] * (len(flags) // n)  # every group, no gate: 1 of n
        assert flags.view(-1, n)[:, -1].all()  # the last slot
        r = rewards_of(batch, items, decode)
        assert r[flags].eq(1).all()  # the teacher's traces are verified-correct answers
        group = r.view(-1, n)
        a = ((group - group.mean(1, keepdim=True)) / (group.std(1, keepdim=True) + 1e-4)).view(-1)  # TRL's A
        w = batch["advantages"][flags] / a[flags].unsqueeze(1)  # each guide token's weight
        valid = batch["mask"][flags].bool()
        # f(p) = p / (p + 0.1): weight 0.1 p / (p + 0.1)^2, in (0, 1/4]; padding 0; on_policy would be 1
        assert (w[valid] > 0).all() and (w[valid] <= 0.25 + 1e-6).all() and (w[~valid] == 0).all()
        plain = batch["advantages"][~flags]
        assert torch.allclose(plain, a[~flags].unsqueeze(1).expand_as(plain))  # on-policy rows: A, unweighted
    assert any(x["flags"].any() and x["advantages"].dim() == 2 for x in losses)  # guide rows reach the loss


def test_exgrpo_replays_only_after_the_solve_rate_passes_the_threshold(presets):
    runs, _ = presets
    folder, scored, losses = runs["exgrpo"]
    metrics = read_jsonl(folder / "metrics.jsonl")
    rates = [m["signal/group_accuracy"] for m in metrics]  # the step's on-policy solve rate
    on = [m["npo/injecting"] for m in metrics]
    assert on == [float(any(r > 0.2 for r in rates[:i])) for i in range(len(rates))]  # the latch, one step late
    assert 0 < sum(on) < len(on), f"the latch must fire inside the run (rates {rates})"
    for batch, m in zip(scored, metrics):
        flags, n = batch["flags"], batch["n"]
        guided = {g for g in range(len(flags) // n) if flags.view(-1, n)[g].any()}
        assert guided <= batch["replayed"]  # targets: replayed groups only
        if m["npo/injecting"]:
            assert len(batch["replayed"]) == m["npo/replayed_groups"] > 0
            assert guided == batch["replayed"]  # each replayed question has its stored success
        else:
            assert not batch["replayed"] and not guided
    state = json.loads((folder / "checkpoints" / "checkpoint-6" / "npo_state.json").read_text())
    entries = [e for es in state["injection"]["replay"]["entries"].values() for e in es]
    assert entries and all(len(e["logps"]) == len(e["token_ids"]) and e["entropy"] >= 0 for e in entries)
    assert any(x["flags"].any() and x["advantages"].dim() == 2 for x in losses)  # shaped rows reach the loss


def test_rlep_adds_two_rows_per_group_and_advantages_span_the_larger_group(presets):
    runs, items = presets
    folder, scored, losses = runs["rlep"]
    assert json.loads((folder / "trl_args.json").read_text())["num_generations"] == 10  # G + M = 8 + 2
    for batch in scored:
        n, kept, flags = batch["n"], batch["kept"], batch["flags"]
        assert (n, kept) == (10, 8)
        assert flags.view(-1, n)[:, 8:].all() and not flags.view(-1, n)[:, :8].any()  # the 2 added rows
        r = rewards_of(batch, items, decode).view(-1, n)
        assert r[:, 8:].eq(1).all()  # pool entries are verified successes
        expected = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)  # TRL's group advantage, 10 rows
        assert torch.allclose(batch["advantages"].view(-1, n), expected, atol=1e-5)
    rows = sum(x["flags"].numel() for x in losses)
    assert rows == 4 * 10 * 4  # 4 steps x 4 prompts x 10 rows reach the loss
    metrics = read_jsonl(folder / "metrics.jsonl")
    assert all(m["npo/guide_rows"] == 8 and m["npo/replaced_groups"] == 4 for m in metrics)


def test_npo_pool_writes_verified_successes_of_a_run(presets, tmp_path, capsys):
    runs, items = presets
    folder = runs["luffy"][0]
    out = tmp_path / "pool.jsonl"
    assert main(["pool", str(folder), "--k", "2", "--prompts", "40", "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    answers = {it.question: it.answer for it in items}
    assert summary["prompts"] == 40 and summary["samples"] == 80 and summary["successes"] == len(rows)
    assert rows and all(r["completion"] == answers[r["question"]] and r["step"] == 4 for r in rows)
    assert summary["prompts_covered"] == len({r["question"] for r in rows}) <= 40
    assert main(["pool", str(folder), "--out", str(out), "--quiet"]) == 2  # built once: an existing pool is kept
    assert "exists" in capsys.readouterr().err


def test_exgrpo_killed_mid_run_resumes_exactly(presets, tmp_path):
    """The replay buffer and the latch travel with each checkpoint: killed at step 5 (after the
    checkpoint at 4, with the buffer full and the latch on) and resumed, the run equals the one
    left alone (its files, weights and books)."""
    from test_resume import assert_same_run

    from killing import kill_chain, resume

    reference = presets[0]["exgrpo"][0]
    out = tmp_path / "run"
    kill_chain(["train", str(reference / "config.yaml")], out, ["step:5"])
    assert resume(out) == 0
    assert_same_run(out, reference, 6, resumes=1)
