"""The docs against the code: the generated tables of docs/config.md are the code's, and every pointer
in a Markdown file, a docstring or comment, or a config (a file path, an `npo.x` dotted name, a section
named in quotes, a `.md` name) resolves; none leaves the repository."""

import importlib
import re
import subprocess
from dataclasses import fields
from pathlib import Path

from npo.config.run import RunConfig, fields_markdown
from npo.config.sections import NPOSection
from npo.config.trl_args import grpo_defaults_markdown

from conftest import ROOT

CONFIG_DOC = ROOT / "docs" / "config.md"


def block(name: str) -> str:
    text = CONFIG_DOC.read_text()
    return text.split(f"<!-- {name}:begin -->\n")[1].split(f"<!-- {name}:end -->")[0].strip()


def test_config_fields_table_is_current():
    assert block("fields") == fields_markdown(), "regenerate: python -m npo.config.run, paste between the fields markers"


def test_config_grpo_defaults_table_is_current():
    assert block("grpo") == grpo_defaults_markdown(), "regenerate: python -m npo.config.run, paste between the grpo markers"


def test_readme_opens_with_the_two_commands_and_fits():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert "make demo" in "\n".join(lines[:6]) and "make test" in "\n".join(lines[:6])
    assert len(lines) <= 300, "the README is the front door: the reference belongs in docs/"


TRACKED = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
MD_FILES = {Path(f).name for f in TRACKED if f.endswith(".md")}
PY_FILES = {Path(f).name for f in TRACKED if f.endswith(".py")}
# .md files npo writes (a run's report.md): named in the code as a string
WRITTEN = {m for f in TRACKED if f.endswith(".py") and f.startswith(("src/", "benchmarks/"))
           for m in re.findall(r"[\"'/]([\w-]+\.md)[\"']", (ROOT / f).read_text())}


def documents() -> list[Path]:
    """Every tracked Markdown file, every module of the package, the benchmarks and examples, the configs."""
    tracked = TRACKED
    keep = [f for f in tracked if f.endswith(".md") or (f.endswith(".py") and f.startswith(("src/", "benchmarks/",
            "examples/"))) or (f.endswith(".yaml") and f.startswith(("configs/", "src/npo/configs/")))]
    return [ROOT / f for f in keep if (ROOT / f).is_file()]


PATH = re.compile(r"(?<![\w/.-])((?:src|tests|docs|configs|benchmarks|examples|requirements)/[\w./-]*\w)")
DOTTED = re.compile(r"(?<![\w./-])npo(?:\.\w+)+")
SECTION = re.compile(r"(README|[\w/-]+\.md) \\?\"([^\"\\]+)\\?\"")
MD_NAME = re.compile(r"(?<![\w/.-])([\w-]+\.md)\b")
PY_NAME = re.compile(r"(?<![\w/.-])(\w+\.py)\b")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
FILE_ENDINGS = (".py", ".md", ".yaml", ".json", ".jsonl", ".lock")  # npo.py is a file, not a dotted name
CONFIG_FIELDS = {f.name for f in fields(NPOSection)} | {f.name for f in fields(RunConfig)}


def resolves(dotted: str) -> bool:
    """An importable module and attributes below it, a public name of `npo`, or a config field (`npo.tau`)."""
    parts = dotted.split(".")
    if parts[1] in CONFIG_FIELDS:
        return True
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def headings(md: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in md.read_text().splitlines() if line.startswith("#")]


def stale(path: Path, text: str) -> list[str]:
    """What in `text` (the content of `path`) points at nothing."""
    bad = [p for p in PATH.findall(text) if "*" not in p and not (ROOT / p).exists()
           and not (ROOT / p.rstrip(".")).exists()]
    bad += [d for d in DOTTED.findall(text) if not d.endswith(FILE_ENDINGS) and not resolves(d.rstrip("."))]
    for file, title in SECTION.findall(text):
        target = ROOT / "README.md" if file == "README" else next((ROOT / f for f in (file, f"docs/{file}")
                                                                  if (ROOT / f).is_file()), None)
        if target is None or not any(h.startswith(title) for h in headings(target)):
            bad.append(f'{file} "{title}"')
    bad += [m for m in MD_NAME.findall(text) if m not in MD_FILES | WRITTEN]
    bad += [m for m in PY_NAME.findall(text) if m not in PY_FILES]
    if path.suffix == ".md":
        bad += [link for link in LINK.findall(text) if not link.startswith(("http", "mailto"))
                and not (path.parent / link).exists()]
    bad += [m.group(0) for m in re.finditer(r"\.\./shared[\w/.-]*\w|/work/[\w/.-]*\w", text)]
    return bad


def test_every_pointer_resolves():
    found = {str(p.relative_to(ROOT)): stale(p, p.read_text()) for p in documents()}
    found = {f: b for f, b in found.items() if b}
    assert not found, found


def test_the_pointer_test_can_fail():
    planted = ('see src/npo/train.py and `npo.loops.run.train`, npo.rules, docs/methods.md "No such section", '
               'NPO_METHOD.md, [x](nowhere.md) and ../shared/design; loop.py')
    assert stale(ROOT / "docs" / "planted.md", planted) == [
        "src/npo/train.py", "npo.rules", 'docs/methods.md "No such section"', "NPO_METHOD.md", "nowhere.md",
        "loop.py", "nowhere.md", "../shared/design"]
    assert resolves("npo.loops.run.train") and resolves("npo.tau") and resolves("npo.NPOTrainer")


def test_the_readmes_folder_map_is_the_packages():
    """The README draws the map of `npo/__init__.py` (the one the layer test reads): same entries, same order."""
    from test_layers import LAYERS

    text = (ROOT / "README.md").read_text()
    block = text.split("```\nsrc/npo/\n")[1].split("```")[0]
    assert re.findall(r"^ {2}(\w+)(?:/|\.py) ", block, re.M) == LAYERS
