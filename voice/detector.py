"""Fraud detection on call transcripts, driven by per-language phrase packs.

Why phrase packs and not a model: the appliance runs on a Raspberry Pi, must
explain every warning to a worried family ("it said *cash card* and *police*"),
and Japanese/Korean scam scripts are published by the police as phrases, not as
training data. So the knowledge lives in data files (``voice/phrases/<lang>.toml``)
that a non-programmer can read and extend; this module only normalises text
(with ``voice.text_normalize``), matches the phrases and combines the evidence.

Matching is tolerant of what speech recognisers produce:

* text is NFKC-normalised, lower-cased, punctuation becomes a separator and
  apostrophes vanish (``it's`` == ``its``);
* packs with ``remove_spaces`` (Japanese, Korean) drop all separators, because
  Vosk puts spaces between Japanese words (``キャッシュ カード``) and Korean
  spacing is inconsistent;
* packs with ``fold_kana`` map katakana to hiragana so ``きゃっしゅかーど``
  matches ``キャッシュカード``;
* ``number_words`` maps spoken numbers to digits (``press one`` == ``press 1``);
* a phrase may use a small regular-expression subset (``( | ) ? * + [ ] { }``
  and backslash escapes) for inflections, e.g. ``refund(s|ed)?``.

Every normalised character keeps the span of the original characters it came
from, so each :class:`Flag` points at the phrase in the caller's text (or, when
streaming, at the time of the word where the phrase starts).

Packs with ``match_reading`` (Japanese) are also matched on the transcript's
kana reading (``voice.reading_match``): exactly, and for long readings within a
few edits. Each flag says how it was found (:class:`MatchKind`).

Scoring: a phrase entry counts once however often it is said; within a category
further phrases add with diminishing returns (``repeat_decay``); category scores
add up and are multiplied by the largest bonus among the pack's dangerous
``combinations`` (e.g. impersonation + payment instruction) whose categories
were all hit. Thresholds in the pack turn the score into a :class:`Verdict`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from screening.core.model import Verdict
from voice.kana import KanaReader, default_reader
from voice.phrase_pack import (
    Category,
    Combination,
    Phrase,
    PhrasePack,
    PhrasePackError,
    available_languages,
    compile_phrase,
)
from voice.reading_match import MatchKind, ReadingMatcher, ReadingMode
from voice.text_normalize import Normalized, TextRules, normalize

__all__ = [
    "Category", "Combination", "Detection", "Flag", "FraudDetector", "MatchKind", "Phrase", "PhraseMatcher",
    "PhrasePack", "PhrasePackError", "ReadingMode", "StreamingDetector", "available_languages", "compile_phrase",
    "prepare_reading", "score_phrases", "verdict_for",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Flag:
    """One phrase heard. ``start``/``end``: seconds into the call if timing is known, else character offsets."""

    phrase: str
    category: str
    start: float
    matched: str
    end: float = -1.0
    how: MatchKind = MatchKind.TEXT

    def as_dict(self) -> dict[str, Any]:
        # "phrase" is what was actually said, readable by a relative; "pattern" the pack entry that fired;
        # "how": found in the written text, in its kana reading, or in the reading within a few edits.
        return {"phrase": self.matched, "category": self.category, "start": _json_number(self.start),
                "end": _json_number(self.end), "pattern": self.phrase, "how": self.how.value}


@dataclass(frozen=True, slots=True)
class Detection:
    """The verdict on a transcript, with the evidence that produced it."""

    verdict: Verdict
    score: float
    flags: tuple[Flag, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "score": self.score,
            "flags": [f.as_dict() for f in self.flags],
        }


def _json_number(value: float) -> int | float:
    """Character offsets print as integers, times with millisecond precision."""
    return int(value) if float(value).is_integer() else round(value, 3)


# ---- matching and scoring -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Match:
    """A phrase found in normalised text, with its span in the original text."""

    phrase: Phrase
    start: int
    end: int
    how: MatchKind = MatchKind.TEXT


class PhraseMatcher:
    """Finds a pack's phrases in text, and for ``match_reading`` packs in its kana reading too.

    The kana reader is injected, or created on first use (``voice.kana.default_reader``);
    without one, matching falls back to the written text (logged once by the reader).
    """

    def __init__(self, pack: PhrasePack, reader: KanaReader | None = None,
                 mode: ReadingMode = ReadingMode.FUZZY_READING) -> None:
        self.pack = pack
        self.mode = mode if pack.match_reading else ReadingMode.TEXT_ONLY
        self._reader = reader
        self._reading: ReadingMatcher[Phrase] | None = None
        self._prepared = False

    def prepare(self) -> ReadingMatcher[Phrase] | None:
        """The phrase readings, built on first use (about a second): None when matching the text only."""
        if not self._prepared:
            self._prepared = True
            reader = self._reader or default_reader()
            if reader is not None:
                self._reading = _reading_matcher(self.pack, reader)
        return self._reading

    def find(self, text: str) -> list[Match]:
        """Every occurrence of every phrase in ``text`` (phrases may overlap each other), in text order."""
        norm = normalize(text, self.pack.rules)
        matches = []
        for phrase in self.pack.phrases:
            for m in phrase.pattern.finditer(norm.text):
                if m.end() > m.start():
                    start, end = norm.span(m.start(), m.end())
                    matches.append(Match(phrase, start, end))
        reading = self.prepare() if self.mode is not ReadingMode.TEXT_ONLY else None
        if reading is not None:
            # Read the text with its katakana intact: OpenJTalk splits words better that way.
            spoken = normalize(text, _reading_rules(self.pack.rules))
            matches.extend(_new_reading_matches(spoken, matches, reading.find(spoken.text, self.mode)))
        matches.sort(key=lambda m: (m.start, m.end))
        return [m for m in matches if not self._negated(text, m)]

    NEGATION_WINDOW = 40  # characters either side of a phrase where a denial is looked for

    def _negated(self, text: str, m: Match) -> bool:
        after, before = self.pack.negation_after, self.pack.negation_before
        if after is not None:
            # From the phrase's start: the denial may begin inside it (カードを預か|ることはありません).
            phrase = normalize(text[m.start:m.end], self.pack.rules).text
            tail = normalize(text[m.start:m.end + self.NEGATION_WINDOW], self.pack.rules).text
            denial = after.search(tail)
            if denial is not None and denial.start() <= len(phrase) + 1:
                return True
        if before is not None:
            head = normalize(text[max(0, m.start - self.NEGATION_WINDOW):m.start], self.pack.rules, trim=False).text
            if before.search(head.rstrip() + " "):
                return True
        return False


def _new_reading_matches(norm: Normalized, text_matches: list[Match], hits: Iterable[Any]) -> list[Match]:
    """Reading hits mapped back to the original text, minus those the written text already explained.

    A near miss is also dropped where an exact match of any phrase sits: 警察 heard exactly is
    not a near miss of 検察.
    """
    out: list[Match] = []
    for hit in sorted(hits, key=lambda h: h.kind is MatchKind.FUZZY_READING):  # exact readings first
        start, end = norm.span(hit.start, hit.end)
        fuzzy = hit.kind is MatchKind.FUZZY_READING
        if any(m.phrase is hit.phrase and m.start < end and start < m.end for m in [*text_matches, *out]):
            continue
        if fuzzy and any(m.how is not MatchKind.FUZZY_READING and (start <= m.start and m.end <= end
                                                                   or m.start <= start and end <= m.end)
                         for m in [*text_matches, *out]):
            continue
        out.append(Match(hit.phrase, start, end, hit.kind))
    return out


def _reading_rules(rules: TextRules) -> TextRules:
    return TextRules(remove_spaces=True, fold_kana=False, number_words=rules.number_words)


_READING_MATCHERS: dict[tuple[str, int], tuple[KanaReader, ReadingMatcher[Phrase]]] = {}


def _reading_matcher(pack: PhrasePack, reader: KanaReader) -> ReadingMatcher[Phrase]:
    """One matcher per (pack, reader): reading every phrase alternative costs ~0.1 s, calls come often."""
    key = (pack.source, id(reader))
    cached = _READING_MATCHERS.get(key)
    if cached is None or cached[0] is not reader:
        rules = _reading_rules(pack.rules)
        matcher = ReadingMatcher.build(reader, [(p, p.text) for p in pack.phrases],
                                       lambda s: normalize(s, rules).text)
        cached = _READING_MATCHERS[key] = (reader, matcher)
    return cached[1]


def prepare_reading(pack: PhrasePack, reader: KanaReader | None = None) -> bool:
    """Build the pack's phrase readings now (service start), not during the first call (~1 s, more on a Pi).

    Returns whether the pack is matched on readings (False: text only, or the pack does not ask for it).
    """
    return pack.match_reading and PhraseMatcher(pack, reader).prepare() is not None


def score_phrases(pack: PhrasePack, phrases: Iterable[Phrase]) -> float:
    """Combine distinct phrases into a score (see the module docstring for the formula)."""
    by_category: dict[str, list[float]] = {}
    for phrase in set(phrases):
        by_category.setdefault(phrase.category, []).append(phrase.weight)
    if not by_category:
        return 0.0
    weights = {c.name: c.weight for c in pack.categories}
    base = 0.0
    for name, phrase_weights in by_category.items():
        phrase_weights.sort(reverse=True)
        base += weights[name] * sum(w * pack.repeat_decay ** i for i, w in enumerate(phrase_weights))
    hit = by_category.keys()
    bonus = max((c.bonus for c in pack.combinations if c.categories <= hit), default=1.0)
    return round(base * bonus, 3)


def verdict_for(pack: PhrasePack, score: float) -> Verdict:
    if score >= pack.fraud_threshold:
        return Verdict.FRAUD
    if score >= pack.suspicious_threshold:
        return Verdict.SUSPICIOUS
    return Verdict.CLEAN


class FraudDetector:
    """Scores a whole transcript at once (``mamoru detect``, benchmarks, call review)."""

    def __init__(self, pack: PhrasePack, reader: KanaReader | None = None,
                 mode: ReadingMode = ReadingMode.FUZZY_READING) -> None:
        self.pack = pack
        self.matcher = PhraseMatcher(pack, reader, mode)

    def detect(self, text: str) -> Detection:
        matches = self.matcher.find(text)
        flags = tuple(Flag(m.phrase.text, m.phrase.category, float(m.start), text[m.start:m.end], float(m.end), m.how)
                      for m in matches)
        score = score_phrases(self.pack, (m.phrase for m in matches))
        return Detection(verdict_for(self.pack, score), score, flags)


class StreamingDetector:
    """Scores a live call segment by segment, as the recogniser finalises them.

    Only a short tail of the previous text is re-scanned with each new segment,
    so a phrase split across two segments (``キャッシュ`` | ``カード``) is still
    found while the cost per segment stays constant over a long call.
    """

    TAIL_CHARS = 96

    def __init__(self, pack: PhrasePack, reader: KanaReader | None = None,
                 mode: ReadingMode = ReadingMode.FUZZY_READING) -> None:
        self.pack = pack
        self.matcher = PhraseMatcher(pack, reader, mode)
        self._tail = ""
        self._tail_times: list[tuple[float, float]] = []
        self._flags: list[Flag] = []
        self._phrases: set[Phrase] = set()
        self._score = 0.0
        self._fraud_since: float | None = None

    @property
    def detection(self) -> Detection:
        return Detection(verdict_for(self.pack, self._score), self._score, tuple(self._flags))

    @property
    def fraud_since(self) -> float | None:
        """Audio time (end of the phrase that tipped the score) when the verdict first became FRAUD."""
        return self._fraud_since

    def add_segment(
        self, text: str, start_s: float, end_s: float, words: Sequence[tuple[str, float, float]] = ()
    ) -> list[Flag]:
        """Add one final ASR segment (in call order); returns the flags it produced."""
        seg_times = _char_times(text, start_s, end_s, words)
        joiner = " " if self._tail else ""
        combined = self._tail + joiner + text
        times = self._tail_times + [(start_s, start_s)] * len(joiner) + seg_times
        boundary = len(self._tail) + len(joiner)
        matches = self.matcher.find(combined)
        fresh = sorted((m for m in matches if m.end > boundary), key=lambda m: m.end)
        new_flags = []
        for m in fresh:
            flag = Flag(m.phrase.text, m.phrase.category, times[m.start][0], combined[m.start:m.end],
                        times[m.end - 1][1], m.how)
            new_flags.append(flag)
            self._add(m.phrase, times[m.end - 1][1])
        self._flags.extend(new_flags)
        self._tail, self._tail_times = _tail(combined, times, self.TAIL_CHARS)
        return new_flags

    def _add(self, phrase: Phrase, heard_at: float) -> None:
        if phrase in self._phrases:
            return
        self._phrases.add(phrase)
        self._score = score_phrases(self.pack, self._phrases)
        if self._fraud_since is None and verdict_for(self.pack, self._score) is Verdict.FRAUD:
            self._fraud_since = heard_at
            log.info("fraud verdict at %.2f s (score %.2f, phrase %r)", heard_at, self._score, phrase.text)


def _char_times(
    text: str, start_s: float, end_s: float, words: Sequence[tuple[str, float, float]]
) -> list[tuple[float, float]]:
    """(start, end) audio time of every character: its word's timing, else the segment's."""
    times = [(start_s, end_s)] * len(text)
    cursor = 0
    for word, w_start, w_end in words:
        index = text.find(word, cursor) if word else -1
        if index < 0:
            continue
        for i in range(cursor, index):  # separators before a word belong to it
            times[i] = (w_start, w_start)
        for i in range(index, index + len(word)):
            times[i] = (w_start, w_end)
        cursor = index + len(word)
    return times


def _tail(text: str, times: list[tuple[float, float]], size: int) -> tuple[str, list[tuple[float, float]]]:
    """The last ~``size`` characters, cut at a space so no half word can fake a match."""
    if len(text) <= size:
        return text, times
    cut = len(text) - size
    space = text.find(" ", cut)
    if space != -1 and space < len(text) - size // 4:
        cut = space + 1
    return text[cut:], times[cut:]
