"""What ``mamoru doctor`` says, in the household's language (Japanese by default).

The checks in ``screening.doctor`` word their findings in English (the ``--json``
output and the logs keep those words). Here each English sentence is matched by a
pattern (``screening/i18n/doctor_sentences.ja.toml``) and said again in plain
Japanese, keeping the parts that vary (paths, numbers, the modem's own error text). A sentence this table does not know yet
(a new check) is shown in English rather than not at all; ``untranslated()``
lets a test find such sentences.

Korean households read the English text for now: there is no Korean table yet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from screening import i18n
from screening.core.model import Language
from screening.core.safe_text import pad_columns

__all__ = ["format_report", "say", "title", "untranslated"]


class _Finding(Protocol):
    # Read-only, so doctor.Check (whose severity is a str enum) matches.
    @property
    def name(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def fix(self) -> str: ...


DOCTOR_CATALOGUE = "doctor"  # screening/i18n/doctor.<language>.toml; sentences: doctor_sentences.ja.toml
_JA_COMPILED = tuple((re.compile(pattern, re.DOTALL), text)
                     for pattern, text in i18n.sentence_table(DOCTOR_CATALOGUE, Language.JA.value))


def _table(language: Language) -> Language:
    """The language we can speak: Japanese or English (Korean reads English for now)."""
    return Language.JA if language is Language.JA else Language.EN


def say(sentence: str, language: Language) -> str:
    """One of the doctor's sentences in ``language``; unknown sentences stay as they are."""
    if not sentence or _table(language) is Language.EN:
        return sentence
    for pattern, text in _JA_COMPILED:
        found = pattern.fullmatch(sentence)
        if found is not None:
            return text.format(**found.groupdict())
    return sentence


def untranslated(sentence: str) -> bool:
    """True when no Japanese wording exists for this sentence (for the tests)."""
    return bool(sentence) and not any(pattern.fullmatch(sentence) for pattern, _ in _JA_COMPILED)


def title(check_name: str, language: Language) -> str:
    key = f"title.{check_name}"
    return i18n.lookup(DOCTOR_CATALOGUE, _table(language).value, key) if key in _words(Language.EN) else check_name


def format_report(checks: Sequence[_Finding], language: Language) -> str:
    """One line per check; the fix indented under each warning or problem; a summary line."""
    lang = _table(language)
    words = _words(lang)
    lines = []
    for check in checks:
        label = words[f"label.{check.severity}"]
        lines.append(f"{pad_columns(label, 8)} {title(check.name, lang)}: {say(check.message, lang)}")
        if check.fix and check.severity != "ok":
            lines.append(f"{'':<8}   {words['what_to_do']} {say(check.fix, lang)}")
    problems = sum(c.severity == "problem" for c in checks)
    lines.append("")
    if problems == 0:
        lines.append(words["summary.ok"])
    else:
        lines.append(words["summary.problem" if problems == 1 else "summary.problems"].format(n=problems))
    return "\n".join(lines)


def _words(language: Language) -> Mapping[str, str]:
    return i18n.catalogue(DOCTOR_CATALOGUE, language.value)
