"""NPO inside TRL on the embedded default: guide rows reach the loss with their flag; guide sources."""

import pytest
import torch
from helpers import NeverAsked, answer_bank, tiny_trainer

from npo.algo.injection import Trajectory
from npo.guides.bank import Guidance, GuideBank
from npo.guides.sources import PolicySource, SelfSource, propose
from npo.models.generation import Policy, completion_lengths, prompt_seeds
from npo.models.load import load_policy
from npo.tasks import build_split
from npo.tasks.rewards import TaskScorer

NPO = ["method=npo", "npo.interventions=[{kind: bootstrap, lookahead: 2}]"]


@pytest.mark.parametrize("guide_loss", ["on_policy", "importance", "shaping"])
def test_guide_rows_reach_the_loss_with_their_flag(tmp_path, guide_loss):
    cfg, trainer = tiny_trainer(tmp_path, *NPO, "train.steps=2", "train.prompts_per_step=8",
                                "train.grpo.steps_per_generation=2", f"npo.guide_loss={guide_loss}")
    trainer.guidance = Guidance(NeverAsked(), trainer.scorer, answer_bank(trainer), 0, 5, seed=0)
    seen = []
    original = trainer._compute_loss

    def spy(model, inputs):
        seen.append({k: inputs[k].detach().clone() for k in ("npo_guide", "completion_ids", "completion_mask",
                                                            "advantages")})
        return original(model, inputs)

    trainer._compute_loss = spy
    trainer.train()
    assert len(seen) == 2  # one generation batch, shuffled and split over 2 optimizer steps
    tok = trainer.processing_class
    answers = {it.answer for it in trainer.items}
    flagged = 0
    for batch in seen:
        flags = batch["npo_guide"]
        assert flags.dtype == torch.bool and flags.shape == (batch["completion_ids"].size(0),)
        for row in torch.nonzero(flags).flatten().tolist():
            ids = batch["completion_ids"][row][batch["completion_mask"][row].bool()].tolist()
            assert ids[-1] == tok.eos_token_id and tok.decode(ids, skip_special_tokens=True) in answers
            adv = batch["advantages"][row]
            adv = adv[batch["completion_mask"][row].bool()] if adv.dim() else adv
            assert (adv > 0).all()  # a correct answer in a group below the gate
        flagged += int(flags.sum())
        if guide_loss == "on_policy":
            assert batch["advantages"].dim() == 1
        elif flags.any():
            adv = batch["advantages"]
            assert adv.dim() == 2
            unflagged = adv[~flags]
            assert torch.equal(unflagged, unflagged[:, :1].expand_as(unflagged))  # untouched rows
            assert not torch.equal(adv[flags], adv[flags][:, :1].expand_as(adv[flags]))  # per-token weights
    logged = [x for x in trainer.state.log_history if "npo/replaced_groups" in x]
    assert flagged > 0 and flagged == sum(x["npo/replaced_groups"] for x in logged)


def test_no_guidance_outside_the_window(tmp_path):
    cfg, trainer = tiny_trainer(tmp_path, *NPO, "train.steps=2", "train.prompts_per_step=8")
    trainer.guidance = Guidance(NeverAsked(), trainer.scorer, answer_bank(trainer), 5, 10, seed=0)  # window [5, 10)
    trainer.train()
    assert all(x.get("npo/replaced_groups", 0) == 0 for x in trainer.state.log_history)


@pytest.fixture(scope="module")
def policy(tiny_cfg, tiny_model_path):
    task, train_items, _ = build_split(tiny_cfg)
    model, tok = load_policy(tiny_model_path)
    return model, tok, TaskScorer(task, "plain"), train_items[:24]


def test_policy_source_keeps_verified_guides_with_their_logps(policy):
    model, tok, scorer, items = policy
    src = PolicySource(Policy(model, tok, "plain"), k=4, temperature=1.0, max_new_tokens=6, name="base", step=0)
    state = torch.random.get_rng_state()
    seeds = prompt_seeds(7, list(range(len(items))))
    made = propose(src, items, seeds, scorer)
    guides = made.guides
    assert torch.equal(state, torch.random.get_rng_state())  # the training RNG stream is untouched
    again = propose(src, items, seeds, scorer).guides
    assert [[x.token_ids for x in g] for g in guides] == [[x.token_ids for x in g] for g in again]  # seeded
    # one seed per prompt: a prompt's guide does not depend on which prompts were asked with it
    alone = propose(src, items[5:9], seeds[5:9], scorer).guides
    assert [[x.token_ids for x in g] for g in alone] == [[x.token_ids for x in g] for g in guides[5:9]]
    assert all(len(g) <= 1 for g in guides)  # m = 1: the first verified-correct candidate
    found = [(it, g[0]) for it, g in zip(items, guides) if g]
    assert 0 < len(found) < len(items) and made.tokens > 0 and made.samples == 4 * len(items)
    for item, g in found:
        assert scorer.reward(g.text, item) == 1.0
        assert len(g.logps) == len(g.token_ids) <= 6
        prompt = tok(text=[item.question])["input_ids"][0]
        ids = torch.tensor([prompt + g.token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1:-1]
        ref = logits.log_softmax(-1).gather(-1, torch.tensor(g.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(ref, torch.tensor(g.logps), atol=1e-4)


def test_completion_lengths_cut_after_the_first_eos():
    c = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0], [5, 9, 2, 0]])
    assert completion_lengths(c, 2).tolist() == [2, 4, 1, 3]
    assert completion_lengths(c, [2, 9]).tolist() == [2, 4, 1, 2]  # any of a model's EOS ids (Qwen's chat: two)


def test_guide_bank_round_trip_is_atomic(tmp_path):
    bank = GuideBank()
    bank.add(3, [Trajectory([1, 2], "x", "ckpt", 10, [-0.5, -0.1]), Trajectory([3], "y", "ckpt", 10, [-0.2])])
    bank.add(4, [])
    path = tmp_path / "guides" / "bank.json"
    bank.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["bank.json"]  # no temp file left
    back = GuideBank.load(path)
    assert back.get(3) == bank.get(3) and len(back.get(3)) == 2 and 4 in back and back.get(4) == [] and 5 not in back


def test_guidance_asks_the_source_once_per_prompt(policy):
    model, tok, scorer, items = policy
    src = PolicySource(Policy(model, tok, "plain"), k=2, temperature=1.0, max_new_tokens=6, name="base", step=0)
    g = Guidance(src, scorer, GuideBank(), 0, 10, seed=0)
    g.fill([0, 1, 1, 2], [items[0], items[1], items[1], items[2]], step=0)
    assert g.stats.requested == 3 and g.stats.samples == 6
    g.fill([0, 1], items[:2], step=1)
    assert g.stats.requested == 3  # cached, hits and misses alike


def test_the_self_source_samples_the_live_policy_every_time(policy):
    model, tok, scorer, items = policy
    own = Guidance(SelfSource(k=2, temperature=1.0, max_new_tokens=6), scorer, GuideBank(), 0, 10, seed=0)
    live = Policy(model, tok, "plain")
    own.fill([0], items[:1], step=0, live=live)
    own.fill([0], items[:1], step=1, live=live)
    assert own.stats.requested == 2  # the policy moves every step: never cached
    # what it proposes is the live policy's own best-of-k, the same draw as that policy as a fixed source
    fixed = PolicySource(live, k=2, temperature=1.0, max_new_tokens=6, name="live", step=None)
    seeds = prompt_seeds(3, list(range(len(items))))
    assert [[x.token_ids for x in g] for g in propose(own.source, items, seeds, scorer, live).guides] == \
        [[x.token_ids for x in g] for g in propose(fixed, items, seeds, scorer).guides]
    with pytest.raises(ValueError, match="live policy"):
        propose(own.source, items, seeds, scorer)
