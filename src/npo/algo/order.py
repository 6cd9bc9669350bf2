"""The data order as a pure function of (seed, step): what survives rollback and resume.

TRL's `RepeatSampler` draws one permutation per pass over the data from a generator it seeds once,
so a run rolled back into epoch e >= 1 replays epoch 0's order (its fresh sampler starts over). npo's
sampler (`npo.trl_seam.engine.EpochRepeatSampler`) seeds the permutation of epoch e with `epoch_seed(seed, e)`
instead; epoch 0 is TRL's own order, so runs within one pass are unchanged.

Layout (TRL's): a generation batch holds U = generation_batch_size / n unique prompts, each repeated
n times; it is reused for `steps_per_generation` optimizer steps, `num_iterations` times. With G
gradient-accumulation micro-steps per optimizer step, optimizer step s (0-based: the step taken when
`global_step == s`) belongs to chunk c = s * G // (num_iterations * steps_per_generation), and chunk
c takes the prompts perm_e[(c mod L) * U : (c mod L + 1) * U] with L = N // U chunks per epoch and
e = c // L. A rollback target must start a chunk (a generation boundary), or TRL would regenerate
mid-chunk on a different batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

EPOCH_STRIDE = 1_000_003  # a prime: epochs of one seed never collide with epoch 0 of another small seed


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s permutation; epoch 0's is the run's seed (TRL's first draw)."""
    return seed + epoch * EPOCH_STRIDE


@lru_cache(maxsize=4)  # a window spans one or two epochs; callers only slice the result
def permutation(n_items: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n_items, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch))).tolist()


@dataclass(frozen=True)
class DataOrder:
    n_items: int  # N, the training split
    prompts_per_generation: int  # U
    steps_per_generation: int
    num_iterations: int = 1
    grad_accum: int = 1
    seed: int = 0

    @property
    def steps_per_chunk(self) -> int:
        """Optimizer steps one generation batch serves: rollback targets are multiples of it."""
        return self.num_iterations * self.steps_per_generation // self.grad_accum

    def chunk(self, step: int) -> int:
        return step * self.grad_accum // (self.num_iterations * self.steps_per_generation)

    def prompts_at(self, step: int) -> list[int]:
        """The unique prompts (item indices, in order) of the generation batch optimizer step `step`
        trains on (0-based: taken when global_step == step)."""
        per_epoch = self.n_items // self.prompts_per_generation
        c = self.chunk(step)
        e, pos = divmod(c, per_epoch)
        u = self.prompts_per_generation
        return permutation(self.n_items, self.seed, e)[pos * u:(pos + 1) * u]

    def boundary(self, step: int) -> bool:
        return step % self.steps_per_chunk == 0

    def prompts_between(self, start: int, end: int) -> list[int]:
        """The distinct prompts, in order, that optimizer steps [start, end) train on (a guided window)."""
        return list(dict.fromkeys(x for s in range(start, end) if self.boundary(s) for x in self.prompts_at(s)))
