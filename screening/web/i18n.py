"""Page text in Japanese (first) and English, from the ``web`` catalogue (``screening/i18n/web.*.toml``).

The page speaks ``core.model.Language``, but only the languages it has a catalogue for
(``PAGE_LANGUAGES``): a code naming any other is refused where a page language is chosen.
A key missing in a language falls back to English and then to the key itself, and
``missing()`` lets a test insist that every key exists in every page language.
"""

from __future__ import annotations

from screening import i18n
from screening.core.model import Language

CATALOGUE = "web"

PAGE_LANGUAGES: tuple[Language, ...] = (Language.JA, Language.EN)  # web.ja.toml, web.en.toml
DEFAULT_LANGUAGE = Language.JA


def page_language(code: str) -> Language:
    """The page language with this code; ValueError if there is none (or the page is not in it)."""
    language = Language(code)
    if language not in PAGE_LANGUAGES:
        raise ValueError(f"the web page is not translated into {code!r}")
    return language


def chosen_page_language(code: str) -> Language | None:
    """A page language picked in a form; None for anything else."""
    try:
        return page_language(code)
    except ValueError:
        return None


def translate(lang: Language, key: str, /, **values: object) -> str:
    return i18n.lookup(CATALOGUE, lang.value, key, **values)


def missing() -> dict[Language, set[str]]:
    """Keys some language has and another lacks."""
    gaps = i18n.missing(CATALOGUE, [lang.value for lang in PAGE_LANGUAGES])
    return {Language(lang): keys for lang, keys in gaps.items()}
