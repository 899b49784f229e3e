"""Message catalogues: user-facing text as data, one TOML file per area and language.

A file is ``<area>.<language>.toml`` beside this module (``web.ja.toml``), a flat table of
``"dotted.key" = "text"`` with ``str.format`` fields. Japanese is the product's first language;
a key a language lacks falls back to English and then to the key itself, and ``missing`` lets a
test insist that every language has every key.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from types import MappingProxyType

log = logging.getLogger(__name__)

FALLBACK_LANGUAGE = "en"


@cache
def catalogue(area: str, language: str) -> Mapping[str, str]:
    """One area's texts in one language; empty when the language has no file for the area."""
    ref = resources.files(__name__) / f"{area}.{language}.toml"
    if not ref.is_file():
        return MappingProxyType({})
    with ref.open("rb") as handle:
        table = tomllib.load(handle)
    bad = sorted(key for key, text in table.items() if not isinstance(text, str))
    if bad:
        raise ValueError(f"catalogue {area}.{language}: values must be text: {bad}")
    return MappingProxyType(table)


def lookup(area: str, language: str, key: str, /, **values: object) -> str:
    """The text for ``key``, formatted with ``values`` (only when some are given, so braces stay literal)."""
    text = catalogue(area, language).get(key) or catalogue(area, FALLBACK_LANGUAGE).get(key) or key
    return text.format(**values) if values else text


def missing(area: str, languages: Iterable[str]) -> dict[str, set[str]]:
    """Keys some of ``languages`` has for ``area`` and another lacks."""
    tables = {lang: set(catalogue(area, lang)) for lang in languages}
    every = set().union(*tables.values())
    return {lang: every - keys for lang, keys in tables.items() if every - keys}


@cache
def sentence_table(area: str, language: str) -> tuple[tuple[str, str], ...]:
    """``<area>_sentences.<language>.toml``: (pattern, text) pairs for wording that arrives as English sentences."""
    ref = resources.files(__name__) / f"{area}_sentences.{language}.toml"
    if not ref.is_file():
        return ()
    with ref.open("rb") as handle:
        rows = tomllib.load(handle).get("sentence", [])
    return tuple((str(row["pattern"]), str(row["text"])) for row in rows)
