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


def test_readme_has_none_of_the_stale_lines_a_new_user_hit() -> None:
    text = README.read_text(encoding="utf-8")
    for stale in ("still distinct tone patterns", "placeholder tone prompts", "the voice issue", "(alerts issue)",
                  "Every command takes `--config F` and `--db F`", "Both need only Python"):  # fmt: skip
        assert stale not in text, stale
    example = (README.parent / "deploy" / "mamoru.example.toml").read_text(encoding="utf-8")
    assert "ring through" not in example  # a warned call stays up and is recorded (see the README's table)
