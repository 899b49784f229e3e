"""Phrase packs: per-language fraud phrases, categories, combinations and thresholds (TOML data).

``voice.detector`` matches and scores them; this module loads and validates
``voice/phrases/<lang>.toml`` and compiles each phrase against normalised text
(``voice.text_normalize``). Every problem in a pack is reported at once, each
naming its file and entry.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from voice.text_normalize import TextRules, normalize

log = logging.getLogger(__name__)

PACK_PACKAGE = "voice"
PACK_DIR = "phrases"

_REGEX_META = frozenset("()|?*+[]{}")


class PhrasePackError(Exception):
    """A phrase pack that cannot be used; the message names the file and every bad entry."""



# ---- phrase packs ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phrase:
    """One pack entry: ``text`` as written in the pack, compiled against normalised text."""

    text: str
    category: str
    weight: float
    pattern: re.Pattern[str] = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    weight: float
    description: str
    phrases: tuple[Phrase, ...]


@dataclass(frozen=True, slots=True)
class Combination:
    """Categories that together are far more telling than apart (impersonation + payment)."""

    categories: frozenset[str]
    bonus: float


def compile_phrase(phrase: str, rules: TextRules) -> re.Pattern[str]:
    """Turn a pack phrase into a regex over normalised text.

    Literal runs are normalised exactly like transcripts, so a phrase is written
    naturally (``Press one``, ``キャッシュ カード``) and still matches. Operators
    pass through; ``\\x`` escapes pass through untouched. For languages that
    keep spaces the phrase must start and end on word boundaries (``pin`` must
    not match ``spinach``).
    """
    parts: list[str] = []
    literal: list[str] = []

    def flush() -> None:
        if literal:
            parts.append(re.escape(normalize("".join(literal), rules, trim=False).text))
            literal.clear()

    i = 0
    while i < len(phrase):
        ch = phrase[i]
        if ch == "\\" and i + 1 < len(phrase):
            flush()
            parts.append(phrase[i:i + 2])
            i += 2
            continue
        if ch in _REGEX_META:
            flush()
            parts.append(ch)
        else:
            literal.append(ch)
        i += 1
    flush()
    body = "".join(parts).strip() if not rules.remove_spaces else "".join(parts)
    if not rules.remove_spaces:
        body = rf"(?<!\w)(?:{body})(?!\w)"
    return re.compile(body)


@dataclass(frozen=True, slots=True)
class PhrasePack:
    """A language's phrases, categories, combination bonuses and verdict thresholds."""

    language: str
    source: str
    rules: TextRules
    categories: tuple[Category, ...]
    combinations: tuple[Combination, ...]
    fraud_threshold: float
    suspicious_threshold: float
    repeat_decay: float
    match_reading: bool = False  # also match on the kana reading (Japanese; needs pyopenjtalk)
    # A phrase followed (ja: 暗証番号をお聞きすることはありません) or preceded (en: never ask for your PIN)
    # by a denial is not a request: what a real bank says. Regexes over normalised text.
    negation_after: re.Pattern[str] | None = None
    negation_before: re.Pattern[str] | None = None

    @property
    def phrases(self) -> tuple[Phrase, ...]:
        return tuple(p for c in self.categories for p in c.phrases)

    @classmethod
    def load(cls, language: str) -> PhrasePack:
        """The shipped pack for ``language`` (cached: packs are immutable and compiling costs ms)."""
        return _load_shipped(language)

    @classmethod
    def from_toml(cls, text: str, source: str) -> PhrasePack:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PhrasePackError(f"{source}: invalid TOML: {exc}") from None
        return cls.from_mapping(document, source)

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any], source: str) -> PhrasePack:
        """Validate a parsed pack; every problem is reported at once, each naming its entry."""
        return _PackParser(source).parse(document)


def available_languages() -> tuple[str, ...]:
    """Languages with a shipped pack, e.g. ``("en", "ja", "ko")``."""
    directory = resources.files(PACK_PACKAGE).joinpath(PACK_DIR)
    return tuple(sorted(p.name[:-5] for p in directory.iterdir() if p.name.endswith(".toml")))


@functools.cache
def _load_shipped(language: str) -> PhrasePack:
    resource = resources.files(PACK_PACKAGE).joinpath(PACK_DIR, f"{language}.toml")
    source = f"{PACK_PACKAGE}/{PACK_DIR}/{language}.toml"
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = ", ".join(available_languages()) or "none"
        raise PhrasePackError(f"{source}: no phrase pack for language {language!r} (available: {known})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PhrasePackError(f"{source}: cannot read: {exc}") from None
    pack = PhrasePack.from_toml(text, source)
    if pack.language != language:
        raise PhrasePackError(f"{source}: [pack] language is {pack.language!r}, expected {language!r}")
    log.debug("phrase pack %s: %d phrases in %d categories", source, len(pack.phrases), len(pack.categories))
    return pack


class _PackParser:
    """Collects every problem in a pack document before raising one PhrasePackError."""

    _PACK_KEYS = frozenset({
        "language", "name", "description", "fraud_threshold", "suspicious_threshold", "repeat_decay",
        "remove_spaces", "fold_kana", "number_words", "match_reading", "negation_after", "negation_before",
    })
    _CATEGORY_KEYS = frozenset({"weight", "description", "phrases"})
    _PHRASE_KEYS = frozenset({"phrase", "weight"})
    _TOP_KEYS = frozenset({"pack", "categories", "combinations"})

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def parse(self, doc: Mapping[str, Any]) -> PhrasePack:
        for key in doc.keys() - self._TOP_KEYS:
            self.problem(key, "unknown table (expected [pack], [categories.*], [[combinations]])")
        meta = self.table(doc, "pack")
        self.unknown_keys(meta, self._PACK_KEYS, "pack")
        language = meta.get("language")
        if not isinstance(language, str) or not language:
            self.problem("pack.language", "required, a language code such as \"ja\"")
            language = ""
        rules = TextRules(
            remove_spaces=self.boolean(meta, "remove_spaces", "pack"),
            fold_kana=self.boolean(meta, "fold_kana", "pack"),
            number_words=self.number_words(meta.get("number_words", {})),
        )
        fraud = self.number(meta, "fraud_threshold", "pack", required=True, minimum=0.0)
        suspicious = self.number(meta, "suspicious_threshold", "pack", required=True, minimum=0.0)
        if suspicious > fraud:
            self.problem("pack.suspicious_threshold", f"must not exceed fraud_threshold ({suspicious} > {fraud})")
        decay = self.number(meta, "repeat_decay", "pack", default=0.5, minimum=0.0)
        if decay > 1.0:
            self.problem("pack.repeat_decay", f"must be between 0 and 1 (got {decay})")
        categories = self.categories(doc.get("categories"), rules)
        combinations = self.combinations(doc.get("combinations", []), {c.name for c in categories})
        if self.problems:
            raise PhrasePackError(
                f"{self.source}: invalid phrase pack:\n" + "\n".join(f"  {self.source}: {p}" for p in self.problems)
            )
        match_reading = self.boolean(meta, "match_reading", "pack")
        after, before = self.regex(meta, "negation_after", rules, "^"), self.regex(meta, "negation_before", rules, "$")
        if self.problems:
            raise PhrasePackError(
                f"{self.source}: invalid phrase pack:\n" + "\n".join(f"  {self.source}: {p}" for p in self.problems)
            )
        return PhrasePack(language, self.source, rules, categories, combinations, fraud, suspicious, decay,
                          match_reading=match_reading, negation_after=after, negation_before=before)

    def regex(self, table: Mapping[str, Any], key: str, rules: TextRules, anchor: str) -> re.Pattern[str] | None:
        """A negation pattern; one before a phrase is anchored at the phrase ("$")."""
        raw = table.get(key)
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw:
            self.problem(f"pack.{key}", "expected a pattern string")
            return None
        try:
            pattern = compile_phrase(raw, rules).pattern
            return re.compile(pattern if anchor == "^" else f"(?:{pattern}) ?$")
        except re.error as exc:
            self.problem(f"pack.{key}", f"not a valid pattern: {exc}")
            return None

    # -- pieces --

    def table(self, doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = doc.get(key)
        if not isinstance(value, dict):
            self.problem(key, f"required table [{key}] is missing or not a table")
            return {}
        return value

    def unknown_keys(self, table: Mapping[str, Any], known: frozenset[str], where: str) -> None:
        for key in sorted(table.keys() - known):
            self.problem(f"{where}.{key}", f"unknown key (known: {', '.join(sorted(known))})")

    def boolean(self, table: Mapping[str, Any], key: str, where: str) -> bool:
        value = table.get(key, False)
        if not isinstance(value, bool):
            self.problem(f"{where}.{key}", f"expected true or false (got {value!r})")
            return False
        return value

    def number(
        self, table: Mapping[str, Any], key: str, where: str, *,
        required: bool = False, default: float = 1.0, minimum: float | None = None,
    ) -> float:
        if key not in table:
            if required:
                self.problem(f"{where}.{key}", "required number is missing")
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.problem(f"{where}.{key}", f"expected a number (got {value!r})")
            return default
        if minimum is not None and value < minimum:
            self.problem(f"{where}.{key}", f"must be at least {minimum} (got {value})")
            return default
        return float(value)

    def number_words(self, raw: Any) -> dict[str, str]:
        if not isinstance(raw, dict):
            self.problem("pack.number_words", "expected a table of word = \"digits\"")
            return {}
        words: dict[str, str] = {}
        for word, digits in raw.items():
            if not isinstance(digits, str) or not digits.isdigit():
                self.problem(f"pack.number_words.{word}", f"expected a string of digits (got {digits!r})")
            else:
                words[unicodedata.normalize("NFKC", word).lower()] = digits
        return words

    def categories(self, raw: Any, rules: TextRules) -> tuple[Category, ...]:
        if not isinstance(raw, dict) or not raw:
            self.problem("categories", "at least one [categories.<name>] table is required")
            return ()
        out = []
        for name, table in raw.items():
            where = f"categories.{name}"
            if not isinstance(table, dict):
                self.problem(where, "expected a table")
                continue
            self.unknown_keys(table, self._CATEGORY_KEYS, where)
            weight = self.number(table, "weight", where, minimum=0.0)
            description = table.get("description", "")
            if not isinstance(description, str):
                self.problem(f"{where}.description", "expected a string")
                description = ""
            out.append(Category(name, weight, description, self.phrases(table.get("phrases"), name, rules)))
        return tuple(out)

    def phrases(self, raw: Any, category: str, rules: TextRules) -> tuple[Phrase, ...]:
        where = f"categories.{category}.phrases"
        if not isinstance(raw, list) or not raw:
            self.problem(where, "expected a non-empty list of phrases")
            return ()
        out: list[Phrase] = []
        seen: set[str] = set()
        for index, entry in enumerate(raw):
            phrase = self.phrase(entry, f"{where}[{index}]", category, rules)
            if phrase is None:
                continue
            if phrase.text in seen:
                self.problem(f"{where}[{index}]", f"duplicate phrase {phrase.text!r}")
                continue
            seen.add(phrase.text)
            out.append(phrase)
        return tuple(out)

    def phrase(self, entry: Any, where: str, category: str, rules: TextRules) -> Phrase | None:
        weight = 1.0
        if isinstance(entry, dict):
            self.unknown_keys(entry, self._PHRASE_KEYS, where)
            weight = self.number(entry, "weight", where, minimum=0.0)
            entry = entry.get("phrase")
        if not isinstance(entry, str) or not entry.strip():
            self.problem(where, f"expected a phrase string or {{ phrase = \"...\", weight = 1.0 }} (got {entry!r})")
            return None
        try:
            pattern = compile_phrase(entry, rules)
        except re.error as exc:
            self.problem(where, f"phrase {entry!r} is not a valid pattern: {exc}")
            return None
        if pattern.fullmatch("") or pattern.search(" ") and not rules.remove_spaces:
            self.problem(where, f"phrase {entry!r} can match empty text")
            return None
        return Phrase(entry, category, weight, pattern)

    def combinations(self, raw: Any, names: set[str]) -> tuple[Combination, ...]:
        if not isinstance(raw, list):
            self.problem("combinations", "expected [[combinations]] tables")
            return ()
        out = []
        for index, table in enumerate(raw):
            where = f"combinations[{index}]"
            if not isinstance(table, dict):
                self.problem(where, "expected a table")
                continue
            self.unknown_keys(table, frozenset({"categories", "bonus"}), where)
            cats = table.get("categories")
            if not isinstance(cats, list) or len(cats) < 2 or not all(isinstance(c, str) for c in cats):
                self.problem(f"{where}.categories", "expected a list of at least two category names")
                continue
            unknown = [c for c in cats if c not in names]
            if unknown:
                self.problem(f"{where}.categories", f"unknown categor{'y' if len(unknown) == 1 else 'ies'}: "
                             + ", ".join(unknown))
                continue
            bonus = self.number(table, "bonus", where, required=True, minimum=1.0)
            out.append(Combination(frozenset(cats), bonus))
        return tuple(out)
