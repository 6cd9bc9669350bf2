"""Reading a YAML config strictly, and `--set KEY=VALUE` overrides.

What PyYAML lets through silently is refused here, with the file and line: bytes that are not UTF-8, a
key given twice (PyYAML keeps the last), a document that is not a mapping, and an empty file (which
would start a run on every default: write `{}` to ask for that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from npo.errors import UserError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise UserError(f"line {key_node.start_mark.line + 1}: key {key!r} given twice "
                                f"(first on line {seen[key] + 1})")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_mapping(path: str | Path) -> dict:
    """The YAML mapping in `path`; any problem is a UserError naming the file (and line)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such config file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise UserError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UserError(f"{p}: line {line}: not UTF-8 (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except UserError as exc:
        raise UserError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        raise UserError(f"{p}:{where} not valid YAML") from None
    if data is None:
        raise UserError(f"{p}: empty (write {{}} to run on every default)")
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of config sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a','b','c'], value parsed as YAML scalar)."""
    if "=" not in text:
        raise UserError(f"--set {text}: expected key=value")
    key, raw = text.split("=", 1)
    if not key or "" in key.split("."):
        raise UserError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {'.'.join(path)}: {part} is not a mapping")
    node[path[-1]] = value
