"""Tasks and verifiers: `build_task(spec, options)` resolves `arith`, `rg:NAME`, `jsonl:PATH`, `parquet:PATH`."""

from npo.tasks.base import Item, Task, build_task, disjoint_split, register

__all__ = ["Item", "Task", "build_task", "disjoint_split", "register"]
