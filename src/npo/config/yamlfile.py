"""Reading a YAML config strictly, and `--set KEY=VALUE` overrides.

What PyYAML lets through silently is refused here, with the file and line: bytes that are not UTF-8, a
key given twice (PyYAML keeps the last), a key that is not a plain value, a document that is not a
mapping, and an empty file (which would start a run on every default: write `{}` to ask for that).
Aliases and merge keys work, but a document that expands to more than `MAX_VALUES` values or nests
deeper than `MAX_DEPTH` is refused (a "billion laughs" expands to gigabytes when the config is copied
or written out). `--set` values are read by the same loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from npo.errors import UserError

MAX_VALUES, MAX_DEPTH = 100_000, 64  # far above any run config (the largest shipped: ~150 values, depth 4)
MERGE = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice and a key that is not a plain value (merge keys
    `<<` merge as YAML says; a key written out beside them overrides the merged one)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == MERGE:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise UserError(f"line {line}: a key must be a plain value (a name or a number), not a "
                                f"{'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'}")
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise UserError(f"line {line}: key {key!r} given twice (first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    """The YAML value of `text`, strictly (UserError "line N: ..." for what is refused; yaml.YAMLError for
    text that is not YAML)."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise UserError(f"nested deeper than Python's parser can follow (a config nests at most {MAX_DEPTH} "
                        "levels)") from None
    _check_size(data)
    return data


def _check_size(data) -> None:
    """Walk the value as a copy would (aliases expanded), iteratively, stopping at the bounds."""
    stack, values = [(data, 1)], 0
    while stack:
        value, depth = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise UserError(f"expands to more than {MAX_VALUES:,} values (YAML aliases repeating an anchor?): "
                            "a run config holds a few hundred")
        if depth > MAX_DEPTH:
            raise UserError(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


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
        data = load_yaml(text)
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
        value = load_yaml(raw) if raw != "" else ""
    except UserError as exc:
        raise UserError(f"--set {text}: {exc}") from None
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
