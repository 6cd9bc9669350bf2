"""The README's config table is generated from the dataclasses; this keeps the two from drifting."""

from npo.config import fields_markdown

from conftest import ROOT


def test_readme_fields_table_is_current():
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- fields:begin -->\n")[1].split("<!-- fields:end -->")[0].strip()
    assert block == fields_markdown(), "regenerate: python -m npo.config, paste between the fields markers"


def test_readme_opens_with_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:6])
    assert "make demo" in head and "make test" in head
