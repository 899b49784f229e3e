"""The README's configuration reference is generated from the schema and must not drift."""

from __future__ import annotations

from pathlib import Path

from screening.config import reference_markdown

README = Path(__file__).parent.parent / "README.md"


def test_readme_config_reference_matches_schema() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- config-reference:start")
    start = text.index("\n", start) + 1
    end = text.index("<!-- config-reference:end -->")
    assert text[start:end].strip() == reference_markdown().strip(), (
        "README config reference is stale: paste the output of "
        "`python -c 'from screening.config import reference_markdown as r; print(r())'`"
    )
