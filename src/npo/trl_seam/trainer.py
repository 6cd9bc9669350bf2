"""The one seam into TRL: `GuidedGRPOTrainer`, a thin subclass of `trl.GRPOTrainer` (trl==1.16.0).

What it changes, and why:
- `_generate`: after TRL samples each prompt's n completions, verify them, gather the generation batch's rewards (a
  group can straddle processes), log the group signals and, inside a guidance window, overwrite M rows of each group
  the injection rules pick and a guide exists for (`npo.algo.injection`). TRL then scores the *mixed* group and
  computes advantages over it.
- `_generate_and_score_completions`: remembers the batch's task items (source `replay`: first swaps a share of them
  for questions from the buffer, ExGRPO), adds the per-row flag `npo_guide`, which rides TRL's shuffle and split to
  the loss, and hands new successes to the replay buffer.
- `_compute_loss` / `_get_per_token_logps_and_entropies`: a `guide_loss` other than `on_policy` turns the flagged
  rows' advantages into per-token weighted ones; the guide rows' log-probs come from TRL's own loss forward. Every
  forward npo adds runs on every process: under ZeRO-3 / FSDP it is a collective.
- `_get_train_sampler`: TRL's RepeatSampler seeded per epoch (`npo.algo.order`): any step's prompts are a pure
  function of (seed, step), so a rollback into epoch >= 1 replays that epoch.
- `train` / `_prepare_for_training`: one trainer per run, rolled back in place. Re-entry keeps the DeepSpeed engine
  (accelerate's `free_memory()` would destroy it) and loads the checkpoint into it; the first call can save
  `checkpoint-0`, the target of a rollback to the start.
Image prompts are TRL's multimodal rows: a guide replaces only a completion, so it trains with its
prompt's image (`npo.trl_seam.multimodal.row_fields`). Everything else is TRL's.

The private TRL / transformers surface this module touches, exactly (`tests/test_trl_seam.py` pins each
one and checks this list against its pins):
    overridden: GRPOTrainer._generate, GRPOTrainer._generate_and_score_completions,
                GRPOTrainer._compute_loss, GRPOTrainer._get_per_token_logps_and_entropies,
                GRPOTrainer._get_train_sampler, Trainer._prepare_for_training, Trainer.train
    called:     Trainer._load_from_checkpoint, Trainer._load_optimizer_and_scheduler,
                Trainer._load_scaler, Trainer._save_checkpoint, Trainer._inner_training_loop (through train)
    attributes: GRPOTrainer._metrics, GRPOTrainer._step, GRPOTrainer._buffered_inputs,
                GRPOTrainer._last_loaded_step
Shared with the loop: the run's `Ledger`; per segment (`begin_segment`) the `Guidance` it injects from
and `on_gate` (AutoNPO's input); per checkpoint the injection state (`injection_state`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import torch
from accelerate.utils import gather_object, is_peft_model
from transformers.integrations.deepspeed import deepspeed_load_checkpoint
from trl import GRPOTrainer

from npo.algo.accounting import Ledger
from npo.algo.groups import GateOutcome, below_gate, group_stats
from npo.algo.injection import (
    GUIDE_LOSSES,
    guide_token_weights,
    guided_groups,
    inject,
    local_rows,
    slot_rows,
    weighted_advantages,
)
from npo.algo.order import DataOrder
from npo.algo.replay import Entry, ReplayBuffer, collection_plan, question_index, replayed_groups, solve_rate
from npo.tasks.verify import VerifyStats
from npo.trl_seam.engine import EnginePolicy, EpochRepeatSampler
from npo.trl_seam.multimodal import dataset_row, row_fields


class GuidedGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, scorer, items, style: str = "plain", npo=None, guidance=None,
                 ledger: Ledger | None = None, on_gate=None, start_dir: Path | None = None,
                 replay: ReplayBuffer | None = None, replay_share: float = 0.0, kept: int | None = None,
                 score_budget: int = 2 << 30, **kwargs):
        super().__init__(*args, **kwargs)
        self.score_budget = score_budget  # bytes one block of npo's own sampling or scoring may take (npo.models.generation)
        self.kept = kept or self.num_generations  # G: the on-policy samples of a group (n less added guide rows)
        self.replay, self.replay_share = replay, replay_share  # ExGRPO's buffer (npo.algo.replay), None without
        self.started = False  # the start_solve_rate latch: injection on (saved with checkpoints)
        self._question = question_index(items)
        self._replayed: set[int] = set()  # groups of this batch whose question came from the buffer
        self._collect: list[tuple[int, int, int, int, str]] = []  # (group, question, correct, local row, text)
        self.start_dir = start_dir  # where to write checkpoint-0 when the engine is built (a rollback to 0 may come)
        self._engine = None  # accelerate's registrations of the prepared engine, kept across segments
        self.scorer = scorer  # npo.tasks.rewards.TaskScorer: verified binary rewards
        self.items = items  # the training items; dataset rows carry their index
        self.style = style  # how prompts are built from items (npo.tasks.prompting)
        self.npo = npo  # npo.config.run.NPOSection, or None for plain GRPO
        self.guidance = guidance  # npo.guides.bank.Guidance for this segment's window, or None
        self.ledger = ledger or Ledger()  # on_policy_tokens: completion tokens generated for training, all processes
        self.on_gate = on_gate  # called with each training generation's GateOutcome
        self.visited: list[tuple[int, list[int]]] = []  # (step, item indices): the data order seen
        self._batch_index: list[int] = []
        self._guide_flags: list[bool] | None = None
        self._guide_logps: list[list[float] | None] = []
        self._loss_guides = None  # the micro-batch's guide flags while TRL computes its loss (on_policy's metric)
        self._guide_sums = torch.zeros(3)  # the optimizer step's guide-row log-prob, tokens, rows so far

    # ------------------------------------------------------------------ one engine per run

    def begin_segment(self, out_dir: Path, callbacks, guidance=None, on_gate=None) -> None:
        """The next segment: where it checkpoints, its callbacks, its guidance. TRL's per-generation state starts over
        (a segment starts on a generation boundary); vLLM's weights are stale: a rollback changes them, not the step."""
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

    def injection_state(self) -> dict:
        """What a checkpoint keeps of the injection: the latch and the replay buffer."""
        return {"started": self.started, "replay": self.replay.to_json() if self.replay is not None else None}

    def restore_injection(self, state: dict | None) -> None:
        """Back to a checkpoint's injection state (None: the start of a run)."""
        self.started = bool(state and state.get("started"))
        if self.replay is not None:
            self.replay.load_json(state.get("replay") if state else None)

    def _injecting(self) -> bool:
        return self.npo.start_solve_rate == 0 or self.started

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
        if self.is_deepspeed_enabled:  # as HF's own first load: a PEFT checkpoint holds no frozen base weights
            deepspeed_load_checkpoint(self.model_wrapped, resume_from_checkpoint,
                                      load_module_strict=not is_peft_model(self.model))
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
        self._replayed, self._collect = set(), []
        if self.model.training and self.replay is not None and self.replay_share > 0 and self._injecting():
            inputs = self._swap_in_replayed(inputs)
        self._batch_index = [int(x["item_index"]) for x in inputs]
        self._guide_flags = None
        if self.model.training:
            self.visited.append((self.state.global_step, list(dict.fromkeys(self._batch_index))))
        output = super()._generate_and_score_completions(inputs)
        if self._guide_flags is not None:
            output["npo_guide"] = torch.tensor(self._guide_flags, dtype=torch.bool, device=output["advantages"].device)
            self._score_guides(output, output["npo_guide"])
        if self.replay is not None and self.model.training:
            self._collect_successes(output)
        return output

    def _swap_in_replayed(self, inputs):
        """ExGRPO's batch share: replay.share of the step's groups get a question drawn from the buffer
        instead of the data order's (the same draw on every process: the buffer is the same everywhere)."""
        n, rows = self.num_generations, len(inputs)
        batch = self.accelerator.gather(torch.tensor([int(x["item_index"]) for x in inputs],
                                                     device=self.accelerator.device)).tolist()
        rng = random.Random(self.args.seed * 1_000_003 + self.state.global_step)
        chosen = replayed_groups(self.replay, len(batch) // n, self.replay_share, rng,
                                 exclude={self._question[self.items[i].key] for i in batch[::n]})
        lo = self.accelerator.process_index * rows
        out = list(inputs)
        for r in range(rows):
            if (q := chosen.get((lo + r) // n)) is not None:
                out[r] = {**inputs[r], **dataset_row(self.items[q], self.style, q)}
        self._replayed = set(chosen)
        self._metrics["train"]["npo/replayed_groups"].append(float(len(chosen)))
        return out

    @torch.no_grad()
    def _collect_successes(self, output) -> None:
        """The batch's collected successes into the buffer, with the behaviour policy's per-token
        log-probs and mean entropy (this policy, before the step's update); gathered, so every process
        adds the same entries in the same order."""
        mine = [(g, r, text) for g, _, _, r, text in self._collect if r >= 0]
        entries: list[tuple[int, Entry]] = []
        # every process runs the forward, on row 0 when it collects nothing: under ZeRO-3 / FSDP it is a collective
        rows = [r for _, r, _ in mine] or [0]
        ids, mask = output["completion_ids"][rows], output["completion_mask"][rows]
        logps, entropies = self._get_per_token_logps_and_entropies(
            self.model, torch.cat([output["prompt_ids"][rows], ids], 1), torch.cat([output["prompt_mask"][rows], mask], 1),
            ids.size(1), compute_entropy=True, **row_fields(output, rows))[:2]
        for j, (g, _, text) in enumerate(mine):
            w = int(mask[j].sum())
            entries.append((g, Entry(ids[j, :w].tolist(), text, logps[j, :w].tolist(), self.state.global_step,
                                     float(entropies[j, :w].mean()) if w else 0.0)))
        if self.accelerator.num_processes > 1:  # in process order: the same list everywhere
            entries = [e for part in gather_object([entries]) for e in part]
        for g, q, correct, r, _ in self._collect:
            if r < 0:  # one record per group, in group order: its accuracy, then its successes
                self.replay.observe(q, correct, self.kept, [e for h, e in entries if h == g])
        self._metrics["train"]["npo/replay_questions"].append(float(len(self.replay)))

    # ------------------------------------------------------------------ seam 2: verify, gate, inject

    def _check_verifier(self, before) -> None:
        """Every process stops together when the batch's verifications mostly failed (TaskScorer.check)."""
        delta = self.scorer.stats.since(before)
        counts = torch.tensor([delta.calls, delta.errors, delta.timeouts], device=self.accelerator.device)
        calls, errors, timeouts = self.accelerator.gather(counts).view(-1, 3).sum(0).tolist()
        self.scorer.check(VerifyStats(calls, errors, timeouts), f"step {self.state.global_step + 1}")

    def _generate(self, prompts):
        # ---- TRL: sample the n completions of every prompt (HF generate or vLLM) ----
        out = super()._generate(prompts)
        if not self.model.training:
            return out
        # ---- npo: verify, gather the generation batch's rewards, log the on-policy group signals ----
        prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images = out
        device, n, kept = self.accelerator.device, self.num_generations, self.kept
        items = [self.items[i] for i in self._batch_index]
        before = self.scorer.snapshot()
        trl = {"prompts": prompts, "completion_ids": completion_ids}  # a reward function's, as TRL passes them
        local = torch.tensor(self.scorer.rewards(completions, items, trl=trl), device=device)  # one batch, as TRL
        rewards = self.accelerator.gather(local)  # (B*n,) in global row order
        self._check_verifier(before)
        lengths = self.accelerator.gather(torch.tensor([len(c) for c in completion_ids], device=device))
        self.ledger.on_policy_tokens += int(lengths.sum().item())
        on_policy = rewards.view(-1, n)[:, :kept]  # (B, G): what the group's own policy wrote
        metrics = self._metrics["train"]
        for key, value in group_stats(on_policy.reshape(-1), kept).items():
            metrics[key].append(value)  # on-policy signals, before any injection
        metrics["signal/generated_tokens"].append(float(self.ledger.on_policy_tokens))
        if self.npo is None:
            return out
        # ---- npo: the gate and injection. Injection is on exactly while `self.guidance` is set: the
        # segment that retrains a window is given its Guidance (begin_segment) and drops it after
        # (end_segment); outside it the gate is only measured ----
        batch = self.accelerator.gather(torch.tensor(self._batch_index, device=device))  # item per global row
        p_hat = on_policy.float().mean(1)
        if self.on_gate is not None:
            self.on_gate(GateOutcome.of(self.state.global_step, on_policy, batch[::n], below_gate(p_hat, self.npo.tau)))
        self._guide_flags = [False] * len(completion_ids)
        self._guide_logps = [None] * len(completion_ids)
        overwritten: set[int] = set()
        if self.guidance is not None and self.guidance.active(self.state.global_step) and self._injecting():
            eligible = None
            if self.npo.targets == "replayed":
                eligible = torch.tensor([g in self._replayed for g in range(len(p_hat))], device=p_hat.device)
            groups = guided_groups(p_hat, self.npo.tau, self.npo.gated, eligible)
            completion_ids, completions, logprobs, overwritten = self._inject(groups, batch, p_hat, completion_ids,
                                                                              completions, logprobs)
        else:  # outside a window the gate is still measured: how many groups a guide could help
            metrics["npo/gated_groups"].append(float(below_gate(p_hat, self.npo.tau).sum()))
            metrics["npo/replaced_groups"].append(0.0)
        if self.replay is not None:
            self._plan_collection(on_policy, batch, completions, overwritten)
        if self.npo.start_solve_rate > 0:  # the latch: whether this step could inject
            metrics["npo/injecting"].append(float(self._injecting()))
        if not self.started and solve_rate(on_policy) > self.npo.start_solve_rate:
            self.started = True  # from the next step on (ExGRPO's switch to mixed-policy training)
        # ---- TRL: the mixed groups go back, to be scored, normalized into advantages and trained ----
        return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images

    def _plan_collection(self, on_policy, batch, completions, overwritten: set[int]) -> None:
        """Which of this process's rows the replay buffer keeps: the correct on-policy rows (not
        overwritten by a guide) of groups with 0 < correct < G; and every group's accuracy."""
        n, rows = self.num_generations, len(completions)
        questions = [self._question[self.items[int(i)].key] for i in batch[::n]]
        self._collect = [(g, q, correct, r, completions[r] if r >= 0 else "") for g, q, correct, r in collection_plan(
            on_policy.tolist(), questions, n, self.kept, self.accelerator.process_index * rows, rows, overwritten)]

    def live_policy(self):
        return EnginePolicy(self)  # the policy being trained, sampled through this trainer's own engine

    def _inject(self, groups, batch, p_hat, completion_ids, completions, logprobs):
        """Guides into M rows of each chosen group that has them (`slot_rows`), but the controls' (`Guidance.given`).
        Every process asks for every group's prompt (all banks stay the same), and overwrites only its own rows."""
        n, rows, step = self.num_generations, len(completion_ids), self.state.global_step
        chosen = torch.nonzero(groups).flatten().tolist()
        wanted = [int(batch[g * n]) for g in chosen]
        asked = self.guidance.fill(wanted, [self.items[i] for i in wanted], step, live=self.live_policy())
        if asked and self.accelerator.is_main_process:
            self.guidance.save()
        targets, pending, replaced, written = [], [], 0, 0  # every process's rows, then this one's
        given, controls = self.guidance.given(wanted, [self.items[i].key for i in wanted], p_hat[chosen].tolist(), step)
        for g, found in zip(chosen, given):
            replaced += bool(found)
            written += len(found)
            targets += slot_rows(g, len(found), n, self.kept, self.npo.fill, self.npo.replace_slot)
            pending += found
        held = local_rows(targets, self.accelerator.process_index, rows)
        mine, guides = [r for _, r in held], [pending[i] for i, _ in held]
        completion_ids, completions, logprobs, flags = inject(completion_ids, completions, logprobs, mine, guides)
        for r, g in zip(mine, guides):
            self._guide_logps[r] = g.logps
        self._guide_flags = flags
        self.guidance.book_injected(written)
        metrics = self._metrics["train"]
        metrics["npo/gated_groups"].append(float(len(chosen)))
        metrics["npo/replaced_groups"].append(float(replaced))
        metrics["npo/guide_rows"].append(float(written))
        if chosen:  # a control's prompt had a guide too
            metrics["npo/guide_hit_rate"].append((replaced + controls) / len(chosen))
        if self.guidance.controls:  # npo.controls: the gated groups with a guide that kept their on-policy rows
            metrics["npo/control_groups"].append(float(controls))
        return completion_ids, completions, logprobs, set(mine)

    # ------------------------------------------------------------------ guide rows before and in the loss

    @torch.no_grad()
    def _score_guides(self, output, flags):
        """guide_loss importance / shaping: the guide rows' per-token log-probs under the current policy, before the
        loss, as per-token weights (and the `npo/guide_logp` metric; on_policy's comes from TRL's loss forward)."""
        if self.npo.guide_loss == "on_policy" or self.guidance is None or not self.guidance.active(self.state.global_step):
            return
        device = flags.device
        # every process runs the forward, on row 0 when it holds no guide row: under ZeRO-3 / FSDP it is a collective
        rows = torch.nonzero(flags).flatten().tolist() or [0]
        prompt_ids, completion_ids, mask = output["prompt_ids"][rows], output["completion_ids"][rows], \
            output["completion_mask"][rows]
        logps, _, _ = self._get_per_token_logps_and_entropies(
            self.model, torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([output["prompt_mask"][rows], mask], dim=1), completion_ids.size(1),
            **row_fields(output, rows))  # a guide row is scored with its prompt's images
        if not flags.any():
            mask = torch.zeros_like(mask)  # row 0 stood in: it is nobody's guide
        self._book_guides(logps, mask, rows=int(flags.sum()))
        if flags.any():
            guide = None
            if GUIDE_LOSSES[self.npo.guide_loss].needs_logps:
                guide = torch.zeros_like(logps)
                for j, r in enumerate(rows):
                    lp = self._guide_logps[r]
                    guide[j, :len(lp)] = torch.tensor(lp[:logps.size(1)], device=device)
            weights = guide_token_weights(self.npo.guide_loss, logps, guide, self.npo.importance_cap,
                                          self.npo.shaping_gamma) * mask
            output["advantages"] = weighted_advantages(output["advantages"], flags, weights, completion_ids.size(1))
        self._log_guides()

    def _compute_loss(self, model, inputs):
        flags, g = inputs.get("npo_guide"), self.guidance
        on_policy = self.npo is not None and self.npo.guide_loss == "on_policy"
        self._loss_guides = (flags, inputs["completion_mask"]) if flags is not None and on_policy and g is not None \
            and g.active(self.state.global_step) else None  # the same on every process: it books a collective
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._loss_guides = None

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._loss_guides is not None:  # TRL's loss forward of a micro-batch: its guide rows' log-probs, as trained
            flags, mask = self._loss_guides
            self._book_guides(out[0].detach()[flags], mask[flags], rows=int(flags.sum()))
            if (self._step + 1) % self.current_gradient_accumulation_steps == 0:  # the step's last micro-batch
                self._log_guides()
        return out

    def _book_guides(self, logps, mask, rows: int) -> None:
        """This process's guide rows of a forward, summed over every process (a collective: every process
        books every forward)."""
        sums = torch.stack([(logps * mask).sum(), mask.sum(), torch.tensor(float(rows), device=mask.device)]).float()
        self._guide_sums = self._guide_sums.to(sums.device) + self.accelerator.gather(sums.unsqueeze(0)).sum(0)

    def _log_guides(self) -> None:
        total, self._guide_sums = self._guide_sums, torch.zeros(3)
        if total[2] > 0:
            self._metrics["train"]["npo/guide_logp"].append(float(total[0] / total[1].clamp(min=1)))
            self._metrics["train"]["npo/guide_length"].append(float(total[1] / total[2]))
