"""The package's layers, its folders in the order of the map in `npo/__init__.py` (bottom first): a module
imports only from its own folder or one listed before it, no two modules import each other (directly or
round a circle), and package modules are imported at the top of a module, never inside a function, except
in `npo.cli.main` (its commands import their modules when they run, so `npo --help` answers without the
~6 s import of torch and TRL)."""

import ast
import re
from pathlib import Path

import npo

from conftest import ROOT

SRC = ROOT / "src"
DEFERRED_OK = {"npo.cli.main"}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "npo").rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported package module, imported inside a function) for every import in the file."""
    tree = ast.parse(path.read_text())
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        out += [(n, id(node) in nested) for n in names if n in known]
    return out


def layer_map(doc: str) -> list[str]:
    """The map's entries in order: `algo`, `errors`, ... (a folder `name/` or a module `name.py`)."""
    return [m.group(1) for m in re.finditer(r"^ {4}(\w+)(?:/|\.py) ", doc, re.M)]


LAYERS = layer_map(npo.__doc__)


def layer_of(module: str) -> int:
    """The rank of a module's folder (or of the top-level module itself) in the map."""
    return LAYERS.index(module.split(".")[1])


def test_every_module_has_a_layer():
    entries = {p.stem for p in (SRC / "npo").iterdir() if p.name != "__init__.py" and p.name != "__pycache__"
               and (p.suffix == ".py" or (p.is_dir() and any(p.glob("*.py"))))}
    assert len(LAYERS) == len(set(LAYERS)), "an entry is in the map twice"
    assert entries == set(LAYERS) - {"configs"}, f"folders and the map differ: {entries ^ set(LAYERS)}"
    assert all(layer_of(m) >= 0 for m in modules() if m != "npo")
    assert len(entries | {"configs"}) <= 12  # a newcomer reads the package from `ls`


def test_no_module_imports_a_higher_layer():
    mods = modules()
    wrong = [(m, target) for m, path in mods.items() if m != "npo" for target, _ in imports(path, set(mods))
             if target != "npo" and layer_of(target) > layer_of(m)]
    assert not wrong, f"lower layer imports a higher one: {wrong}"


def test_no_import_circles():
    mods = modules()
    edges = {m: {t for t, _ in imports(p, set(mods)) if t != m and not m.startswith(t + ".")} for m, p in mods.items()}

    def reaches(start, goal, seen):
        return any(n == goal or (n not in seen and not seen.add(n) and reaches(n, goal, seen)) for n in edges[start])

    circles = sorted(m for m in mods if reaches(m, m, set()))
    assert not circles, f"modules on an import circle: {circles}"


def test_package_modules_are_imported_at_the_top():
    mods = modules()
    deferred = sorted({m for m, p in mods.items() for _, inside in imports(p, set(mods)) if inside} - DEFERRED_OK)
    assert not deferred, f"function-local imports of package modules in: {deferred}"


def test_the_layer_test_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from npo.loops.run import train\n")
    assert imports(bad, {"npo.loops.run"}) == [("npo.loops.run", True)]
    assert layer_of("npo.loops.run") > layer_of("npo.trl_seam.trainer")


def test_every_module_reads_in_one_sitting():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"
