"""Models: the embedded tiny default (`tiny`), local Hugging Face folders, SmolLM2 from its GGUF."""

from npo.models.load import load_policy, resolve_model_path

__all__ = ["load_policy", "resolve_model_path"]
