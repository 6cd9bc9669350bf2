"""The embedded default: tokenizer, Hugging Face round-trip, deterministic and cached warm start."""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from npo.config.run import TaskConfig, TinyModelConfig, WarmupConfig
from npo.models import tiny
from npo.tasks import build_task

SMALL = TinyModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                        intermediate_size=64, max_position_embeddings=32)


def test_char_tokenizer_round_trip(tmp_path):
    tok = tiny.build_tokenizer()
    text = "12+34= -7 (x*y)\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    assert (again.pad_token_id, again.eos_token_id) == (tiny.PAD_ID, tiny.EOS_ID)


def test_model_saves_and_loads_as_a_hf_folder(tmp_path):
    model = tiny.build_model(TinyModelConfig(), seed=0)
    assert 0.8e6 < sum(p.numel() for p in model.parameters()) < 1.2e6  # "about 1M parameters"
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert again.config.model_type == "qwen2"


def _items():
    return build_task("arith", {}).splits(500, 20, 0)[0]


def test_warmup_is_deterministic_for_a_seed():
    items = _items()
    warm = WarmupConfig(steps=4, batch_size=16, seed=3)
    a, _ = tiny.train_warmup(SMALL, warm, items)
    b, _ = tiny.train_warmup(SMALL, warm, items)
    c, _ = tiny.train_warmup(SMALL, WarmupConfig(steps=4, batch_size=16, seed=4), items)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_warmup_lowers_the_loss():
    items = _items()
    tok = tiny.build_tokenizer()
    ids, mask, labels = tiny.sft_batch(tok, items[:64], 32)
    before = tiny.build_model(SMALL, seed=0)
    after, _ = tiny.train_warmup(SMALL, WarmupConfig(steps=30, batch_size=64, seed=0), items)
    with torch.no_grad():
        lb = before(input_ids=ids, attention_mask=mask, labels=labels).loss
        la = after(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert la < lb - 0.5


def test_warm_start_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("NPO_CACHE", str(tmp_path))
    items, task = _items(), TaskConfig()
    warm = WarmupConfig(steps=2, batch_size=8)
    path = tiny.warmed_up_path(SMALL, warm, task, items)
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()

    def boom(*a, **k):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(tiny, "train_warmup", boom)
    assert tiny.warmed_up_path(SMALL, warm, task, items) == path
    assert not list(tmp_path.glob("warmup/.building-*"))  # no half-built folder left behind


def test_a_warm_start_asked_twice_at_once_is_trained_once(tmp_path, monkeypatch, capsys):
    """Two askers of one new warm start (two runs, two test workers): the second waits for the first's
    folder (a file lock per key) instead of training it again beside it."""
    import threading
    import time

    monkeypatch.setenv("NPO_CACHE", str(tmp_path))
    items, task, warm = _items(), TaskConfig(), WarmupConfig(steps=2, batch_size=8)
    trained, train_warmup = [], tiny.train_warmup

    def slow(*a, **k):
        trained.append(1)
        time.sleep(1.0)  # long enough for the second asker to find the lock taken
        return train_warmup(*a, **k)

    monkeypatch.setattr(tiny, "train_warmup", slow)
    paths = []
    askers = [threading.Thread(target=lambda: paths.append(tiny.warmed_up_path(SMALL, warm, task, items)))
              for _ in range(2)]
    for asker in askers:
        asker.start()
        time.sleep(0.2)
    for asker in askers:
        asker.join()
    assert len(trained) == 1 and len(paths) == 2 and paths[0] == paths[1]
    assert "waiting for another process building the warm start" in capsys.readouterr().err


def test_the_tiny_tokenizer_maps_text_outside_its_vocabulary_and_says_so(tmp_path, capsys):
    """Accents dropped, other non-ASCII as '?', newlines kept (never <pad>), and one warning line
    before a run on such a file."""
    from npo.config.run import load_config
    from npo.models.check import check_model
    from npo.models.tiny import PAD_ID, build_tokenizer
    from npo.tasks import build_split

    tok = build_tokenizer()
    ids = tok("café\n\nx☃", add_special_tokens=False)["input_ids"]
    assert PAD_ID not in ids and tok.decode(ids) == "cafe\n\nx?"
    rows = [{"question": f"{a}+{b}=", "answer": str(a + b)} for a in range(10, 20) for b in range(10, 13)]
    rows[4]["question"] = "12 + 14 = ? (réponse ☃)"
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, [f"task.spec=jsonl:{tmp_path / 'd.jsonl'}", "task.eval_size=5", "eval.n=5",
                             "train.prompts_per_step=4"])
    _, train_items, eval_items = build_split(cfg)
    check_model(cfg, train_items + eval_items, 8)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of 30 prompts" in err[0] and "row 5" in err[0] and "'é☃'" in err[0]
