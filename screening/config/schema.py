"""Schema helpers: value parsers/validators (each with its TOML type label) and ``_setting``,
the field whose metadata carries a key's TOML default, parser and meaning."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

from firmware.dialects import DIALECTS
from screening.core.numbers import is_supported_region

LINE_SCHEMES = ("modem", "sim", "sip")

T = TypeVar("T")
E = TypeVar("E", bound=Enum)


class _Invalid(ValueError):
    """Raised by a parser; the message is what the user sees after the key."""


# ---- value parsers ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Parser(Generic[T]):
    """Validates one raw TOML value; ``label`` is the type shown in docs and errors."""

    label: str
    convert: Callable[[object], T]

    def __call__(self, value: object) -> T:
        return self.convert(value)


def _describe(value: object) -> str:
    """How a wrong value is shown: its TOML type and the value itself."""
    kinds = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}
    kind = next((name for cls, name in kinds.items() if type(value) is cls), type(value).__name__)
    return f"{kind} {_toml_literal(value)}"


def _expect(value: object, cls: type[T], label: str) -> T:
    """Type check one raw value; bool is an int in Python but not in TOML."""
    if not isinstance(value, cls) or (cls is int and isinstance(value, bool)):
        raise _Invalid(f"expected {label} (got {_describe(value)})")
    return value


def _non_empty_string(value: object) -> str:
    text = _expect(value, str, "a string")
    if not text.strip():
        raise _Invalid("must not be empty")
    return text.strip()


def _choice(enum: type[E]) -> _Parser[E]:
    names = [m.value for m in enum]  # type: ignore[attr-defined]
    label = " | ".join(names)

    def convert(value: object) -> E:
        text = _expect(value, str, "a string")
        try:
            return enum(text.strip().lower())
        except ValueError:
            raise _Invalid(f"must be one of {', '.join(names)} (got {value!r})") from None

    return _Parser(label, convert)


def _int_range(low: int, high: int | None = None) -> _Parser[int]:
    label = f"integer {low}..{high}" if high is not None else f"integer >= {low}"

    def convert(value: object) -> int:
        value = _expect(value, int, "an integer")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise _Invalid(f"must be {bound} (got {value})")
        return value

    return _Parser(label, convert)


def _check_region(value: str) -> str:
    region = value.strip().upper()
    if not is_supported_region(region):
        raise _Invalid(f"not a supported ISO 3166 region code (got {value!r}; e.g. 'JP', 'US', 'GB')")
    return region


def _region() -> _Parser[str]:
    def convert(value: object) -> str:
        return _check_region(_expect(value, str, "a string"))

    return _Parser("region code", convert)


def _string_list(label: str, item: Callable[[str], str], into: Callable[[list[str]], T]) -> _Parser[T]:
    """A TOML array of strings; every bad item is named with its index."""

    def convert(value: object) -> T:
        raw_items = _expect(value, list, "an array of strings")
        items: list[str] = []
        errors: list[str] = []
        for index, raw in enumerate(raw_items):
            try:
                items.append(item(_expect(raw, str, "a string")))
            except _Invalid as exc:
                errors.append(f"item {index}: {exc}")
        if errors:
            raise _Invalid("; ".join(errors))
        return into(items)

    return _Parser(f"array of {label}", convert)


def _dial_string(extra: str = "") -> Callable[[str], str]:
    """Digits, plus ``extra`` characters (``#*`` for short codes like #9110)."""
    allowed = set("0123456789" + extra)
    what = f"digits or {' '.join(extra)}" if extra else "digits"

    def check(value: str) -> str:
        text = value.strip()
        if not text or not set(text) <= allowed:
            raise _Invalid(f"must be {what} (got {value!r})")
        return text

    return check


def _line_uri() -> _Parser[str]:
    """``modem:///dev/ttyACM0[?dialect=usr]``, ``sim:`` or ``sip:...``."""

    def convert(value: object) -> str:
        text = _non_empty_string(value)
        try:
            parts = urlsplit(text)
        except ValueError as exc:
            raise _Invalid(f"not a valid URI: {exc} (got {value!r})") from None
        if parts.scheme not in LINE_SCHEMES or not text.startswith(parts.scheme + ":"):
            raise _Invalid(f"scheme must be one of {', '.join(s + ':' for s in LINE_SCHEMES)} (got {value!r})")
        if parts.scheme == "modem":
            if not parts.path.startswith("/"):
                raise _Invalid(f"modem URI needs a device path, e.g. modem:///dev/ttyACM0 (got {value!r})")
            for dialect in parse_qs(parts.query).get("dialect", []):
                if dialect not in DIALECTS:
                    known = ", ".join(DIALECTS)
                    raise _Invalid(f"dialect must be one of {known} (got {dialect!r})")
        if parts.scheme == "sip":
            try:
                port = parts.port
            except ValueError:
                raise _Invalid(f"SIP URI has a bad port (got {value!r})") from None
            if not parts.hostname or not text.startswith("sip://"):
                raise _Invalid("SIP line needs sip://HOST[:PORT] (listen for INVITEs) or "
                               f"sip://USER@REGISTRAR[:PORT] (register as an extension) (got {value!r})")
            del port
        return text

    return _Parser("URI", convert)


def _path() -> _Parser[Path]:
    def convert(value: object) -> Path:
        return Path(_non_empty_string(value))

    return _Parser("path", convert)


def _optional_path() -> _Parser[Path | None]:
    """A path, or "" for none."""

    def convert(value: object) -> Path | None:
        text = _expect(value, str, "a string")
        return Path(text) if text.strip() else None

    return _Parser('path or ""', convert)


def _optional_device() -> _Parser[Path | None]:
    """An absolute device path, or "" for none."""

    def convert(value: object) -> Path | None:
        text = _expect(value, str, "a string").strip()
        if text and not text.startswith("/"):
            raise _Invalid(f"must be an absolute device path such as /dev/ttyUSB0, or \"\" (got {value!r})")
        return Path(text) if text else None

    return _Parser('device path or ""', convert)


def _optional_text() -> _Parser[str | None]:
    def convert(value: object) -> str | None:
        text = _expect(value, str, "a string")
        return text.strip() or None

    return _Parser('string or ""', convert)


def _boolean() -> _Parser[bool]:
    def convert(value: object) -> bool:
        return _expect(value, bool, "true or false")

    return _Parser("boolean", convert)


def _float_range(low: float, high: float) -> _Parser[float]:
    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"expected a number (got {_describe(value)})")
        if not low <= value <= high:
            raise _Invalid(f"must be between {low} and {high} (got {value})")
        return float(value)

    return _Parser(f"number {low}..{high}", convert)


def _optional_gpio() -> _Parser[int | None]:
    """A BCM GPIO number, or false for "not fitted"."""

    def convert(value: object) -> int | None:
        if value is False:
            return None
        number = _expect(value, int, "a GPIO number or false")
        if not 2 <= number <= 27:
            raise _Invalid(f"must be a BCM GPIO number between 2 and 27, or false (got {number})")
        return number

    return _Parser("GPIO 2..27 or false", convert)


# ---- schema --------------------------------------------------------------------


def _setting(raw_default: object, parser: _Parser[Any], doc: str) -> Any:
    """A TOML key: the dataclass default is ``parser(raw_default)``, so it is valid by construction."""
    return field(default=parser(raw_default), metadata={"raw": raw_default, "parser": parser, "doc": doc})


def _keys(section_cls: type) -> dict[str, Field[Any]]:
    """The TOML keys of a section: fields with a parser."""
    return {f.name: f for f in fields(section_cls) if "parser" in f.metadata}


def _toml_literal(value: object) -> str:
    """A value as it would be written in TOML (for docs and error messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return _toml_literal(value.value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _web_url() -> _Parser[str | None]:
    def convert(value: object) -> str | None:
        text = _expect(value, str, "a string").strip()
        if not text:
            return None
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _Invalid(f"expected an http:// or https:// URL (got {value!r})")
        return text.rstrip("/")

    return _Parser('URL or ""', convert)
