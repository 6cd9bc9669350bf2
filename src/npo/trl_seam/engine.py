"""The run's one engine, used outside TRL's training step: guides, evaluation and AutoNPO's measurement
go through the trainer's own model and generation path, never through a second copy of the model.

- `EnginePolicy`: the live policy as an `npo.models.generation.Policy`, sampled and scored collectively:
  every process passes the same prompts, samples its share (`npo.models.share.Share`: equal parts, so every
  process issues the same forwards and `generate` calls) through TRL's path -- HF `generate`
  inside TRL's `unwrap_model_for_generation` (which gathers ZeRO-3 shards), or TRL's vLLM engine when
  `use_vllm` is set (`npo.trl_seam.vllm`) -- with TRL's sampling fields, and gets everyone's share
  back. Every prompt has its own seed, so the samples do not depend on the process count (up to a
  near-tie flipped by float rounding). vLLM's log-probs are replaced by the training model's forward,
  as the loss sees them.
- `load_weights`: a checkpoint's weights into the live model in place (model only), for scoring a
  past policy; under ZeRO-3 from the checkpoint's consolidated 16-bit weights, a module at a time.
- `generation_model`: the unwrapped, generation-ready live model for a block of work.
- `EpochRepeatSampler`: TRL's sampler with each epoch's permutation a pure function of (seed, epoch).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.utils import RepeatSampler

from npo.algo.order import epoch_seed
from npo.models.generation import Policy, Sample, Sampling, prompt_ids
from npo.models.share import Share
from npo.trl_seam.vllm import vllm_sample


def sharded(trainer) -> bool:
    """Whether the model's weights are sharded over the processes (ZeRO-3, FSDP): then every forward and
    generate step is a collective."""
    return trainer.accelerator.num_processes > 1 and (trainer.is_fsdp_enabled or (
        trainer.is_deepspeed_enabled and is_deepspeed_zero3_enabled()))


@contextlib.contextmanager
def generation_model(trainer):
    """The live model, unwrapped for generation (ZeRO-3 shards gathered for the block: collective)."""
    with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                     gather_deepspeed3_params=trainer.args.ds3_gather_for_generation) as model:
        yield model


def load_weights(trainer, checkpoint) -> None:
    """The model weights of `checkpoint` into the live engine, in place (no optimizer, no RNG)."""
    from accelerate.utils import is_peft_model

    if trainer.is_deepspeed_enabled:
        peft = is_peft_model(trainer.model)  # HF saves a PEFT model's DeepSpeed checkpoint without its frozen base
        weights = _consolidated(Path(checkpoint))
        if is_deepspeed_zero3_enabled() and not peft and weights:
            load_into_zero3(trainer.model_wrapped.module, weights)
        else:  # ZeRO-3 without 16-bit weights rebuilds fp32 ones from every rank's shards, on every rank
            trainer.model_wrapped.load_checkpoint(str(checkpoint), load_module_only=True, load_optimizer_states=False,
                                                  load_lr_scheduler_states=False, load_module_strict=not peft)
    else:
        trainer._load_from_checkpoint(str(checkpoint), trainer.model_wrapped if trainer.is_fsdp_enabled else None)
    if trainer.use_vllm:
        trainer._last_loaded_step = -1  # the vLLM engine holds other weights now


def _consolidated(checkpoint: Path) -> dict[str, Path]:
    """Tensor name -> file of a checkpoint's consolidated weights (ZeRO-3's `zero3_save_16bit_model`);
    empty when it has none."""
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        return {k: checkpoint / f for k, f in json.loads(index.read_text())["weight_map"].items()}
    single = checkpoint / "model.safetensors"
    if not single.is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(single), "pt") as f:
        return {k: single for k in f.keys()}


def load_into_zero3(module, weights: dict[str, Path]) -> None:
    """Consolidated weights into a ZeRO-3 partitioned module, in place, a submodule at a time: its
    parameters are gathered, process 0 copies the file's tensors in (the only process that reads),
    and DeepSpeed partitions them again. Host memory: one submodule's parameters."""
    import deepspeed
    import torch
    import torch.distributed as dist
    from safetensors import safe_open

    reader = dist.get_rank() == 0 if dist.is_initialized() else True
    files: dict[Path, object] = {}
    seen: set[int] = set()
    with contextlib.ExitStack() as stack:
        for prefix, sub in module.named_modules():
            params = [(n, p) for n, p in sub.named_parameters(recurse=False) if id(p) not in seen]
            seen.update(id(p) for _, p in params)
            if not params:
                continue
            with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=0), torch.no_grad():
                if not reader:
                    continue
                for name, p in params:
                    key = f"{prefix}.{name}" if prefix else name
                    if key not in weights:
                        raise KeyError(f"{key}: not among the checkpoint's consolidated weights")
                    if weights[key] not in files:
                        files[weights[key]] = stack.enter_context(safe_open(str(weights[key]), "pt"))
                    p.data.copy_(files[weights[key]].get_tensor(key))


class EnginePolicy(Policy):
    """The run's live policy, sampled and scored through the trainer's own engine (collective calls:
    every process passes the same items)."""

    def __init__(self, trainer):
        super().__init__(trainer.model, trainer.processing_class, trainer.style, sampling=Sampling.of(trainer.args),
                         budget=trainer.score_budget, synced_gpus=True if sharded(trainer) else None)
        self.trainer = trainer
        self.share = Share.of(trainer.accelerator)

    def _longest_prompt(self, items) -> int:
        return max(map(len, prompt_ids(self.tokenizer, items, self.style, self.sampling.chat_template_kwargs)))

    def sample(self, items: list, *, k: int, temperature: float, max_new_tokens: int,
               seeds: list[int], rows: int | None = None) -> list[list[Sample]]:
        if not items:
            return []
        longest = self._longest_prompt(items)  # blocks sized from all the prompts: the same calls everywhere
        rows = rows or self.sample_rows(longest, max_new_tokens)
        score_rows = self.score_rows(longest + max_new_tokens)

        def work(part):
            mine, mine_seeds = [it for it, _ in part], [s for _, s in part]
            if self.trainer.use_vllm:
                groups = vllm_sample(self.trainer, self, mine, k, temperature, max_new_tokens, mine_seeds)
                return self._with_training_logps(mine, groups, temperature, score_rows)
            with generation_model(self.trainer) as model:
                return self._on(model).sample(mine, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
                                              seeds=mine_seeds, rows=rows)

        return self.share.run(list(zip(items, seeds)), work)

    def token_logps(self, items, completions, temperature: float = 1.0, rows: int | None = None):
        if not items:
            return []
        rows = rows or self.score_rows(self._longest_prompt(items) + max(map(len, completions)))

        def work(part):
            with generation_model(self.trainer) as model:
                return self._on(model).token_logps([it for it, _ in part], [c for _, c in part], temperature, rows)

        return self.share.run(list(zip(items, completions)), work)

    def _on(self, model) -> Policy:
        return Policy(model, self.tokenizer, self.style, self.sampling, self.budget, self.synced_gpus)

    def _with_training_logps(self, items, groups, temperature, rows) -> list[list[Sample]]:
        """vLLM's samples of this process's share, their log-probs recomputed by the training model
        (the loss's numerics)."""
        flat = [(it, s) for it, group in zip(items, groups) for s in group]
        with generation_model(self.trainer) as model:
            logps = self._on(model).token_logps([it for it, _ in flat], [s.token_ids for _, s in flat], temperature,
                                                rows)
        it = iter(logps)
        return [[Sample(s.token_ids, s.text, [round(x, 6) for x in next(it)]) for s in group] for group in groups]


class EpochRepeatSampler(RepeatSampler):
    """TRL's RepeatSampler whose permutation of epoch e is seeded by `npo.algo.order.epoch_seed(seed, e)`
    (HF calls `set_epoch` before every epoch, including the one a resumed run starts in)."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        return super().__iter__()
