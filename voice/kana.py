"""Japanese readings for phrase matching: the transcript as kana, and fuzzy search on it.

Why: a small recogniser often hears the right sounds and writes the wrong kanji
(暗証番号 -> 安処番号) or clips a mora (キャッシュカード -> キャスカード). Matching
the phrase pack on the *reading* (how the text is pronounced) catches the first,
and a bounded edit distance on a romanised reading catches the second. Short
words get no fuzziness at all: 元気 (genki) is one edit from 現金 (genkin).

The reading comes from a :class:`KanaReader`; :class:`OpenJTalkReader` wraps
``pyopenjtalk`` (package ``pyopenjtalk-plus``), imported on first use so this
module costs nothing when Japanese is not spoken and still imports without it.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "KanaReader", "OpenJTalkReader", "Reading", "default_reader", "fuzzy_find", "max_edits", "read", "romanize",
]

log = logging.getLogger(__name__)

_KATAKANA_FIRST, _KATAKANA_LAST = 0x30A1, 0x30F6
_KANA_OFFSET = 0x60
_LONG = "ー"
# Fuzzy matching only for readings at least this long (romanised letters); one edit per this many letters.
FUZZY_MIN_LETTERS = 8
LETTERS_PER_EDIT = 6


class KanaReader(Protocol):
    """Splits Japanese text into (surface, katakana pronunciation) tokens."""

    def tokens(self, text: str) -> Sequence[tuple[str, str]]: ...


class OpenJTalkReader:
    """OpenJTalk's front end (dictionary + accent rules); ``pron`` is the spoken reading (``ー`` for long vowels)."""

    def tokens(self, text: str) -> Sequence[tuple[str, str]]:
        import pyopenjtalk  # heavy (dictionary load): only when Japanese is actually read

        # use_vanilla: dictionary readings without the Sudachi homograph pass, which costs ~150 MB of RAM.
        return [(str(f["string"]), str(f["pron"])) for f in pyopenjtalk.run_frontend(text, use_vanilla=True)]


@functools.cache
def default_reader() -> KanaReader | None:
    """An OpenJTalk reader if ``pyopenjtalk`` is installed, else None (logged once: text matching still works)."""
    try:
        import pyopenjtalk  # noqa: F401
    except ImportError:
        log.warning("pyopenjtalk (package pyopenjtalk-plus) is not installed: Japanese phrases match on the written "
                    "text only, not on the kana reading")
        return None
    return OpenJTalkReader()


def _hiragana(ch: str) -> str:
    code = ord(ch)
    return chr(code - _KANA_OFFSET) if _KATAKANA_FIRST <= code <= _KATAKANA_LAST else ch


def _is_kana(ch: str) -> bool:
    return "\u3041" <= ch <= "\u3096" or ch == _LONG


@dataclass(frozen=True, slots=True)
class Reading:
    """A text's reading as hiragana; ``starts[i]``/``ends[i]`` is the span in the read text of kana ``i``."""

    kana: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    word_starts: frozenset[int] = frozenset()  # kana indices where a word (OpenJTalk token) begins

    def span(self, start: int, end: int) -> tuple[int, int]:
        return self.starts[start], self.ends[end - 1]


_E_ROW = frozenset("えけげせぜてでねへべぺめれ")
_O_ROW = frozenset("おこごそぞとどのほぼぽもよろょ")


def kana_of(pron: str) -> str:
    """Hiragana of a pronunciation, dropping accent marks and punctuation.

    OpenJTalk writes 警察 as ケーサツ but leaves けいさつ as ケイサツ, so えい/おう
    become long vowels here (as OpenJTalk does for kanji): both sides match.
    """
    out: list[str] = []
    for h in map(_hiragana, pron):
        if not _is_kana(h):
            continue
        if out and ((h == "い" and out[-1] in _E_ROW) or (h == "う" and out[-1] in _O_ROW)):
            h = _LONG
        out.append(h)
    return "".join(out)


def read(reader: KanaReader, text: str) -> Reading:
    """The reading of ``text``, each kana pointing at the token of ``text`` it was read from.

    OpenJTalk may rewrite a token's surface (``1`` -> ``一``, ``ATM`` -> ``ＡＴＭ``);
    such a token is placed at the cursor with its surface length, which keeps
    the spans monotonic and close enough for a flag to point at the right words.
    """
    kana: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    word_starts: set[int] = set()
    cursor = 0
    for surface, pron in reader.tokens(text):
        surface = unicodedata.normalize("NFKC", surface)  # OpenJTalk widens ASCII: ｗａｒｎｅｄ
        if not surface:
            continue
        found = text.find(surface, cursor)
        begin = found if found >= 0 and found - cursor <= 2 else cursor
        end = min(len(text), begin + len(surface))
        cursor = max(cursor, end)
        word_starts.add(len(kana))
        for ch in kana_of(pron):
            kana.append(ch)
            starts.append(min(begin, max(len(text) - 1, 0)))
            ends.append(max(end, begin + 1))
    word_starts.add(len(kana))
    return Reading("".join(kana), tuple(starts), tuple(ends), frozenset(word_starts))


# ---- romanisation, for edit distances that count sounds rather than kana ---------------------

_DIGRAPH_ROWS = {"き": "ky", "ぎ": "gy", "し": "sh", "じ": "j", "ち": "ch", "に": "ny", "ひ": "hy", "び": "by",
                 "ぴ": "py", "み": "my", "り": "ry", "ぢ": "j"}
_SMALL_Y = {"ゃ": "a", "ゅ": "u", "ょ": "o"}
_ROWS = {
    "": "あいうえお", "k": "かきくけこ", "g": "がぎぐげご", "s": "さしすせそ", "z": "ざじずぜぞ", "t": "たちつてと",
    "d": "だぢづでど", "n": "なにぬねの", "h": "はひふへほ", "b": "ばびぶべぼ", "p": "ぱぴぷぺぽ", "m": "まみむめも",
    "r": "らりるれろ", "y": "や_ゆ_よ", "w": "わゐ_ゑを",
}
_SINGLE: dict[str, str] = {}
for _consonant, _kana in _ROWS.items():
    for _vowel, _ch in zip("aiueo", _kana, strict=True):
        if _ch != "_":
            _SINGLE[_ch] = _consonant + _vowel
_SINGLE.update({"し": "shi", "じ": "ji", "ち": "chi", "ぢ": "ji", "つ": "tsu", "づ": "zu", "ふ": "fu", "を": "o",
                "ゐ": "i", "ゑ": "e", "ん": "N", "っ": "q", "ゔ": "vu", "ぁ": "a", "ぃ": "i", "ぅ": "u", "ぇ": "e",
                "ぉ": "o", "ゎ": "wa", "ゕ": "ka", "ゖ": "ke"})


def romanize(kana: str) -> tuple[str, tuple[int, ...]]:
    """Hepburn-like letters for hiragana (ん = N, っ = q, ー repeats the vowel) and each letter's kana index."""
    letters: list[str] = []
    owner: list[int] = []
    i = 0
    while i < len(kana):
        ch = kana[i]
        nxt = kana[i + 1] if i + 1 < len(kana) else ""
        if nxt in _SMALL_Y and ch in _DIGRAPH_ROWS:
            syllable, width = _DIGRAPH_ROWS[ch] + _SMALL_Y[nxt], 2
        elif ch == _LONG:
            vowel = next((c for c in reversed(letters) if c in "aiueo"), "")
            syllable, width = vowel, 1
        else:
            syllable, width = _SINGLE.get(ch, ""), 1
        letters.extend(syllable)
        owner.extend([i] * len(syllable))
        i += width
    return "".join(letters), tuple(owner)


def max_edits(letters: int) -> int:
    """How many edits a reading of ``letters`` romanised letters may be off by (0: exact only)."""
    return 0 if letters < FUZZY_MIN_LETTERS else letters // LETTERS_PER_EDIT


def fuzzy_find(
    needle: str, haystack: str, edits: int, boundaries: frozenset[int] | None = None
) -> tuple[int, int, int] | None:
    """Best approximate occurrence of ``needle`` in ``haystack``: (distance, start, end), or None if > ``edits``.

    ``boundaries``: letter positions where a match may start and end (word edges),
    so もしもし安処 ("moshiyasusho") cannot pass for 市役所 ("shiyakusho").

    Filter first (pigeonhole): with at most k edits, one of k+1 pieces of the
    needle occurs exactly, so only windows around such pieces are searched.
    """
    m, n = len(needle), len(haystack)
    if m == 0 or edits < 0:
        return None
    size = max(1, m // (edits + 1))
    windows: list[tuple[int, int]] = []
    for index in range(edits + 1):
        offset = index * size
        piece = needle[offset:] if index == edits else needle[offset:offset + size]
        at = haystack.find(piece)
        while at >= 0:
            windows.append((max(0, at - offset - edits), min(n, at - offset + m + edits)))
            at = haystack.find(piece, at + 1)
    best: tuple[int, int, int] | None = None
    for lo, hi in _merge(windows):
        edges = None if boundaries is None else frozenset(b - lo for b in boundaries if lo <= b <= hi)
        found = _sellers(needle, haystack[lo:hi], edits, edges)
        if found is not None and (best is None or found[0] < best[0]):
            best = (found[0], found[1] + lo, found[2] + lo)
    return best


def _merge(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(windows):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _sellers(needle: str, haystack: str, edits: int, edges: frozenset[int] | None) -> tuple[int, int, int] | None:
    """Sellers' algorithm (edit distance to any substring), keeping each cell's start so a match has a span."""
    m = len(needle)
    if m == 0 or edits < 0:
        return None
    blocked = m + edits + 1  # cost of starting where no word starts
    prev = list(range(m + 1)) if edges is None or 0 in edges else [blocked] * (m + 1)
    prev_start = [0] * (m + 1)
    best: tuple[int, int, int] | None = None
    for j, hc in enumerate(haystack, start=1):
        cur = [0 if edges is None or j in edges else blocked] + [0] * m
        cur_start = [j] * (m + 1)
        for i in range(1, m + 1):
            sub = prev[i - 1] + (needle[i - 1] != hc)
            dele = prev[i] + 1
            ins = cur[i - 1] + 1
            if sub <= dele and sub <= ins:
                cur[i], cur_start[i] = sub, prev_start[i - 1]
            elif dele <= ins:
                cur[i], cur_start[i] = dele, prev_start[i]
            else:
                cur[i], cur_start[i] = ins, cur_start[i - 1]
        if cur[m] <= edits and (edges is None or j in edges) and (best is None or cur[m] < best[0]):
            best = (cur[m], cur_start[m], j)
            if cur[m] == 0:
                break
        prev, prev_start = cur, cur_start
    return best
