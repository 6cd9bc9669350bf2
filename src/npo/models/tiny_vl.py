"""`tiny-vl`: the embedded default's vision-language sibling, a Qwen3-VL model built from a config.

Its language model has `model.tiny`'s shape and the character tokenizer plus Qwen-VL's vision tokens;
its vision tower is `model.vision` (4-pixel patches merged 2 x 2: a 48 x 16 image is 12 vision
tokens). The folder is a normal Qwen3-VL folder (`Qwen3VLForConditionalGeneration`, a Qwen3-VL
processor with Qwen-VL's image processor), except for its chat template: the image then the text,
no roles, marked `npo:plain` so that npo gives it plain prompts and reads the whole completion as
the answer, as for `tiny`.

Qwen-VL processors of transformers 5.x carry a video processor, which needs torchvision. Where
torchvision is missing (this project's CPU machines: no torchvision build matches torch 2.13's CPU
wheel), `load_processor` builds the same processor without it: npo prompts carry images only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from npo.models.generation import conversations
from npo.models.tiny import BOS_ID, EOS_ID, PAD_ID, Recipe, build_tokenizer
from npo.tasks.prompting import PLAIN_MARK

VISION_TOKENS = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
# The image, then the text of each message; no roles and no generation prompt (the completion follows).
CHAT_TEMPLATE = ("{#- " + PLAIN_MARK + " -#}{%- for m in messages %}{%- if m.content is string %}{{ m.content }}"
                 "{%- else %}{%- for p in m.content %}{%- if p.type == 'image' %}<|vision_start|><|image_pad|>"
                 "<|vision_end|>{%- elif p.type == 'text' %}{{ p.text }}{%- endif %}{%- endfor %}{%- endif %}"
                 "{%- endfor %}")
QWEN_VL = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def image_only_processor_class():
    """Qwen3-VL's processor without its video processor (the one attribute that needs torchvision)."""
    from transformers import Qwen3VLProcessor

    class ImageOnlyQwenVLProcessor(Qwen3VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.video_processor = None
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

        def to_dict(self):  # saved as what it is, so that AutoProcessor loads it where torchvision is
            return {**super().to_dict(), "processor_class": "Qwen3VLProcessor"}

    return ImageOnlyQwenVLProcessor


def build_processor(vision):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": VISION_TOKENS})
    side = vision.patch_size * 2
    images = Qwen2VLImageProcessorPil(patch_size=vision.patch_size, temporal_patch_size=2, merge_size=2,
                                      min_pixels=side * side, max_pixels=64 * 64, image_mean=[0.5] * 3,
                                      image_std=[0.5] * 3)
    return image_only_processor_class()(image_processor=images, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def build_vl_model(arch, vision, seed: int, vocab_size: int, token_id):
    from transformers import GenerationConfig, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    head_dim = arch.hidden_size // arch.num_attention_heads
    # Qwen3-VL's multimodal rope splits each head's rotary half over (time, height, width).
    section = [head_dim // 2 - 2 * (head_dim // 6), head_dim // 6, head_dim // 6]
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=arch.hidden_size,
                         intermediate_size=arch.intermediate_size, num_hidden_layers=arch.num_hidden_layers,
                         num_attention_heads=arch.num_attention_heads, num_key_value_heads=arch.num_key_value_heads,
                         head_dim=head_dim, max_position_embeddings=arch.max_position_embeddings,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section,
                                          "mrope_interleaved": True},
                         tie_word_embeddings=True, pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID),
        vision_config=dict(depth=vision.depth, hidden_size=vision.hidden_size,
                           intermediate_size=vision.intermediate_size, num_heads=vision.num_heads,
                           patch_size=vision.patch_size, temporal_patch_size=2, spatial_merge_size=2,
                           out_hidden_size=arch.hidden_size, num_position_embeddings=256,
                           deepstack_visual_indexes=[vision.depth - 1]),
        image_token_id=token_id("<|image_pad|>"), video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"), vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=EOS_ID, pad_token_id=PAD_ID, bos_token_id=BOS_ID)
    return model


def build(arch, vision, seed: int):
    """(model, processor) of a fresh tiny-vl."""
    processor = build_processor(vision)
    tok = processor.tokenizer
    return build_vl_model(arch, vision, seed, len(tok), tok.convert_tokens_to_ids), processor


def sft_batch(processor, items, max_len: int, targets: list[str] | None = None) -> dict:
    """Right-padded `image prompt, target <eos>` rows with their images; loss on the target and <eos>."""
    enc = processor.apply_chat_template(conversations(items, "plain"), add_generation_prompt=True, tokenize=True,
                                        return_dict=True)
    tok = processor.tokenizer
    ids, labels = [], []
    for i, (prompt, it) in enumerate(zip(enc["input_ids"], items)):
        answer = tok(targets[i] if targets else it.answer, add_special_tokens=False)["input_ids"] + [EOS_ID]
        ids.append((prompt + answer)[:max_len])
        labels.append(([-100] * len(prompt) + answer)[:max_len])
    width = max(map(len, ids))
    input_ids = torch.tensor([s + [PAD_ID] * (width - len(s)) for s in ids])
    return {"input_ids": input_ids,
            "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids]),
            "labels": torch.tensor([s + [-100] * (width - len(s)) for s in labels]),
            "mm_token_type_ids": (input_ids == processor.image_token_id).long(),
            "pixel_values": torch.as_tensor(enc["pixel_values"]),
            "image_grid_thw": torch.as_tensor(enc["image_grid_thw"])}


def save(model, processor, path: Path) -> None:
    """A Qwen3-VL folder (its processor recorded as Qwen3VLProcessor: what it is, less video)."""
    model.save_pretrained(path)
    processor.save_pretrained(path)


def vl_recipe(arch, vision, image_key: str = "image") -> Recipe:
    """tiny-vl's warm start; its cache key adds the vision tower and Pillow (which draws the images)."""
    import PIL

    return Recipe(lambda seed: build(arch, vision, seed), sft_batch, save,
                  key={"vision": vars(vision), "pillow": PIL.__version__, "image_key": image_key})


def is_vision_folder(path: Path) -> bool:
    try:
        return "vision_config" in json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False


def load_processor(path: Path):
    """AutoProcessor's processor of a VLM folder; for the Qwen-VL family without torchvision, the same
    processor without its video part."""
    from transformers import AutoProcessor

    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - missing, or built for another torch (it then fails on import)
        model_type = json.loads((Path(path) / "config.json").read_text()).get("model_type")
        if model_type in QWEN_VL:
            return image_only_processor_class().from_pretrained(path)
    return AutoProcessor.from_pretrained(path)
