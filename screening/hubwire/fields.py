"""Strict reading of one decoded JSON object: every key typed, bounded and consumed.

The hub reads messages from ten thousand units it does not control, and a unit reads commands
from the network: a value of the wrong type, an unknown key or an over-long string is refused
with a WireError naming the key, never coerced.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from screening.core.clock import iso_utc, parse_iso_utc

__all__ = ["E164", "FLAG", "MESSAGE_ID", "Fields", "WireError", "wire_time"]

E = TypeVar("E", bound=StrEnum)

MESSAGE_ID = re.compile(r"[0-9a-f]{32}")
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
FLAG = re.compile(r"[a-z0-9_]{1,32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


class WireError(ValueError):
    """A message or command that does not meet the contract (the text names the key)."""


def wire_time(moment: datetime) -> str:
    return iso_utc(moment)


class Fields:
    """Take typed values out of a JSON object; ``done()`` refuses any key left over."""

    def __init__(self, document: object, what: str) -> None:
        if not isinstance(document, dict):
            raise WireError(f"{what}: expected a JSON object")
        self._left: dict[str, Any] = dict(document)
        self._what = what

    def _take(self, key: str, optional: bool) -> Any:
        if key not in self._left:
            if optional:
                return None
            raise WireError(f"{self._what}: missing {key!r}")
        return self._left.pop(key)

    def _fail(self, key: str, problem: str) -> WireError:
        return WireError(f"{self._what}: {key!r} {problem}")

    def text(self, key: str, max_len: int, *, pattern: re.Pattern[str] | None = None, empty: bool = True) -> str:
        value = self._take(key, False)
        if not isinstance(value, str):
            raise self._fail(key, "must be a string")
        if len(value) > max_len:
            raise self._fail(key, f"is longer than {max_len} characters")
        if not value and not empty:
            raise self._fail(key, "must not be empty")
        if _CONTROL.search(value):
            raise self._fail(key, "contains control characters")
        if pattern is not None and value and not pattern.fullmatch(value):
            raise self._fail(key, f"must match {pattern.pattern}")
        return value

    def optional_text(self, key: str, max_len: int, *, pattern: re.Pattern[str] | None = None) -> str | None:
        if self._left.get(key, None) is None:
            self._left.pop(key, None)
            return None
        return self.text(key, max_len, pattern=pattern, empty=False)

    def integer(self, key: str, low: int, high: int) -> int:
        value = self._take(key, False)
        # bool is an int to Python, not to the contract.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(key, "must be an integer")
        if not low <= value <= high:
            raise self._fail(key, f"must be between {low} and {high}")
        return value

    def optional_integer(self, key: str, low: int, high: int) -> int | None:
        if self._left.get(key, None) is None:
            self._left.pop(key, None)
            return None
        return self.integer(key, low, high)

    def boolean(self, key: str) -> bool:
        value = self._take(key, False)
        if not isinstance(value, bool):
            raise self._fail(key, "must be true or false")
        return value

    def time(self, key: str) -> datetime:
        value = self.text(key, 40, empty=False)
        if not value.endswith("Z"):
            raise self._fail(key, "must be UTC ending in 'Z'")
        try:
            return parse_iso_utc(value)
        except ValueError:
            raise self._fail(key, "is not an ISO-8601 time") from None

    def enum(self, key: str, kind: type[E]) -> E:
        value = self.text(key, 40, empty=False)
        try:
            return kind(value)
        except ValueError:
            raise self._fail(key, f"must be one of {', '.join(m.value for m in kind)}") from None

    def optional_enum(self, key: str, kind: type[E]) -> E | None:
        if self._left.get(key, None) is None:
            self._left.pop(key, None)
            return None
        return self.enum(key, kind)

    def texts(self, key: str, max_items: int, max_len: int, *, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
        value = self._take(key, False)
        if not isinstance(value, list):
            raise self._fail(key, "must be a list")
        if len(value) > max_items:
            raise self._fail(key, f"has more than {max_items} items")
        items: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item or len(item) > max_len or _CONTROL.search(item):
                raise self._fail(f"{key}[{index}]", f"must be a non-empty string of at most {max_len} characters")
            if pattern is not None and not pattern.fullmatch(item):
                raise self._fail(f"{key}[{index}]", f"must match {pattern.pattern}")
            items.append(item)
        return tuple(items)

    def done(self) -> None:
        if self._left:
            raise WireError(f"{self._what}: unknown keys {sorted(self._left)[:5]}")
