"""The README's generated tables come from the code; this keeps the two from drifting."""

from npo.config.run import fields_markdown
from npo.config.trl_args import grpo_defaults_markdown

from conftest import ROOT


def block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"<!-- {name}:begin -->\n")[1].split(f"<!-- {name}:end -->")[0].strip()


def test_readme_fields_table_is_current():
    assert block("fields") == fields_markdown(), "regenerate: python -m npo.config.run, paste between the fields markers"


def test_readme_grpo_defaults_table_is_current():
    assert block("grpo") == grpo_defaults_markdown(), "regenerate: python -m npo.config.run, paste between the grpo markers"


def test_readme_opens_with_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:6])
    assert "make demo" in head and "make test" in head


def test_readme_file_pointers_exist():
    """Every `src/...`, `tests/...`, `docs/...`, `configs/...` or `benchmarks/...` path the README names exists."""
    import re

    text = (ROOT / "README.md").read_text()
    paths = set(re.findall(r"`((?:src|tests|docs|configs|benchmarks)/[\w./-]+)`", text))
    paths |= set(re.findall(r"\]\(((?:docs)/[\w./-]+)\)", text))
    assert paths and not sorted(p for p in paths if not (ROOT / p).exists())
