"""The whole Config, and finding, reading and validating the file into it."""

from __future__ import annotations

import difflib
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from screening.config.errors import ConfigError, ConfigProblem
from screening.config.ncid_section import NcidConfig, is_loopback_host
from screening.config.schema import _describe, _Invalid, _keys
from screening.config.sections import (
    _SECTIONS,
    _TABLE_ARRAYS,
    AlertsConfig,
    FeedsConfig,
    HubConfig,
    LineConfig,
    LogConfig,
    PanelConfig,
    RecordingConfig,
    RelativeConfig,
    RulesConfig,
    ScheduleConfig,
    ScreeningConfig,
    SipConfig,
    StoreConfig,
    VoiceConfig,
    WebConfig,
    _InvalidItems,
)
from screening.core.rules import SCHEDULABLE, Schedule

log = logging.getLogger(__name__)

SYSTEM_CONFIG_PATH = Path("/etc/mamoru/mamoru.toml")
ENV_VAR = "MAMORU_CONFIG"
BUILTIN_SOURCE = "built-in defaults"
COMMAND_LINE_SOURCE = "command line"


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
    screening: ScreeningConfig = field(default_factory=ScreeningConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    ncid: NcidConfig = field(default_factory=NcidConfig)
    relatives: tuple[RelativeConfig, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    source: str = BUILTIN_SOURCE

    def __post_init__(self) -> None:
        # rules.home_region is a copy of line.home_region, never a second truth.
        if self.rules.home_region != self.line.home_region:
            object.__setattr__(self, "rules", replace(self.rules, home_region=self.line.home_region))
        if self.rules.schedules != self.schedules:  # likewise the [[schedule]] entries
            object.__setattr__(self, "rules", replace(self.rules, schedules=self.schedules))

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
    ncid = sections.get("ncid", NcidConfig())
    if ncid.listen is not None and not ncid.allow_remote and not is_loopback_host(ncid.listen.host):
        problems.append(ConfigProblem(source, "ncid.listen", f"{ncid.listen} is not loopback: every device that "
                                      "can reach it sees who calls; set ncid.allow_remote = true to mean it"))
    relatives = _parse_relatives(document.get("relatives", []), home_region, source, problems)
    schedules = _parse_schedules(document.get("schedule", []), source, problems)
    if problems:
        raise ConfigError(problems)
    return Config(source=source, relatives=relatives, schedules=schedules, **sections)


def _check_unique_name(array: str, index: int, name: str | None, first_of: dict[str, int], file: str,
                       problems: list[ConfigProblem]) -> None:
    """Entries of an array of tables are named uniquely (case-insensitively); ``first_of`` remembers each name."""
    if name is None:
        return
    if name.casefold() in first_of:
        problems.append(ConfigProblem(
            file, f"{array}[{index}].name", f"duplicate name {name!r} (also {array}[{first_of[name.casefold()]}])"
        ))
    else:
        first_of[name.casefold()] = index


def _parse_schedules(value: object, file: str, problems: list[ConfigProblem]) -> tuple[Schedule, ...]:
    """``[[schedule]]``: keys named ``schedule[N].key``; names unique; a window that is one; some rule changed."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.append(ConfigProblem(file, "schedule", f"expected [[schedule]] tables (got {_describe(value)})"))
        return ()
    schedules: list[Schedule] = []
    first_of: dict[str, int] = {}
    for index, table in enumerate(value):
        prefix = f"schedule[{index}]"
        before = len(problems)
        values = _parse_entry(prefix, ScheduleConfig, table, file, problems)
        _check_unique_name("schedule", index, values.get("name"), first_of, file, problems)
        if values.get("start") is not None and values.get("start") == values.get("end"):
            problems.append(ConfigProblem(file, f"{prefix}.end", f"same as start ({values['end']:%H:%M}): "
                                          "the window would be empty"))
        overrides = tuple((key, values[key]) for key in SCHEDULABLE if values.get(key) is not None)
        if len(problems) == before and not overrides:
            problems.append(ConfigProblem(file, prefix, f"changes nothing: set at least one of {', '.join(SCHEDULABLE)}"))
        if len(problems) == before:
            entry = ScheduleConfig(**values)
            schedules.append(Schedule(name=entry.name, start=entry.start, end=entry.end,
                                      overrides=overrides, days=entry.days))  # fmt: skip
    return tuple(schedules)


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
        _check_unique_name("relatives", index, values.get("name"), first_of, file, problems)
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
