"""English archetypes the held-out text showed we missed, written fresh (not from the corpus).

Robocalls that ask you to press a key about a loan, debt, rate reduction, your
account or a government programme, and free-solar "government programme"
pitches, must be ``fraud``; ordinary calls (doctor, family, delivery, school,
a bank's real reminder that asks for no codes) must not be. Several paraphrases
each, so a single magic phrase cannot pass.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from screening.core.model import Verdict
from voice.detector import FraudDetector, PhrasePack

SCRIPTS = json.loads((Path(__file__).parent / "data" / "detector_en_scripts.json").read_text(encoding="utf-8"))


def verdict(text: str) -> Verdict:
    return FraudDetector(PhrasePack.load("en")).detect(text).verdict


def test_every_archetype_has_several_paraphrases() -> None:
    kinds = Counter(r["kind"] for r in SCRIPTS["fraud"])
    assert {"loan", "debt", "rate", "account", "government", "solar"} <= kinds.keys()
    assert all(kinds[k] >= 2 for k in ("loan", "debt", "rate", "account", "government", "solar"))


@pytest.mark.parametrize("row", SCRIPTS["fraud"], ids=lambda r: r["id"])
def test_press_a_key_pitches_are_fraud(row: dict[str, str]) -> None:
    assert verdict(row["text"]) is Verdict.FRAUD


@pytest.mark.parametrize("row", SCRIPTS["benign"], ids=lambda r: r["id"])
def test_ordinary_calls_are_not_fraud(row: dict[str, str]) -> None:
    assert verdict(row["text"]) is not Verdict.FRAUD


def test_the_key_press_alone_is_not_enough() -> None:
    assert verdict("Press one to confirm your appointment.") is not Verdict.FRAUD
    assert verdict("Homeowners can get solar panels installed.") is not Verdict.FRAUD
    assert verdict("Homeowners can get solar panels installed. Press one to see if you qualify.") is Verdict.FRAUD
