"""A collective job over a list every process holds: each process takes a part of equal length, padded
with stand-ins whose results are dropped, so that every process issues the same forwards and
`generate` calls whatever the list's length (under ZeRO-3 or FSDP each forward gathers weights, a
collective, and HF's `synced_gpus` keeps processes in step only if all of them call `generate`)."""

from __future__ import annotations

from dataclasses import dataclass

from accelerate.utils import gather_object


@dataclass(frozen=True)
class Share:
    """This process's part of a job over a list of n that every process holds."""

    rank: int = 0
    world: int = 1

    @classmethod
    def of(cls, accelerator) -> "Share":
        return cls(accelerator.process_index, accelerator.num_processes)

    def indices(self, n: int, pad: bool = True) -> list[int]:
        """Positions rank, rank + world, ... of the list, padded with -1 (a stand-in) to ceil(n / world),
        the same length on every process (`pad`: for work that issues collectives)."""
        mine = list(range(self.rank, n, self.world))
        return mine + [-1] * ((-(-n // self.world) - len(mine)) if pad else 0)

    def run(self, rows: list, work, pad: bool = True) -> list:
        """`work(part)` on this process's part of `rows` (stand-ins: rows[0]), one result per row;
        everyone's results, in the order of `rows`."""
        index = self.indices(len(rows), pad)
        part = work([rows[i if i >= 0 else 0] for i in index]) if index else []
        if self.world == 1:
            return part
        out: list = [None] * len(rows)
        for idx, results in gather_object([(index, part)]):
            for i, r in zip(idx, results):
                if i >= 0:
                    out[i] = r
        return out


ALONE = Share()  # one process holds the whole job: the default of every function that takes a share
