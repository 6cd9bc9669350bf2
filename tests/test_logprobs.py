"""(a) The per-token log-probs TRL uses in the loss belong to the policy that sampled.

With left-padded prompts, a plain forward of Qwen2/Llama without `position_ids` numbers positions
from the first (pad) column. We prove TRL's path on sequences the trainer itself sampled: its
log-probs must equal a reference forward with `position_ids = cumsum(mask) - 1`.
"""

import torch
from helpers import generation_batch, tiny_trainer


def reference_logps(model, ids, mask, completion_ids, temperature):
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    L = completion_ids.shape[1]
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -L - 1:-1] / temperature
    return torch.log_softmax(logits.float(), -1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def test_trl_logps_match_reference_with_position_ids(tmp_path, tiny_model_path):
    cfg, trainer = tiny_trainer(tmp_path, "train.prompts_per_step=8")
    trainer.model.train()
    out = trainer._generate_and_score_completions(generation_batch(trainer, 8))
    assert (out["prompt_mask"] == 0).any(), "the batch must contain left-padded prompts to prove anything"
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    L = out["completion_ids"].shape[1]
    with torch.no_grad():
        trl_logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, L)
        ref = reference_logps(trainer.model, ids, mask, out["completion_ids"], cfg.train.grpo["temperature"])
    live = out["completion_mask"].bool()
    assert torch.allclose(trl_logps[live], ref[live], atol=1e-4), (trl_logps[live] - ref[live]).abs().max()


def test_reference_detects_wrong_positions(tiny_model_path):
    """The check above can fail: positions shifted by a different amount per token change log-probs."""
    from npo.models.load import load_policy

    model, _ = load_policy(tiny_model_path)
    ids = torch.tensor([[0, 0, 0, 21, 22, 15, 23, 33, 24, 25]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1]])
    comp = ids[:, -2:]
    with torch.no_grad():
        good = reference_logps(model, ids, mask, comp, 1.0)
        scrambled = torch.tensor([[0, 0, 0, 0, 5, 1, 9, 2, 7, 3]])
        logits = model(input_ids=ids, attention_mask=mask, position_ids=scrambled).logits[:, -3:-1]
        bad = torch.log_softmax(logits, -1).gather(-1, comp.unsqueeze(-1)).squeeze(-1)
    assert not torch.allclose(good, bad, atol=1e-4)
