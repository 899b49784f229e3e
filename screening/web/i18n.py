"""Page text in Japanese (first) and English, from the ``web`` catalogue (``screening/i18n/web.*.toml``).

A key missing in a language falls back to English and then to the key itself, and
``missing()`` lets a test insist that every key exists in both languages.
"""

from __future__ import annotations

from enum import StrEnum

from screening import i18n

CATALOGUE = "web"


class UiLanguage(StrEnum):
    JA = "ja"
    EN = "en"


DEFAULT_LANGUAGE = UiLanguage.JA


def translate(lang: UiLanguage, key: str, /, **values: object) -> str:
    return i18n.lookup(CATALOGUE, lang.value, key, **values)


def missing() -> dict[UiLanguage, set[str]]:
    """Keys some language has and another lacks."""
    gaps = i18n.missing(CATALOGUE, [lang.value for lang in UiLanguage])
    return {UiLanguage(lang): keys for lang, keys in gaps.items()}
