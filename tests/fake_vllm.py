"""A CPU stand-in for the vLLM library: the one test double of the suite, because vLLM needs a GPU.

`install(monkeypatch)` puts a `vllm` module in place that TRL's real `VLLMGeneration` (colocate mode)
drives unchanged: its `sync_weights`, its `generate`, and TRL's importance-sampling correction all run
as they would on a GPU. What the tests rely on behaves like vLLM:
- the engine holds its own copy of the weights, loaded from the model folder when it starts and
  changed only through `load_weights` (TRL's sync streams the training weights in by name);
- a request with a `seed` samples from a generator of its own (child j of `n` from `seed + j`), so
  its samples do not depend on the other requests; requests without one use the engine's generator;
- outputs are vLLM's layout (`RequestOutput.outputs[j].token_ids`, `.logprobs` as one
  `{token_id: Logprob}` per position with processed, temperature-scaled log-probs), ending at EOS;
- `reset_prefix_cache`, `sleep`, `wake_up` are counted, and every `generate` call is recorded with the
  engine's weights at that moment, so a test can compare them with the trainer's.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    max_tokens: int = 16
    logprobs: int | None = None
    seed: int | None = None
    repetition_penalty: float = 1.0
    prompt_logprobs: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Logprob:
    logprob: float
    rank: int = 1


@dataclass
class CompletionOutput:
    token_ids: list[int]
    logprobs: list[dict] | None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list[dict | None] | None = None


class _Runner:  # llm.llm_engine.model_executor.driver_worker.model_runner.model
    def __init__(self, llm):
        self.llm = llm

    def load_weights(self, weights) -> None:
        params = dict(self.llm.model.named_parameters())
        with torch.no_grad():
            for name, tensor in weights:
                params[name].copy_(tensor)
        self.llm.loads += 1


class LLM:
    def __init__(self, model: str, seed: int = 0, **kwargs):
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.eos = self.model.generation_config.eos_token_id
        self.generator = torch.Generator().manual_seed(seed)
        runner = types.SimpleNamespace(model=_Runner(self))
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(
            driver_worker=types.SimpleNamespace(model_runner=runner)))
        self.loads = self.prefix_resets = self.sleeps = self.wakes = 0
        self.calls: list[dict] = []  # every generate call: its requests' params and the engine's weights

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.named_parameters()}

    def reset_prefix_cache(self) -> None:
        self.prefix_resets += 1

    def sleep(self, level: int = 1) -> None:
        self.sleeps += 1

    def wake_up(self, tags=None) -> None:
        self.wakes += 1

    @torch.no_grad()
    def generate(self, prompts, sampling_params=None, use_tqdm=False):
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        self.calls.append({"params": params, "weights": self.weights()})
        return [RequestOutput(p["prompt_token_ids"], [self._sample(p["prompt_token_ids"], sp, j) for j in range(sp.n)],
                              self._prompt_logprobs(p["prompt_token_ids"]) if sp.prompt_logprobs is not None else None)
                for p, sp in zip(prompts, params)]

    def _prompt_logprobs(self, ids: list[int]) -> list[dict | None]:
        """vLLM's layout: None for the first token, then each token's log-prob given the ones before."""
        logp = self.model(torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
        return [None] + [{t: Logprob(float(logp[i, t]))} for i, t in enumerate(ids[1:])]

    def _sample(self, prompt: list[int], sp: SamplingParams, child: int) -> CompletionOutput:
        gen = torch.Generator().manual_seed(sp.seed + child) if sp.seed is not None else self.generator
        ids, tokens, logprobs = list(prompt), [], []
        for _ in range(sp.max_tokens):
            logits = self.model(torch.tensor([ids])).logits[0, -1].float() / sp.temperature
            logp = logits.log_softmax(-1)
            token = int(torch.multinomial(logp.exp(), 1, generator=gen))
            tokens.append(token)
            logprobs.append({token: Logprob(float(logp[token]))})
            ids.append(token)
            if token == self.eos:
                break
        return CompletionOutput(tokens, logprobs if sp.logprobs is not None else None)


def install(monkeypatch) -> None:
    """Make `import vllm` and TRL's vLLM backend use this module."""
    import trl.generation.vllm_generation as vg

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams, fake.RequestOutput = LLM, SamplingParams, RequestOutput
    params = types.ModuleType("vllm.sampling_params")
    params.StructuredOutputsParams = dict
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", params)
    monkeypatch.setattr(vg, "LLM", LLM, raising=False)
    monkeypatch.setattr(vg, "SamplingParams", SamplingParams, raising=False)
    monkeypatch.setattr(vg, "is_vllm_available", lambda *a, **k: True)
