"""The one seam into TRL: `NPOTrainer`, a thin subclass of `trl.GRPOTrainer` (trl==1.16.0).

What it changes, and why:
- `_generate(prompts)`: after TRL samples the n completions of each prompt, verify this process's
  completions, gather the rewards of the whole generation batch (a group can straddle processes),
  log the group signals, and -- inside an NPO window -- gate each group (p_hat < tau) and overwrite
  one slot of each gated group that has a guide (`npo.injection`). TRL then scores the *mixed*
  group with the unchanged reward function and computes advantages over it.
- `_generate_and_score_completions(inputs)`: remembers which task items the batch holds, and adds
  the per-row guide flag `npo_guide` to TRL's output dict. TRL shuffles and splits that dict
  row-wise, so the flag stays with its row all the way to `_compute_loss`. For `guide_loss`
  `importance` / `shaping` it turns the advantages of flagged rows into per-token weighted ones
  (TRL's loss accepts (B, T) advantages); `on_policy` (the paper's) leaves them alone.

Everything else -- rewards, group advantages, the clipped loss, optimizer, logging, checkpoints --
is TRL's path. `tests/test_trl_seam.py` pins the private methods used here by source hash.

What the trainer shares with the loop around it, all passed in at construction: the run's
`Ledger` (it books the on-policy tokens it generates), the segment's `Guidance` (it asks the guide
source, handing the `self` source the live policy, and injects), and `on_gate`, which receives each
training generation's `GateOutcome` (AutoNPO's controller input).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import GRPOConfig, GRPOTrainer

from npo.accounting import Ledger
from npo.config import RunConfig
from npo.grpo_args import grpo_kwargs
from npo.generation import Policy
from npo.groups import group_stats
from npo.injection import gate, guide_token_weights, inject, local_rows, replacement_rows, weighted_advantages
from npo.prompting import build_prompt
from npo.rewards import make_reward_fn


@dataclass
class GateOutcome:
    """One training generation's gate: the step, its prompts below tau, the group-accuracy histogram."""

    step: int
    failed: list[int]  # item indices of the groups below the gate
    histogram: list[float]  # fraction of groups with 0, 1, ..., n correct


def build_trainer(cfg: RunConfig, out_dir: Path, model, tokenizer, scorer, style: str, train_items, callbacks,
                  **npo_kwargs) -> "NPOTrainer":
    """An NPOTrainer for the run's config, writing its checkpoints to `out_dir`. `npo_kwargs`: the
    trainer's own arguments (guidance, ledger, on_gate); the gate is on for methods npo and autonpo."""
    dataset = Dataset.from_list([{"prompt": build_prompt(it, style), "item_index": i}
                                 for i, it in enumerate(train_items)])
    args = GRPOConfig(**grpo_kwargs(cfg, output_dir=str(out_dir)))
    trainer = NPOTrainer(model=model, reward_funcs=make_reward_fn(scorer, train_items), args=args,
                         train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks, scorer=scorer,
                         items=train_items, style=style, npo=cfg.npo if cfg.method in ("npo", "autonpo") else None,
                         **npo_kwargs)
    for cb in (PrinterCallback, ProgressCallback):  # our own bar and files replace TRL's printing
        trainer.remove_callback(cb)
    return trainer


class NPOTrainer(GRPOTrainer):
    def __init__(self, *args, scorer, items, style: str = "plain", npo=None, guidance=None,
                 ledger: Ledger | None = None, on_gate=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.scorer = scorer  # npo.rewards.TaskScorer: verified binary rewards
        self.items = items  # the training items; dataset rows carry their index
        self.style = style  # how prompts are built from items (npo.prompting)
        self.npo = npo  # npo.config.NPOConfig, or None for plain GRPO
        self.guidance = guidance  # npo.guides.Guidance for this segment's window, or None
        self.ledger = ledger or Ledger()  # on_policy_tokens: completion tokens generated for training, all processes
        self.on_gate = on_gate  # called with each training generation's GateOutcome
        self.visited: list[tuple[int, list[int]]] = []  # (step, item indices): the data order seen
        self._batch_index: list[int] = []
        self._guide_flags: list[bool] | None = None
        self._guide_logps: list[list[float] | None] = []

    # ------------------------------------------------------------------ seam 1: the batch and its flag

    def _generate_and_score_completions(self, inputs):
        self._batch_index = [int(x["item_index"]) for x in inputs]
        self._guide_flags = None
        if self.model.training:
            self.visited.append((self.state.global_step, list(dict.fromkeys(self._batch_index))))
        output = super()._generate_and_score_completions(inputs)
        if self._guide_flags is not None:
            flags = torch.tensor(self._guide_flags, dtype=torch.bool, device=output["advantages"].device)
            output["npo_guide"] = flags
            self._score_guides(output, flags)
        return output

    # ------------------------------------------------------------------ seam 2: verify, gate, inject

    def _generate(self, prompts):
        out = super()._generate(prompts)
        if not self.model.training:
            return out
        prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images = out
        device = self.accelerator.device
        items = [self.items[i] for i in self._batch_index]
        local = torch.tensor([self.scorer.reward(c, it) for c, it in zip(completions, items)], device=device)
        rewards = self.accelerator.gather(local)  # (G*n,) in global row order
        lengths = self.accelerator.gather(torch.tensor([len(c) for c in completion_ids], device=device))
        self.ledger.on_policy_tokens += int(lengths.sum().item())
        metrics = self._metrics["train"]
        for key, value in group_stats(rewards, self.num_generations).items():
            metrics[key].append(value)  # on-policy signals, before any injection
        metrics["signal/generated_tokens"].append(float(self.ledger.on_policy_tokens))
        if self.npo is not None:
            gated = gate(rewards, self.num_generations, self.npo.tau)  # (G,) identical on every process
            if self.on_gate is not None:
                self.on_gate(self._gate_outcome(rewards, gated))
            self._guide_flags = [False] * len(completion_ids)
            self._guide_logps = [None] * len(completion_ids)
            if self.guidance is not None and self.guidance.active(self.state.global_step):
                completion_ids, completions, logprobs = self._inject(gated, completion_ids, completions, logprobs)
            else:  # outside a window the gate is still measured: how many groups a guide could help
                metrics["npo/gated_groups"].append(float(gated.sum()))
                metrics["npo/replaced_groups"].append(0.0)
        return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images

    def _gate_outcome(self, rewards, gated) -> GateOutcome:
        """The step's prompts below the gate and its group-accuracy histogram (AutoNPO's mistake pool)."""
        n = self.num_generations
        items = self.accelerator.gather(torch.tensor(self._batch_index, device=rewards.device))[::n]
        levels = (rewards.view(-1, n).sum(1)).long()
        histogram = (torch.bincount(levels, minlength=n + 1).float() / levels.numel()).tolist()
        return GateOutcome(self.state.global_step, items[gated.to(items.device)].tolist(), histogram)

    def live_policy(self) -> Policy:
        """The policy being trained, for guide sources defined relative to it (`self`)."""
        return Policy(self.model, self.processing_class, self.style)

    def _inject(self, gated, completion_ids, completions, logprobs):
        n, L, step = self.num_generations, len(completion_ids), self.state.global_step
        pid = self.accelerator.process_index
        # every gated group's slot; whether its prompt has a guide is known only after `fill` below
        rows = replacement_rows(gated, torch.ones_like(gated), n, self.npo.replace_slot)
        mine = local_rows(rows, pid, L)  # gated slots this process holds
        indices = [self._batch_index[r] for r in mine]
        self.guidance.fill(indices, [self.items[i] for i in indices], step, salt=pid, live=self.live_policy())
        new = self.guidance.drain_new()
        if self.accelerator.num_processes > 1:  # keep every process's bank identical
            new = [e for part in gather_object([new]) for e in part]
            self.guidance.merge(new)
        if new and self.accelerator.is_main_process:
            self.guidance.save()
        guides = self.guidance.lookup(indices)
        hit = [(r, g) for r, g in zip(mine, guides) if g is not None]
        completion_ids, completions, logprobs, flags = inject(
            completion_ids, completions, logprobs, [r for r, _ in hit], [g for _, g in hit])
        for r, g in hit:
            self._guide_logps[r] = g.logps
        self._guide_flags = flags
        replaced = int(self.accelerator.gather(torch.tensor([len(hit)], device=self.accelerator.device)).sum())
        self.guidance.stats.injected += replaced
        metrics = self._metrics["train"]
        metrics["npo/gated_groups"].append(float(gated.sum()))
        metrics["npo/replaced_groups"].append(float(replaced))
        if gated.any():
            metrics["npo/guide_hit_rate"].append(replaced / float(gated.sum()))
        return completion_ids, completions, logprobs

    # ------------------------------------------------------------------ guide rows before the loss

    @torch.no_grad()
    def _score_guides(self, output, flags):
        """Per-token log-probs of the guide rows under the current policy: the `npo/guide_logp`
        metric, and the weights of `guide_loss` importance / shaping."""
        if self.guidance is None or not self.guidance.active(self.state.global_step):
            return
        device = flags.device
        sums = torch.zeros(3, device=device)  # sum of token log-probs, tokens, rows
        if flags.any():
            prompt_ids, completion_ids = output["prompt_ids"][flags], output["completion_ids"][flags]
            mask = output["completion_mask"][flags]
            input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
            attention = torch.cat([output["prompt_mask"][flags], mask], dim=1)
            logps, _, _ = self._get_per_token_logps_and_entropies(self.model, input_ids, attention,
                                                                   completion_ids.size(1))
            sums += torch.stack([(logps * mask).sum(), mask.sum(), flags.sum()]).float()
            if self.npo.guide_loss != "on_policy":
                guide = None
                if self.npo.guide_loss == "importance":
                    guide = torch.zeros_like(logps)
                    for j, r in enumerate(torch.nonzero(flags).flatten().tolist()):
                        lp = self._guide_logps[r]
                        guide[j, :len(lp)] = torch.tensor(lp[:logps.size(1)], device=device)
                weights = guide_token_weights(self.npo.guide_loss, logps, guide, self.npo.importance_cap,
                                              self.npo.shaping_gamma) * mask
                output["advantages"] = weighted_advantages(output["advantages"], flags, weights,
                                                           completion_ids.size(1))
        total = self.accelerator.gather(sums.unsqueeze(0)).sum(0)
        if total[2] > 0:
            self._metrics["train"]["npo/guide_logp"].append(float(total[0] / total[1].clamp(min=1)))
            self._metrics["train"]["npo/guide_length"].append(float(total[1] / total[2]))
