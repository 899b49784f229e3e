"""Rewrite the README's configuration reference from the config schema (tests/test_docs.py checks it)."""

from __future__ import annotations

from pathlib import Path

from screening.config import reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> None:
    text = README.read_text(encoding="utf-8")
    head_end = text.index("\n", text.index("<!-- config-reference:start")) + 1
    tail = text.index("<!-- config-reference:end -->")
    README.write_text(text[:head_end] + reference_markdown().strip() + "\n" + text[tail:], encoding="utf-8")


if __name__ == "__main__":
    main()
