"""The run's one engine, used outside TRL's training step: guides, evaluation and AutoNPO's measurement
go through the trainer's own model and generation path, never through a second copy of the model.

- `EnginePolicy`: the live policy as an `npo.generation.Policy`. Sampling is collective: every
  process passes the same prompts, takes a share (process p the prompts p, p + P, ...), samples it
  through TRL's path -- HF `generate` inside TRL's `unwrap_model_for_generation` (which gathers
  ZeRO-3 shards), or TRL's vLLM engine when `use_vllm` is set, synced to the current weights first --
  and gets everyone's share back. Every prompt has its own seed, so the samples do not depend on
  the process count (up to a near-tie flipped by float rounding). vLLM's log-probs are replaced by
  the training model's forward, as the loss sees them.
- `load_weights`: a checkpoint's weights into the live model in place (model only), for scoring a
  past policy; the vLLM engine is marked stale so the next generation re-syncs.
- `generation_model`: the unwrapped, generation-ready live model for a block of work.
- `EpochRepeatSampler`: TRL's sampler with each epoch's permutation a pure function of (seed, epoch).
"""

from __future__ import annotations

import contextlib

from accelerate.utils import broadcast_object_list, gather_object
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.utils import RepeatSampler

from npo.generation import Policy, Sample, prompt_ids, text_tokenizer
from npo.images import open_image
from npo.order import epoch_seed


@contextlib.contextmanager
def generation_model(trainer):
    """The live model, unwrapped for generation (ZeRO-3 shards gathered for the block: collective)."""
    with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                     gather_deepspeed3_params=trainer.args.ds3_gather_for_generation) as model:
        yield model


def load_weights(trainer, checkpoint) -> None:
    """The model weights of `checkpoint` into the live engine, in place (no optimizer, no RNG)."""
    if trainer.is_deepspeed_enabled:
        trainer.model_wrapped.load_checkpoint(str(checkpoint), load_module_only=True, load_optimizer_states=False,
                                              load_lr_scheduler_states=False)
    else:
        trainer._load_from_checkpoint(str(checkpoint), trainer.model_wrapped if trainer.is_fsdp_enabled else None)
    if trainer.use_vllm:
        trainer._last_loaded_step = -1  # the vLLM engine holds other weights now


class EnginePolicy(Policy):
    """The run's live policy, sampled and scored through the trainer's own engine (collective calls)."""

    def __init__(self, trainer):
        super().__init__(trainer.model, trainer.processing_class, trainer.style)
        self.trainer = trainer

    def sample(self, items: list, *, k: int, temperature: float, max_new_tokens: int,
               seeds: list[int]) -> list[list[Sample]]:
        t = self.trainer
        rank, world = t.accelerator.process_index, t.accelerator.num_processes
        share = list(range(rank, len(items), world))
        mine_items, mine_seeds = [items[i] for i in share], [seeds[i] for i in share]
        if t.use_vllm:
            rows = _vllm_sample(t, self, mine_items, k, temperature, max_new_tokens, mine_seeds)
            rows = self._with_training_logps(mine_items, rows, temperature)
        else:
            with generation_model(t) as model:
                rows = Policy(model, self.tokenizer, self.style).sample(
                    mine_items, k=k, temperature=temperature, max_new_tokens=max_new_tokens, seeds=mine_seeds)
        if world == 1:
            return rows
        out: list = [None] * len(items)
        for part_share, part_rows in gather_object([(share, rows)]):
            for i, r in zip(part_share, part_rows):
                out[i] = r
        return out

    def token_logps(self, items, completions, temperature: float = 1.0, batch_size: int = 256):
        with generation_model(self.trainer) as model:
            return Policy(model, self.tokenizer, self.style).token_logps(items, completions, temperature, batch_size)

    def _with_training_logps(self, items, rows, temperature) -> list[list[Sample]]:
        """vLLM's samples, their log-probs recomputed by the training model (the loss's numerics)."""
        flat = [(it, s) for it, group in zip(items, rows) for s in group]
        logps = self.token_logps([it for it, _ in flat], [s.token_ids for _, s in flat], temperature)
        it = iter(logps)
        return [[Sample(s.token_ids, s.text, [round(x, 6) for x in next(it)]) for s in group] for group in rows]


def _vllm_sample(trainer, policy: Policy, items, k, temperature, max_new_tokens, seeds) -> list[list[Sample]]:
    """k samples per prompt from TRL's vLLM engine, one request (and seed) per prompt. Colocate: each
    process asks its own share of its own engine. Server: the main process asks for every process's
    share (gathered) and broadcasts the answers."""
    from vllm import SamplingParams  # vLLM is an optional dependency (the `gpu` extra)

    vg, tok = trainer.vllm_generation, text_tokenizer(policy.tokenizer)
    if trainer.state.global_step != trainer._last_loaded_step:  # the engine must hold the current weights
        vg.sync_weights()
        trainer._last_loaded_step = trainer.state.global_step
    ids = prompt_ids(policy.tokenizer, items, policy.style)
    params = [SamplingParams(n=k, temperature=temperature, max_tokens=max_new_tokens, logprobs=0, seed=seed)
              for seed in seeds]
    if vg.mode == "colocate":
        if vg.enable_sleep_mode:
            vg.llm.wake_up(tags=["kv_cache"])
        # Token prompts, with an image prompt's image beside its ids, as TRL's VLLMGeneration asks
        prompts = [{"prompt_token_ids": p, **({"multi_modal_data": {"image": open_image(it.image)}} if it.image else {})}
                   for p, it in zip(ids, items)]
        outputs = vg.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        if vg.enable_sleep_mode:
            vg.llm.sleep(level=2)
            vg._llm_weights_sleeping = True
        completions = [[list(o.token_ids) for o in out.outputs] for out in outputs]
    else:  # server: one request per prompt (per-prompt seeds), from the main process only
        asks = [x for part in gather_object([list(zip(ids, seeds))]) for x in part]
        answers = [None]
        if trainer.accelerator.is_main_process:
            answers = [[vg.vllm_client.generate(prompts=[p], n=k, temperature=temperature, max_tokens=max_new_tokens,
                                                generation_kwargs={"seed": s})["completion_ids"] for p, s in asks]]
        broadcast_object_list(answers, from_process=0)
        start = sum(len(part) for part in gather_object([len(ids)])[:trainer.accelerator.process_index])
        completions = answers[0][start:start + len(ids)]
    return [[Sample(c, tok.decode(c, skip_special_tokens=True), None) for c in group] for group in completions]


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
