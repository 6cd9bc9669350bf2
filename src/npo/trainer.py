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
- `_get_train_sampler()`: TRL's RepeatSampler, seeded per epoch (`npo.order`), so that the prompts of
  any step are a pure function of (seed, step) and a rollback into epoch >= 1 replays that epoch.
- One trainer per run, rolled back in place: a run calls `train(resume_from_checkpoint=...)` on the
  same trainer for every segment. `train` keeps accelerate's `free_memory()` from destroying the
  DeepSpeed engine on re-entry, and `_prepare_for_training` loads the checkpoint into the existing
  engine (model, optimizer, scheduler; HF restores RNG and data position) instead of building a new
  one; on its first call it can save `checkpoint-0`, the target of a rollback to the start (and
  calls the callbacks' `on_save`, which write its completion marker, as for every checkpoint).

Everything else -- rewards, group advantages, the clipped loss, optimizer, logging, checkpoints --
is TRL's path. `tests/test_trl_seam.py` pins the private methods used here by source hash.

What the trainer shares with the loop around it: the run's `Ledger`, passed at construction (it
books the on-policy tokens it generates); and per segment (`begin_segment`) the segment's `Guidance`
(it asks the guide source, handing the `self` source the live policy, and injects) and `on_gate`,
which receives each training generation's `GateOutcome` (AutoNPO's controller input).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.integrations.deepspeed import deepspeed_load_checkpoint
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import RepeatSampler

from npo.accounting import Ledger
from npo.order import DataOrder, epoch_seed
from npo.config import RunConfig
from npo.grpo_args import grpo_kwargs
from npo.engine import EnginePolicy
from npo.groups import group_stats
from npo.injection import gate, guide_token_weights, inject, local_rows, replacement_rows, weighted_advantages
from npo.prompting import build_prompt
from npo.rewards import make_reward_fn
from npo.tasks.verify import VerifyStats


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


class EpochRepeatSampler(RepeatSampler):
    """TRL's RepeatSampler whose permutation of epoch e is seeded by `npo.order.epoch_seed(seed, e)`
    (HF calls `set_epoch` before every epoch, including the one a resumed run starts in)."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        return super().__iter__()


class NPOTrainer(GRPOTrainer):
    def __init__(self, *args, scorer, items, style: str = "plain", npo=None, guidance=None,
                 ledger: Ledger | None = None, on_gate=None, start_dir: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_dir = start_dir  # where to write checkpoint-0 when the engine is built (a rollback to 0 may come)
        self._engine = None  # accelerate's registrations of the prepared engine, kept across segments
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

    # ------------------------------------------------------------------ one engine per run

    def begin_segment(self, out_dir: Path, callbacks, guidance=None, on_gate=None) -> None:
        """Point the trainer at the next segment: where it checkpoints, its callbacks, its guidance.
        TRL's per-generation state starts over (a segment starts on a generation boundary), and the
        vLLM engine is marked stale, since a rollback changes the weights without changing the step."""
        self.args.output_dir = str(out_dir)
        for cb in callbacks:
            self.add_callback(cb)
        self.guidance, self.on_gate, self.visited = guidance, on_gate, []
        self._step, self._buffered_inputs = 0, None
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        if self.use_vllm:
            self._last_loaded_step = -1

    def end_segment(self, callbacks) -> None:
        for cb in callbacks:
            self.remove_callback(cb)
        self.guidance = self.on_gate = None

    @property
    def engine_built(self) -> bool:
        return self._engine is not None

    def data_order(self) -> DataOrder:
        args = self.args
        return DataOrder(len(self.train_dataset), args.generation_batch_size // self.num_generations,
                         args.steps_per_generation, self.num_iterations, args.gradient_accumulation_steps,
                         args.seed)

    def _get_train_sampler(self, dataset=None):
        return EpochRepeatSampler(data_source=dataset if dataset is not None else self.train_dataset,
                                  mini_repeat_count=self.num_generations,
                                  batch_size=self.args.generation_batch_size // self.num_generations,
                                  repeat_count=self.num_iterations * self.args.steps_per_generation,
                                  shuffle=self.shuffle_dataset, seed=self.args.seed)

    def train(self, resume_from_checkpoint=None, **kwargs):
        if self._engine is not None:  # re-entry: `free_memory()` must not destroy the DeepSpeed engine
            self.accelerator.deepspeed_engine_wrapped = None
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _prepare_for_training(self, max_steps, train_dataloader, resume_from_checkpoint):
        if self._engine is None:  # the run's first segment: HF builds the engine
            model, train_dataloader = super()._prepare_for_training(max_steps, train_dataloader, resume_from_checkpoint)
            acc = self.accelerator
            self._engine = (getattr(acc, "deepspeed_engine_wrapped", None), list(acc._models),
                            list(acc._optimizers), list(acc._schedulers))
            if self.start_dir is not None and resume_from_checkpoint is None:
                segment_dir, self.args.output_dir = self.args.output_dir, str(self.start_dir)
                self._save_checkpoint(model, trial=None)
                self.control = self.callback_handler.on_save(self.args, self.state, self.control)  # its marker
                self.args.output_dir = segment_dir
            return model, train_dataloader
        acc = self.accelerator  # later segments: the same engine, the checkpoint loaded into it
        acc.deepspeed_engine_wrapped, acc._models, acc._optimizers, acc._schedulers = (
            self._engine[0], list(self._engine[1]), list(self._engine[2]), list(self._engine[3]))
        if self.is_deepspeed_enabled:
            deepspeed_load_checkpoint(self.model_wrapped, resume_from_checkpoint, load_module_strict=True)
        elif self.is_fsdp_enabled:  # plain and DDP models were loaded by `train` before this call
            self._load_from_checkpoint(resume_from_checkpoint, self.model_wrapped)
        self._load_optimizer_and_scheduler(resume_from_checkpoint)
        self._load_scaler(resume_from_checkpoint)
        for attr in ("model", "optimizer", "lr_scheduler"):
            setattr(self.callback_handler, attr, getattr(self, attr))
        self.callback_handler.train_dataloader = train_dataloader
        return self.model_wrapped, train_dataloader

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

    def _check_verifier(self, before) -> None:
        """Every process stops together when the batch's verifications mostly failed (TaskScorer.check)."""
        delta = self.scorer.stats.since(before)
        counts = torch.tensor([delta.calls, delta.errors, delta.timeouts], device=self.accelerator.device)
        calls, errors, timeouts = self.accelerator.gather(counts).view(-1, 3).sum(0).tolist()
        self.scorer.check(VerifyStats(calls, errors, timeouts), f"step {self.state.global_step + 1}")

    def _generate(self, prompts):
        out = super()._generate(prompts)
        if not self.model.training:
            return out
        prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images = out
        device = self.accelerator.device
        items = [self.items[i] for i in self._batch_index]
        before = self.scorer.snapshot()
        local = torch.tensor([self.scorer.reward(c, it) for c, it in zip(completions, items)], device=device)
        rewards = self.accelerator.gather(local)  # (G*n,) in global row order
        self._check_verifier(before)
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

    def live_policy(self):
        """The policy being trained, sampled through this trainer's own engine (`npo.engine`)."""
        return EnginePolicy(self)

    def _inject(self, gated, completion_ids, completions, logprobs):
        n, L, step = self.num_generations, len(completion_ids), self.state.global_step
        pid = self.accelerator.process_index
        # every gated group's slot; whether its prompt has a guide is known only after `fill` below
        rows = replacement_rows(gated, torch.ones_like(gated), n, self.npo.replace_slot)
        mine = local_rows(rows, pid, L)  # gated slots this process holds
        indices = [self._batch_index[r] for r in mine]
        # every process asks for every process's gated prompts, so all banks stay identical
        wanted = indices if self.accelerator.num_processes == 1 else [i for part in gather_object([indices])
                                                                        for i in part]
        asked = self.guidance.fill(wanted, [self.items[i] for i in wanted], step, live=self.live_policy())
        if asked and self.accelerator.is_main_process:
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
