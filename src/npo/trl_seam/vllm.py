"""Guides (and AutoNPO's samples) from TRL's vLLM engine: the same engine, weights and sampling fields
as TRL's rollouts, in each of TRL's vLLM modes.

- **The weights.** The engine is synced to the training weights before it samples when the step moved
  on since TRL last synced, when an in-place load marked it stale, or when TRL's sleep mode put it to
  sleep at level 2 after its own generation, which discards the weights: waking is not enough, they
  are pushed again (the failure class of TRL issue 5312). After sampling, a sleeping engine goes back
  to sleep as TRL leaves it, and TRL re-syncs before its next generation.
- **Colocate**: each process asks its share of its own engine, one request per prompt with its own
  seed (vLLM seeds request by request, so a prompt's samples do not depend on the others asked). With
  tensor parallelism the processes of a TP group are one engine: they gather their shares, ask the
  engine the same requests, and each keeps its own part (as TRL does for its rollouts).
- **Server** (`trl vllm-serve`): the main process asks for every process's share, in requests of
  `SERVER_BATCH` prompts, each request seeded with the seed of its first prompt (vLLM seeds every
  prompt of one request alike, so a bank is a function of the run's seed, the step and the prompts
  asked, as in colocate, but a prompt's samples also depend on which prompts share its request); image
  prompts carry their images as TRL sends them (server-side features). The other processes wait.
- **Sampling fields**: TRL's temperature is the guide's (npo.guide_temperature); top_p, top_k, min_p,
  repetition_penalty and generation_kwargs are TRL's (`npo.models.generation.Sampling`), prompts are built
  with its chat_template_kwargs.
"""

from __future__ import annotations

from accelerate.utils import broadcast_object_list, gather_object

from npo.models.generation import Sample, prompt_ids, text_tokenizer
from npo.tasks.images import open_image

SERVER_BATCH = 256  # prompts per request to `trl vllm-serve`
OWN_FIELDS = {"n", "seed", "max_tokens", "temperature", "logprobs"}  # set per guide request, never by generation_kwargs


def vllm_sample(trainer, policy, items, k: int, temperature: float, max_new_tokens: int, seeds) -> list[list[Sample]]:
    """k samples per item (this process's share) from TRL's vLLM engine; collective over the processes."""
    vg, tok, s = trainer.vllm_generation, text_tokenizer(policy.tokenizer), policy.sampling
    if trainer.state.global_step != trainer._last_loaded_step or getattr(vg, "_llm_weights_sleeping", False):
        vg.sync_weights()  # wakes a sleeping engine's weights and pushes the current ones
        trainer._last_loaded_step = trainer.state.global_step
    ids = prompt_ids(policy.tokenizer, items, policy.style, s.chat_template_kwargs)
    images = [[open_image(it.image)] if it.image else None for it in items]
    fields = dict(temperature=temperature, max_tokens=max_new_tokens, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p,
                  repetition_penalty=s.repetition_penalty)
    extra = {key: v for key, v in s.generation_kwargs.items() if key not in OWN_FIELDS}
    if vg.mode == "colocate":
        completions = _colocate(vg, ids, images, list(seeds), k, {**fields, **extra})
    else:
        completions = _server(trainer, vg, ids, images, list(seeds), k, fields, extra)
    return [[Sample(c, tok.decode(c, skip_special_tokens=True), None) for c in group] for group in completions]


def _colocate(vg, ids, images, seeds, k, fields) -> list[list[list[int]]]:
    import torch.distributed as dist
    from vllm import SamplingParams  # vLLM is an optional dependency (the `gpu` extra)

    lo, mine = 0, len(ids)
    if vg.tensor_parallel_size > 1:  # one engine for the group: one list of requests, every member's share
        parts = [None] * vg.tensor_parallel_size
        dist.all_gather_object(parts, (ids, images, seeds), group=vg.tp_group)
        lo = dist.get_rank(group=vg.tp_group) * mine  # shares have equal lengths (npo.trl_seam.engine.Share)
        ids, images, seeds = ([x for part in parts for x in part[j]] for j in range(3))
    prompts = [{"prompt_token_ids": p, **({"multi_modal_data": {"image": im[0]}} if im else {})}
               for p, im in zip(ids, images)]
    params = [SamplingParams(n=k, logprobs=0, seed=seed, **fields) for seed in seeds]
    if vg.enable_sleep_mode:
        vg.llm.wake_up(tags=["kv_cache"])
    outputs = vg.llm.generate(prompts, sampling_params=params, use_tqdm=False)
    if vg.enable_sleep_mode:  # as TRL leaves it: weights discarded, re-pushed before the next generation
        vg.llm.sleep(level=2)
        vg._llm_weights_sleeping = True
    return [[list(o.token_ids) for o in out.outputs] for out in outputs][lo:lo + mine]


def _server(trainer, vg, ids, images, seeds, k, fields, extra) -> list[list[list[int]]]:
    acc = trainer.accelerator
    asks = [x for part in gather_object([list(zip(ids, images, seeds))]) for x in part]  # process order
    answers = [None]
    if acc.is_main_process:
        answers = [[]]
        for start in range(0, len(asks), SERVER_BATCH):
            chunk = asks[start:start + SERVER_BATCH]
            chunk_ids = [p for p, _, _ in chunk]
            features = None
            if any(im for _, im, _ in chunk):  # TRL's server path for images: features made server-side
                made = vg.vllm_client.image_features([im for _, im, _ in chunk])
                features = [vg._place_features(f, p) for f, p in zip(made, chunk_ids)]
            out = vg.vllm_client.generate(prompts=chunk_ids, features=features, n=k, logprobs=0, **fields,
                                          generation_kwargs={**extra, "seed": chunk[0][2]})
            flat = out["completion_ids"]  # prompt-major: the k completions of a prompt, then the next prompt's
            answers[0] += [flat[i * k:(i + 1) * k] for i in range(len(chunk))]
    broadcast_object_list(answers, from_process=0)
    start = acc.process_index * len(ids)  # shares have equal lengths (npo.trl_seam.engine.Share)
    return answers[0][start:start + len(ids)]
