"""Text normalisation for phrase matching: NFKC, case, separators, kana folding, number words.

``voice.detector`` normalises transcripts and pack phrases alike with :func:`normalize`;
every output character keeps the span of the original characters it came from, so a
match in normalised text points back at what the caller actually said.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Normalized", "TextRules", "normalize"]

_APOSTROPHES = frozenset("'\u2019\u2018`\u02bc\uff07")
_KATAKANA_FIRST, _KATAKANA_LAST = 0x30A1, 0x30F6
_KANA_OFFSET = 0x60


@dataclass(frozen=True, slots=True)
class TextRules:
    """How a pack's language is normalised before matching (the same rules apply to phrases)."""

    remove_spaces: bool = False
    fold_kana: bool = False
    number_words: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Normalized:
    """Normalised text; ``starts[i]``/``ends[i]`` are the original span of character ``i``."""

    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original ``[start, end)`` of the normalised slice ``[start, end)`` (non-empty)."""
        return self.starts[start], self.ends[end - 1]


def _clusters(text: str) -> Iterable[tuple[int, int]]:
    """Base character plus following (half-width) combining marks, so NFKC can compose ｶﾞ -> ガ."""
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        while j < n and unicodedata.combining(unicodedata.normalize("NFKC", text[j])[:1] or "a"):
            j += 1
        yield i, j
        i = j


def _fold_kana(ch: str) -> str:
    code = ord(ch)
    return chr(code - _KANA_OFFSET) if _KATAKANA_FIRST <= code <= _KATAKANA_LAST else ch


def normalize(text: str, rules: TextRules, *, trim: bool = True) -> Normalized:
    """Normalise ``text`` for matching, keeping the original span of every output character.

    ``trim=False`` keeps one leading/trailing space: phrase fragments between
    regex operators need their edge spaces (``press (one|two)``).
    """
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pending_space: tuple[int, int] | None = None
    for begin, end in _clusters(text):
        for ch in unicodedata.normalize("NFKC", text[begin:end]).lower():
            if ch in _APOSTROPHES:
                continue
            if ch.isalnum() or unicodedata.category(ch).startswith("M"):
                if pending_space is not None and not rules.remove_spaces and (chars or not trim):
                    chars.append(" ")
                    starts.append(pending_space[0])
                    ends.append(pending_space[1])
                pending_space = None
                chars.append(_fold_kana(ch) if rules.fold_kana else ch)
                starts.append(begin)
                ends.append(end)
            elif pending_space is None:
                pending_space = (begin, end)
    if pending_space is not None and not trim and not rules.remove_spaces:
        chars.append(" ")
        starts.append(pending_space[0])
        ends.append(pending_space[1])
    normalized = Normalized("".join(chars), tuple(starts), tuple(ends))
    return _replace_number_words(normalized, rules.number_words) if rules.number_words else normalized


def _replace_number_words(norm: Normalized, number_words: Mapping[str, str]) -> Normalized:
    """Replace whole tokens that are number words (``one`` -> ``1``); the digit spans the word."""
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for m in re.finditer(r"\S+|\s+", norm.text):
        replacement = number_words.get(m.group())
        if replacement is None:
            chars.append(m.group())
            starts.extend(norm.starts[m.start():m.end()])
            ends.extend(norm.ends[m.start():m.end()])
        else:
            chars.append(replacement)
            starts.extend([norm.starts[m.start()]] * len(replacement))
            ends.extend([norm.ends[m.end() - 1]] * len(replacement))
    return Normalized("".join(chars), tuple(starts), tuple(ends))
