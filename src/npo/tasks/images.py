"""Image prompts: an item's image is a *reference* (`Item.image`), opened when a prompt is built.

A reference is one of
- `draw:KIND:PAYLOAD`: drawn by a procedural task (`npo.tasks.visual`), deterministic per payload;
- `data:image/...;base64,...`: the bytes inline (a data file's base64 field);
- anything else: a path to an image file (a data file's relative paths are resolved when read).

Guide banks, replay buffers, pools and run records keep references, never pixels. Kept light (no
torch): verifier workers import the task package, which imports this.
"""

from __future__ import annotations

import base64
import binascii
import io
from functools import lru_cache
from pathlib import Path
from typing import Callable

DRAWERS: dict[str, Callable[[str], object]] = {}  # kind -> draw(payload) -> PIL image


def drawer(kind: str):
    """Register a procedural task's drawing function under `draw:KIND:`."""
    def deco(fn):
        DRAWERS[kind] = fn
        return fn

    return deco


@lru_cache(maxsize=256)  # a group's rows and its guides open one image; real images are megabytes each
def open_image(ref: str):
    """The RGB PIL image of a reference (the most recent ones cached)."""
    from PIL import Image

    if ref.startswith("draw:"):
        kind, _, payload = ref[len("draw:"):].partition(":")
        return DRAWERS[kind](payload).convert("RGB")
    if ref.startswith("data:"):
        raw = base64.b64decode(ref.partition(",")[2], validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            return img.convert("RGB")
    with Image.open(ref) as img:
        return img.convert("RGB")


def image_reference(value, base: Path) -> str:
    """The reference of a data file's image field: a base64 string (with or without a `data:` header)
    or a path relative to the file. Raises ValueError saying why it is not an image."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a path or a base64 string")
    value = value.strip()
    if value.startswith("data:"):
        ref = value
    elif _is_file(path := Path(value) if Path(value).is_absolute() else base / value):
        ref = str(path.resolve())
    elif _is_base64(value):
        ref = "data:image;base64," + value
    else:
        raise ValueError(f"no such image file {value[:80]!r}")
    try:
        open_image(ref)
    except (OSError, ValueError, binascii.Error, SyntaxError) as exc:  # PIL: UnidentifiedImageError is an OSError
        raise ValueError(f"unreadable image ({type(exc).__name__})") from None
    return ref


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a base64 string is too long a file name
        return False


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(value) >= 16
