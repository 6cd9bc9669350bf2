"""A CPU stand-in for the vLLM library: the one test double of the suite, because vLLM needs a GPU.

`install(monkeypatch)` puts a `vllm` module in place that TRL's real `VLLMGeneration` drives unchanged:
its `sync_weights`, its `generate`, and TRL's importance-sampling correction all run as they would on
a GPU. What the tests rely on behaves like vLLM:
- the engine holds its own copy of the weights, loaded from the model folder when it starts and
  changed only through `load_weights` (TRL's sync streams the training weights in by name);
- sleep mode: `sleep(level=2)` discards the weights (they are overwritten with noise, as memory vLLM
  has freed would hold anything), `wake_up` maps memory again without restoring them, so an engine
  that samples before the training weights are pushed again samples garbage; level 1 keeps them;
- tensor parallelism (`tensor_parallel_size` > 1): the processes of the group are one engine, so each
  `generate` call checks that every member asked it the same requests (a real engine hangs or mixes
  up sequences otherwise);
- a request with a `seed` samples from a generator of its own (child j of `n` from `seed + j`), so
  its samples do not depend on the other requests; requests without one use the engine's generator;
- outputs are vLLM's layout (`RequestOutput.outputs[j].token_ids`, `.logprobs` as one
  `{token_id: Logprob}` per position with processed, temperature-scaled log-probs), ending at EOS;
- `reset_prefix_cache`, `sleep`, `wake_up` are counted, and every `generate` call is recorded with the
  engine's weights at that moment, so a test can compare them with the trainer's.

`VLLMClient` stands in for TRL's client of a `trl vllm-serve` server (`install(..., server=MODEL)`): a
server holding its own weights (pushed by TRL's `update_named_params`), answering batched `generate`
requests (a list of prompts, n samples each, one `seed` in `generation_kwargs` for the request) and
`image_features`; every request is recorded.
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
        self.llm.load(weights)
        self.llm.loads += 1


class _Engine:
    """A model with vLLM's sampling: the part the colocated engine and the server share."""

    def __init__(self, model: str, seed: int = 0):
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.eos = self.model.generation_config.eos_token_id
        self.generator = torch.Generator().manual_seed(seed)
        self.calls: list[dict] = []  # every generate call: its requests' params and the engine's weights

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.named_parameters()}

    def load(self, weights) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in weights:
                params[name].copy_(tensor)
                self.loaded.add(name)
        if self.loaded >= set(params):
            self.discarded = False

    loaded: set = set()  # names written since the weights were last discarded
    discarded = False  # sleep level 2 freed the weights; only a load of every one writes real ones again

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


class LLM(_Engine):
    def __init__(self, model: str, seed: int = 0, tensor_parallel_size: int = 1, enable_sleep_mode: bool = False,
                 **kwargs):
        super().__init__(model, seed)
        self.tensor_parallel_size, self.enable_sleep_mode = tensor_parallel_size, enable_sleep_mode
        runner = types.SimpleNamespace(model=_Runner(self))
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(
            driver_worker=types.SimpleNamespace(model_runner=runner)))
        self.loads = self.prefix_resets = self.sleeps = self.wakes = 0

    def reset_prefix_cache(self) -> None:
        self.prefix_resets += 1

    def sleep(self, level: int = 1) -> None:
        self.sleeps += 1
        if level == 2:
            gen = torch.Generator().manual_seed(1000 + self.sleeps)
            with torch.no_grad():
                for p in self.model.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * 3)
            self.discarded, self.loaded = True, set()

    def wake_up(self, tags=None) -> None:
        self.wakes += 1

    @torch.no_grad()
    def generate(self, prompts, sampling_params=None, use_tqdm=False):
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        if self.tensor_parallel_size > 1:
            self._check_one_engine(prompts, params)
        self.calls.append({"params": params, "weights": self.weights(), "discarded": self.discarded})
        return [RequestOutput(p["prompt_token_ids"], [self._sample(p["prompt_token_ids"], sp, j) for j in range(sp.n)],
                              self._prompt_logprobs(p["prompt_token_ids"]) if sp.prompt_logprobs is not None else None)
                for p, sp in zip(prompts, params)]

    def _check_one_engine(self, prompts, params) -> None:
        """The tensor-parallel group's members must have asked the same requests (the group: every process)."""
        import torch.distributed as dist

        mine = [(p["prompt_token_ids"], sp.n, sp.seed) for p, sp in zip(prompts, params)]
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
        if any(x != everyone[0] for x in everyone):
            raise RuntimeError("the members of one tensor-parallel vLLM engine asked it different requests")

    def _prompt_logprobs(self, ids: list[int]) -> list[dict | None]:
        """vLLM's layout: None for the first token, then each token's log-prob given the ones before."""
        logp = self.model(torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
        return [None] + [{t: Logprob(float(logp[i, t]))} for i, t in enumerate(ids[1:])]


class VLLMClient(_Engine):
    """TRL's client of `trl vllm-serve`, with the server behind it in this process (`SERVER_MODEL`)."""

    model_path: str = ""  # set by install(server=...)
    instances: list = []

    def __init__(self, base_url=None, group_port=None, connection_timeout=0.0, **kwargs):
        super().__init__(self.model_path)
        self.requests: list[dict] = []  # every generate request: its prompts, n, seed, features
        self.updates = 0
        VLLMClient.instances.append(self)

    def init_communicator(self, device=None) -> None:
        pass

    def get_server_info(self) -> dict:
        return {"model_config": {"logprobs_mode": "processed_logprobs"}}

    def update_named_params(self, metadata, named_params) -> None:
        self.load(named_params)
        self.updates += 1

    def reset_prefix_cache(self) -> None:
        pass

    @torch.no_grad()
    def get_sequence_logprobs(self, sequences, prompt_lengths, top_logprobs=100, temperature=1.0, **kwargs) -> dict:
        """Each sequence's tokens after its prompt, their log-probs (the actual token's, as TRL's client)."""
        out = []
        for seq, n in zip(sequences, prompt_lengths):
            logp = (self.model(torch.tensor([seq])).logits[0, :-1].float() / temperature).log_softmax(-1)
            out.append([[float(logp[i - 1, seq[i]])] for i in range(n, len(seq))])
        return {"actual_logprobs": out}

    def image_features(self, images) -> list[dict | None]:
        return [None if not ims else {"images": ims, "mm_placeholders": {"image": [{}] * len(ims)}} for ims in images]

    @torch.no_grad()
    def generate(self, prompts, features=None, n=1, repetition_penalty=1.0, temperature=1.0, top_p=1.0, top_k=0,
                 min_p=0.0, max_tokens=16, logprobs=0, structured_outputs_regex=None, generation_kwargs=None) -> dict:
        seed = (generation_kwargs or {}).get("seed")
        self.requests.append({"prompts": [list(p) for p in prompts], "n": n, "seed": seed, "features": features,
                              "temperature": temperature, "top_p": top_p, "top_k": top_k, "weights": self.weights()})
        sp = SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, logprobs=logprobs, seed=seed)
        outs = [self._sample(list(p), sp, j) for p in prompts for j in range(n)]  # prompt-major, as the server
        return {"prompt_ids": [list(p) for p in prompts], "completion_ids": [o.token_ids for o in outs],
                "logprobs": [[[next(iter(d.values())).logprob] for d in o.logprobs] for o in outs],
                "logprob_token_ids": [[[next(iter(d))] for d in o.logprobs] for o in outs]}


def install(monkeypatch, server: str | None = None) -> None:
    """Make `import vllm` and TRL's vLLM backend use this module (`server`: the model folder a fake `trl
    vllm-serve` serves, for vllm_mode server)."""
    import trl.generation.vllm_generation as vg

    if server is not None:
        VLLMClient.model_path, VLLMClient.instances = str(server), []
        monkeypatch.setattr(vg, "VLLMClient", VLLMClient, raising=False)

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams, fake.RequestOutput = LLM, SamplingParams, RequestOutput
    params = types.ModuleType("vllm.sampling_params")
    params.StructuredOutputsParams = dict
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", params)
    monkeypatch.setattr(vg, "LLM", LLM, raising=False)
    monkeypatch.setattr(vg, "SamplingParams", SamplingParams, raising=False)
    monkeypatch.setattr(vg, "is_vllm_available", lambda *a, **k: True)


class Patch:
    """`install`'s monkeypatch outside pytest (a torchrun worker): set for the process's life."""

    @staticmethod
    def setitem(mapping, key, value) -> None:
        mapping[key] = value

    @staticmethod
    def setattr(target, name, value, raising=True) -> None:
        setattr(target, name, value)
