"""Message catalogues (screening/i18n/*.toml): every language of an area has every key."""

from __future__ import annotations

from pathlib import Path

import pytest

from screening import i18n

CATALOGUES = Path(i18n.__file__).parent
AREAS = {"web": ("ja", "en"), "alerts": ("ja", "en", "ko"), "doctor": ("ja", "en"), "hub": ("ja", "en")}
SENTENCE_TABLES = {("doctor_sentences", "ja")}


def test_every_catalogue_file_belongs_to_a_known_area_and_language() -> None:
    files = {tuple(path.name.split(".")[:2]) for path in CATALOGUES.glob("*.toml")}
    expected = {(area, lang) for area, languages in AREAS.items() for lang in languages} | SENTENCE_TABLES
    assert files == expected


@pytest.mark.parametrize("area", sorted(AREAS))
def test_no_missing_key(area: str) -> None:
    assert all(i18n.catalogue(area, lang) for lang in AREAS[area])
    assert not i18n.missing(area, AREAS[area])


def test_lookup_formats_and_falls_back_to_english() -> None:
    assert i18n.lookup("alerts", "ja", "link", url="u") == "詳細: u"
    assert i18n.lookup("alerts", "xx", "link", url="u") == "Details: u"  # a language without a file
    assert i18n.lookup("alerts", "ja", "no.such.key") == "no.such.key"
    assert i18n.lookup("web", "ja", "app.title") == "まもる 電話の見守り"


def test_doctor_sentence_table_loads() -> None:
    table = i18n.sentence_table("doctor", "ja")
    assert len(table) > 50 and all(pattern and text for pattern, text in table)
