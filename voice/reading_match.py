"""Match phrase-pack entries on a transcript's kana reading, exactly or within a few edits.

``voice.detector`` matches the written text first; this module adds what only
the reading reveals: the right sounds under the wrong kanji (安処番号 reads like
暗証番号) and, for long readings only, near misses (キャスカード for
キャッシュカード). Each pack phrase (a small regex subset) is expanded into its
literal alternatives, and each alternative is read once with the
:class:`~voice.kana.KanaReader`; a phrase that cannot be expanded (``*``,
``[...]``) stays text-only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from voice.kana import KanaReader, fuzzy_find, max_edits, read, romanize

__all__ = ["MatchKind", "ReadingHit", "ReadingMatcher", "ReadingMode", "expand_alternatives"]

log = logging.getLogger(__name__)

P = TypeVar("P")

MAX_ALTERNATIVES = 512
# A reading shorter than this (in kana) is matched on the written text only: short readings
# collide with innocent homophones far too often.
MIN_READING_KANA = 4  # 捜査/操作, 刑事/掲示 (3 kana) are everyday homophones
# Near misses only for phrases that are a plain list of words, "(キャッシュカード|暗証番号)": a phrase
# built from short parts ("(取り|とり)に(伺|...)") would let two edits turn one short part into another.
_WORD_LIST = re.compile(r"\(?[^()|?]+(\|[^()|?]+)*\)?")


class MatchKind(StrEnum):
    """How a phrase was found: in the written text, in its reading, or in its reading within a few edits."""

    TEXT = "text"
    READING = "reading"
    FUZZY_READING = "fuzzy_reading"


class ReadingMode(StrEnum):
    """How far matching goes beyond the written text (benchmarks compare all three)."""

    TEXT_ONLY = "text"
    READING = "reading"
    FUZZY_READING = "fuzzy_reading"


def expand_alternatives(pattern: str, limit: int = MAX_ALTERNATIVES) -> list[str] | None:
    """Every literal string a pack phrase matches, if it uses only ``( | ) ?`` and there are at most ``limit``."""
    if any(ch in pattern for ch in "*+[]{}\\"):
        return None
    try:
        alternatives, end = _alternation(pattern, 0, limit)
    except _TooMany:
        return None
    if end != len(pattern):
        return None
    return sorted(set(a for a in alternatives if a.strip()))


class _TooMany(Exception):
    pass


def _alternation(text: str, pos: int, limit: int) -> tuple[list[str], int]:
    branches: list[str] = []
    while True:
        sequence, pos = _sequence(text, pos, limit)
        branches.extend(sequence)
        if pos < len(text) and text[pos] == "|":
            pos += 1
            continue
        return branches, pos


def _sequence(text: str, pos: int, limit: int) -> tuple[list[str], int]:
    out = [""]
    while pos < len(text) and text[pos] not in "|)":
        if text[pos] == "(":
            inner, pos = _alternation(text, pos + 1, limit)
            if pos >= len(text) or text[pos] != ")":
                raise _TooMany  # unbalanced: not expandable
            pos += 1
            item = inner
        else:
            item, pos = [text[pos]], pos + 1
        if pos < len(text) and text[pos] == "?":
            item, pos = [*item, ""], pos + 1
        out = [a + b for a in out for b in item]
        if len(out) > limit:
            raise _TooMany
    return out, pos


@dataclass(frozen=True, slots=True)
class _Entry(Generic[P]):
    phrase: P
    kana: str
    letters: str
    edits: int
    first: str  # the first and last kana as romanize() owns them (しょ -> し)
    last: str
    open_end: bool  # written ending in hiragana (a verb stem: 儲か): may end inside a word


@dataclass(frozen=True, slots=True)
class ReadingHit(Generic[P]):
    """A phrase found in the reading; ``start``/``end`` index the text that was read."""

    phrase: P
    start: int
    end: int
    kind: MatchKind


class ReadingMatcher(Generic[P]):
    """Readings of a pack's phrases, built once per pack and reader (OpenJTalk reads each alternative once)."""

    def __init__(self, reader: KanaReader, entries: Sequence[_Entry[P]]) -> None:
        self.reader = reader
        self._entries = tuple(entries)

    @classmethod
    def build(
        cls, reader: KanaReader, phrases: Sequence[tuple[P, str]], prepare: Callable[[str], str]
    ) -> ReadingMatcher[P]:
        """Read every alternative of every phrase (OpenJTalk loads its dictionary on the first one).

        ``phrases``: (phrase, pack pattern); ``prepare`` normalises a literal the way transcripts are.
        """
        entries: dict[tuple[int, str], _Entry[P]] = {}
        for index, (phrase, pattern) in enumerate(phrases):
            word_list = _WORD_LIST.fullmatch(pattern) is not None
            for literal in expand_alternatives(pattern) or ():
                written = prepare(literal)
                kana = read(reader, written).kana
                if len(kana) < MIN_READING_KANA:
                    continue
                letters, owner = romanize(kana)
                if not letters:
                    continue
                edits = max_edits(len(letters)) if word_list else 0
                open_end = "\u3041" <= written[-1:] <= "\u3096"
                entries.setdefault((index, kana), _Entry(phrase, kana, letters, edits, kana[owner[0]],
                                                         kana[owner[-1]], open_end))
        log.debug("reading matcher: %d readings for %d phrases", len(entries), len(phrases))
        return cls(reader, list(entries.values()))

    def find(self, text: str, mode: ReadingMode) -> list[ReadingHit[P]]:
        """Occurrences in ``text``'s reading: every exact one, and the best near miss of phrases not heard exactly."""
        if mode is ReadingMode.TEXT_ONLY or not text:
            return []
        reading = read(self.reader, text)
        hits: list[ReadingHit[P]] = []
        exact: set[int] = set()
        words = reading.word_starts
        for entry in self._entries:
            at = reading.kana.find(entry.kana)
            while at >= 0:
                # From a word's start: 投資 (とーし) is not inside 担当者 (たんとーしゃ); to a word's end
                # unless written ending in a verb stem (必ず儲か|る): 県警 is not 件 + 警告.
                if at in words and (entry.open_end or at + len(entry.kana) in words):
                    start, end = reading.span(at, at + len(entry.kana))
                    hits.append(ReadingHit(entry.phrase, start, end, MatchKind.READING))
                    exact.add(id(entry.phrase))
                at = reading.kana.find(entry.kana, at + 1)
        if mode is not ReadingMode.FUZZY_READING:
            return hits
        letters, owner = romanize(reading.kana)
        edges = frozenset(i for i in range(len(letters) + 1)
                          if i == len(letters) or (owner[i] in reading.word_starts and (i == 0 or owner[i - 1] != owner[i])))
        fuzzy: dict[int, tuple[int, ReadingHit[P]]] = {}
        for entry in self._entries:
            if entry.edits == 0 or id(entry.phrase) in exact:
                continue
            found = fuzzy_find(entry.letters, letters, entry.edits, edges)
            if found is None:
                continue
            distance, lo, hi = found
            if reading.kana[owner[lo]] != entry.first or reading.kana[owner[hi - 1]] != entry.last:
                continue  # a word's first and last kana must be heard: から戻し is not 払い戻し
            start, end = reading.span(owner[lo], owner[hi - 1] + 1)
            best = fuzzy.get(id(entry.phrase))
            if best is None or distance < best[0]:
                fuzzy[id(entry.phrase)] = (distance, ReadingHit(entry.phrase, start, end, MatchKind.FUZZY_READING))
        hits.extend(hit for _, hit in fuzzy.values())
        return hits
