"""NPO's gate on constructed groups, then two real guided steps: `gate()`, which tests/engine_worker.py
runs in the session's two-process launch (mode `gate`) and tests/test_distributed.py in one process.

    torchrun --nproc_per_node P tests/dist_gate_worker.py OUT_JSON

3 prompts x 4 samples = 12 rows; with P = 2 each process holds 6, so group 1 (rows 4..7) straddles
both processes. The completions TRL sampled are overwritten with a fixed pattern of right and
wrong answers, so the gate's decisions are known and must not depend on P:
    group 0: 0/4 right (gated)   group 1: rows 4,5 right, 6,7 wrong (p_hat 0.5, gated; a process
    that looked only at its own half would see 1.0 or 0.0)   group 2: 3/4 right (not gated).
"""

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from accelerate.utils import gather_object  # noqa: E402
from helpers import tiny_trainer  # noqa: E402
from trl import GRPOTrainer  # noqa: E402

from npo.algo.injection import Trajectory
from npo.guides.bank import Guidance, GuideBank  # noqa: E402
from npo.guides.sources import SelfSource, TraceSource  # noqa: E402

RIGHT = [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]]
original_generate = GRPOTrainer._generate


def gate() -> dict:
    """The gate's flags and counts at both replace slots, then two trained steps' banks (every process)."""
    tmp = Path(tempfile.mkdtemp())
    sets = ["method=npo", "npo.interventions=[{kind: bootstrap, lookahead: 2}]", "train.steps=2",
            "train.prompts_per_step=3", "train.grpo.num_generations=4"]
    _, trainer = tiny_trainer(tmp, *sets)
    acc = trainer.accelerator
    tok, n = trainer.processing_class, 4
    batch = [trainer.train_dataset[i] for i in range(3) for _ in range(n)]
    rows = len(batch) // acc.num_processes
    lo = acc.process_index * rows
    items = [trainer.items[b["item_index"]] for b in batch]

    def patterned(self, prompts):  # TRL's real generation, then the fixed pattern of answers
        out = list(original_generate(self, prompts))
        texts = [items[r].answer if RIGHT[r // n][r % n] else "x" for r in range(lo, lo + rows)]
        out[1] = [tok.encode(t, add_special_tokens=False) + [tok.eos_token_id] for t in texts]
        out[3] = texts
        return tuple(out)

    bank = GuideBank()
    for b in batch:
        ids = tok.encode("g", add_special_tokens=False) + [tok.eos_token_id]
        bank.add(b["item_index"], [Trajectory(ids, items[0].answer, "constructed", 0, [-1.0] * len(ids))])
    # a source that is never asked: the bank holds every prompt of the batch
    trainer.guidance = Guidance(TraceSource({}, "constructed"), trainer.scorer, bank, 0, 2, seed=0)
    result = {}
    GRPOTrainer._generate = patterned
    try:
        for slot in (0, -1):
            trainer.npo.replace_slot = slot
            trainer.model.train()
            output = trainer._generate_and_score_completions(batch[lo:lo + rows])
            flags = [f for part in gather_object([output["npo_guide"].tolist()]) for f in part]
            result[str(slot)] = {"flags": flags,
                                 "gated": trainer._metrics["train"]["npo/gated_groups"][-1],
                                 "replaced": trainer._metrics["train"]["npo/replaced_groups"][-1]}
    finally:
        GRPOTrainer._generate = original_generate
    # two real guided optimizer steps with the `self` source across the processes
    src = SelfSource(k=2, temperature=1.0, max_new_tokens=6)
    trainer.guidance = Guidance(src, trainer.scorer, GuideBank(), 0, 2, seed=0)
    trainer.train()
    result["trained_steps"] = trainer.state.global_step
    result["bank_sizes"] = gather_object([len(trainer.guidance.bank.tried)])
    result["processes"] = acc.num_processes
    return result


def main(out: str) -> None:
    from engine_worker import end_processes  # engine_worker imports this module: not at its top

    result = gate()
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out).write_text(json.dumps(result))
    end_processes()


if __name__ == "__main__":
    os.environ.setdefault("NPO_CACHE", str(Path(__file__).resolve().parents[1] / ".npo-cache"))
    torch.set_num_threads(1)
    main(sys.argv[1])
