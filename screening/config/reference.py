"""The README's config reference table, generated from the schema."""

from __future__ import annotations

from screening.config.schema import _keys, _toml_literal
from screening.config.sections import _SECTIONS, _TABLE_ARRAYS


def schema() -> list[tuple[str, str, str, str]]:
    """(dotted key, type, TOML default, meaning) for every key, in file order.

    Keys of arrays of tables read ``relatives[].name``; a required key's default is ``(required)``.
    """
    rows: list[tuple[str, str, str, str]] = []
    groups = [(section, cls) for section, cls in _SECTIONS.items()] + [(f"{n}[]", c) for n, c in _TABLE_ARRAYS.items()]
    for section, cls in groups:
        for key, f in _keys(cls).items():
            default = "(required)" if f.metadata.get("required") else _toml_literal(f.metadata["raw"])
            rows.append((f"{section}.{key}", f.metadata["parser"].label, default, f.metadata["doc"]))
    return rows


def reference_markdown() -> str:
    """The README's config reference table, generated from the schema."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| Key | Type | Default | Meaning |", "| --- | --- | --- | --- |"]
    for key, type_label, default, doc in schema():
        shown = default if default == "(required)" else f"`{cell(default)}`"
        lines.append(f"| `{key}` | {cell(type_label)} | {shown} | {cell(doc)} |")
    return "\n".join(lines) + "\n"
