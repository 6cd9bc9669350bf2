"""npo's own sampling and scoring at a real vocabulary (Qwen's 151,936 tokens; a model built from a
config with a tiny hidden size): memory bounded by the budget's blocks, never by rows x length x
vocabulary, and the blocks give the full log-softmax's values. Before, 16 completions of 256 tokens
were scored through 7.3 GB, and sampling 16 x 128 tokens kept every step's logits (3.6 GB at its peak:
BENCHMARKS.md, `benchmarks/real_vocab.py --blocks`)."""

import json
import subprocess
import sys

import pytest
import torch

from npo.config.run import TinyModelConfig
from npo.models.generation import Policy
from npo.models.load import load_policy
from npo.models.tiny import QWEN_VOCAB, real_vocab_folder
from npo.tasks.base import Item

from conftest import ROOT

MB = 1 << 20


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    arch = TinyModelConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                           intermediate_size=32, max_position_embeddings=512)
    return real_vocab_folder(tmp_path_factory.mktemp("vocab") / "m", arch)


def items(n):
    return [Item(f"{i}+{i}=", str(2 * i)) for i in range(n)]


def test_scoring_and_sampling_hold_a_block_of_the_vocabulary(folder):
    """Measured in a process of its own (a long-lived test worker's allocator says more about its past):
    scoring 16 x 64 tokens and sampling 4 x 4 x 32 tokens with a 64 MiB budget (the code before held
    about 1.8 GB and 0.9 GB for them, twice the bound and more; at the benchmark's sizes 7.3 and 3.6 GB)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_vocab.py"), "--here", str(folder),
                           "--tokens", "64", "32"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peaks = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(peaks) == {"scoring", "sampling"}
    for work, measured in peaks.items():
        assert measured["peak_mb"] < 400, (work, measured)


def test_the_blocks_give_the_full_log_softmax(folder):
    model, tok = load_policy(folder)
    assert model.config.vocab_size == QWEN_VOCAB == len(tok)
    policy = Policy(model, tok, "plain", budget=8 * MB)  # a few dozen positions per block of the head
    gen = torch.Generator().manual_seed(0)
    comps = [torch.randint(3, QWEN_VOCAB, (40,), generator=gen).tolist() for _ in range(3)]
    for it, c, lp in zip(items(3), comps, policy.token_logps(items(3), comps)):
        ids = tok(it.question)["input_ids"] + c
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -len(c) - 1:-1].float()
        ref = logits.log_softmax(-1).gather(-1, torch.tensor(c)[:, None]).squeeze(-1)
        assert torch.allclose(ref, torch.tensor(lp), atol=1e-4)
    # the log-probs kept as it samples are the sampled tokens' under the model
    groups = policy.sample(items(2), k=2, temperature=1.0, max_new_tokens=16, seeds=[1, 2])
    flat = [(it, s) for it, g in zip(items(2), groups) for s in g]
    again = policy.token_logps([it for it, _ in flat], [s.token_ids for _, s in flat])
    for (_, s), lp in zip(flat, again):
        assert len(s.token_ids) == len(s.logps) > 0 and torch.allclose(torch.tensor(s.logps), torch.tensor(lp), atol=1e-4)
