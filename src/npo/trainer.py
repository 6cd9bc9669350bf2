"""The one seam into TRL: `NPOTrainer`, a thin subclass of `trl.GRPOTrainer` (trl==1.16.0).

What it changes, and why:
- `_generate_and_score_completions(inputs)`: remembers which task items the generation batch holds
  (the dataset column `item_index`), so that completions can be verified before TRL scores them.
- `_generate(prompts)`: after TRL generates, verifies this process's completions, gathers the rewards
  of the whole generation batch across processes (a group can straddle processes) and computes
  the group signals (`signal/*` metrics). NPO's gate and guide injection attach here (issue 3).

Everything else -- rewards, group advantages, the clipped loss, optimizer, logging, checkpoints --
is TRL's unchanged path. `tests/test_trl_seam.py` pins the private methods overridden here: it fails
loudly when TRL's signatures or call order change.
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer

from npo.groups import group_stats


class NPOTrainer(GRPOTrainer):
    def __init__(self, *args, scorer, items, **kwargs):
        super().__init__(*args, **kwargs)
        self.scorer = scorer  # npo.rewards.TaskScorer: verified binary rewards
        self.items = items  # the training items; dataset rows carry their index
        self._batch_items = None
        self.generated_tokens = 0  # completion tokens generated for training (all processes)

    def _generate_and_score_completions(self, inputs):
        self._batch_items = [self.items[x["item_index"]] for x in inputs]
        return super()._generate_and_score_completions(inputs)

    def _generate(self, prompts):
        out = super()._generate(prompts)
        if not self.model.training:
            return out
        _, completion_ids, _, completions, *_ = out
        device = self.accelerator.device
        local = torch.tensor([self.scorer.reward(c, it) for c, it in zip(completions, self._batch_items)],
                             device=device)
        rewards = self.accelerator.gather(local)  # (B*n,) in global row order
        lengths = self.accelerator.gather(torch.tensor([len(c) for c in completion_ids], device=device))
        self.generated_tokens += int(lengths.sum().item())
        for key, value in group_stats(rewards, self.num_generations).items():
            self._metrics["train"][key].append(value)
        self._metrics["train"]["signal/generated_tokens"].append(float(self.generated_tokens))
        return out
