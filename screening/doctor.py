"""``mamoru doctor``: is this box able to screen calls right now, in plain words.

Why: the people living with the appliance cannot debug Linux. When something
is wrong, a relative on the phone asks them to run (or press a button that
runs) ``mamoru doctor`` and read out the lines marked PROBLEM. So every
:class:`Check` carries a ``message`` a family member understands and a
``fix`` that says what to do with their hands, not a stack trace.

Each check is a small function that never raises: an unexpected error becomes
a "problem" check naming it. Every wait is bounded (modem replies, SQLite busy
wait and integrity check), so the doctor itself cannot hang.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from blocklist.recovery import DAMAGED_STORE_MESSAGE, read_notices
from screening import doctor_text
from screening.config import BUILTIN_SOURCE, Config, ConfigError, load_config
from screening.core.clock import local_stamp, parse_iso_utc, region_zone, utc_now
from screening.core.model import Language
from screening.hub_client.queue import queue_backlog, queue_path_for
from screening.line_factory import sip_defaults
from screening.status import STATUS_FILE_NAME, DaemonStatus, LineProblem, LineState, StatusError, read_status

log = logging.getLogger(__name__)

Severity = Literal["ok", "warning", "problem"]

MODEM_TIMEOUT_S = 3.0  # per command; a healthy modem answers AT in milliseconds
MIN_FREE_FRACTION = 0.05
MIN_FREE_BYTES = 200 * 1024 * 1024
MIN_SANE_YEAR = 2025  # a Pi without a real-time clock boots in 1970 until NTP sets it
DB_BUSY_TIMEOUT_S = 2.0
DB_CHECK_TIMEOUT_S = 10.0
MODEM_HELP = "Check the USB cable to the modem (grey box)."
HUB_BACKLOG_WARNING = timedelta(hours=1)  # health goes every 15 minutes: an hour of backlog means no hub


@dataclass(frozen=True, slots=True)
class Check:
    """One finding. ``message`` and ``fix`` are for a family member, not an engineer."""

    name: str
    ok: bool
    severity: Severity
    message: str
    fix: str = ""

    @classmethod
    def good(cls, name: str, message: str) -> Check:
        return cls(name, True, "ok", message, "")

    @classmethod
    def warning(cls, name: str, message: str, fix: str = "") -> Check:
        return cls(name, True, "warning", message, fix)

    @classmethod
    def problem(cls, name: str, message: str, fix: str) -> Check:
        return cls(name, False, "problem", message, fix)


# ---- the checks -----------------------------------------------------------------


def run_checks(
    cfg: Config,
    *,
    db_path: Path | None = None,
    modem_timeout_s: float = MODEM_TIMEOUT_S,
    now: Callable[[], datetime] = utc_now,
) -> list[Check]:
    """Every check, in the order a helper would look at them. Never raises."""
    database = Path(db_path) if db_path is not None else Path(cfg.store.db)
    steps: list[tuple[str, Callable[[], Check]]] = [
        ("config", lambda: check_config_source(cfg)),
        ("line", lambda: check_line(cfg, timeout_s=modem_timeout_s, db_path=database)),
        ("speech_model", lambda: check_speech_model(cfg)),
        ("disk", lambda: check_disk(_data_dirs(cfg, database))),
        ("clock", lambda: check_clock(now(), region_zone(cfg.line.home_region))),
        ("database", lambda: check_database(database)),
        ("recordings", lambda: check_recordings(cfg)),
        ("relatives", lambda: check_relatives(cfg)),
        ("feeds", lambda: check_feeds(database, cfg, now())),
    ]
    if cfg.line.nd_adapter is not None:  # only where one is fitted
        steps.insert(2, ("nd_adapter", lambda: check_nd_adapter(cfg)))
    if cfg.hub.url is not None:  # only where the household links to a hub
        steps.append(("hub", lambda: check_hub(cfg, database, now())))
    return [_guarded(name, step) for name, step in steps]


def _guarded(name: str, step: Callable[[], Check]) -> Check:
    """A bug in one check must not hide the others' answers."""
    try:
        return step()
    except Exception as exc:
        log.exception("doctor: check %s failed", name)
        return Check.problem(
            name, f"This check could not be done ({type(exc).__name__}: {exc}).",
            "Ask your helper to look at the system log (journalctl -u mamoru).",
        )


def check_config_source(cfg: Config) -> Check:
    """Running on built-in defaults on a real box means the setup was never finished."""
    if cfg.source == BUILTIN_SOURCE:
        return Check.warning(
            "config", "No settings file was found, so mamoru uses its demonstration settings.",
            "Ask your helper to create /etc/mamoru/mamoru.toml (see deploy/mamoru.example.toml).",
        )
    return Check.good("config", f"The settings file {cfg.source} is correct.")


def config_error_check(exc: ConfigError) -> Check:
    """A settings file with mistakes: each mistake names the key, which a helper needs."""
    count = len(exc.problems)
    listing = "; ".join(str(p) for p in exc.problems)
    return Check.problem(
        "config", f"The settings file has {count} mistake{'s' if count != 1 else ''}: {listing}",
        "Correct these lines in the settings file, then run: mamoru config check",
    )


def check_line(cfg: Config, *, timeout_s: float = MODEM_TIMEOUT_S, db_path: Path | None = None) -> Check:
    """Is the telephone modem there, usable by us, and answering? (A SIP line: can it be set up?)"""
    uri = cfg.line.uri
    scheme = urlsplit(uri).scheme
    if scheme == "sim":
        return Check.warning(
            "line", "mamoru is connected to its built-in demonstration line, not to the telephone. "
            "Real calls are not screened.",
            "Ask your helper to set the telephone modem in the settings ([line] uri).",
        )
    if scheme == "sip":
        return check_sip_line(cfg, Path(db_path) if db_path is not None else Path(cfg.store.db))
    if scheme != "modem":
        return Check.warning("line", f"This kind of line ({scheme}:) cannot be tested by the doctor.", "")
    device = Path(urlsplit(uri).path)
    if not device.exists():
        return Check.problem(
            "line", f"The telephone modem is not plugged in. {MODEM_HELP}",
            f"Plug the modem's USB cable firmly into the mamoru box. (modem not found at {device})",
        )
    if not os.access(device, os.R_OK | os.W_OK):
        return Check.problem(
            "line", "The telephone modem is plugged in, but mamoru is not allowed to use it.",
            f"Ask your helper to add the mamoru user to the 'dialout' group (device {device}).",
        )
    if (stuck := _handset_stuck(Path(db_path) if db_path is not None else Path(cfg.store.db))) is not None:
        return stuck
    return _probe_modem(uri, cfg, timeout_s)


def _handset_stuck(db_path: Path) -> Check | None:
    """The running daemon's word on the household handset (the doctor cannot see it itself)."""
    status = _daemon_status(db_path)
    if status is None or status.stale(datetime.now(UTC)) or status.line_problem is not LineProblem.HANDSET_STUCK:
        return None
    return Check.problem(
        "line", "The telephone's handset has been off the hook for a long time, so calls are not answered by "
        "mamoru (or its view of the handset is stuck).",
        "Put the handset back properly. If it is, unplug the modem's USB cable, wait 10 seconds and plug it "
        "back in.",
    )


def check_nd_adapter(cfg: Config) -> Check:
    """The caller-ID adapter, if one is set: plugged in and usable (it only talks during a call)."""
    device = cfg.line.nd_adapter
    if device is None:
        return Check.good("nd_adapter", "No separate caller-ID adapter is set (none is needed).")
    if not device.exists():
        return Check.problem(
            "nd_adapter", "The caller-ID adapter (Number Display) is not plugged in: calls are screened "
            "without the caller's number.",
            f"Plug the caller-ID adapter's USB cable firmly into the mamoru box. (Looked for {device}.)",
        )
    if not os.access(device, os.R_OK | os.W_OK):
        return Check.problem(
            "nd_adapter", "The caller-ID adapter is plugged in, but mamoru is not allowed to use it.",
            f"Ask your helper to add the mamoru user to the 'dialout' group (device {device}).",
        )
    return Check.good("nd_adapter", f"The caller-ID adapter is plugged in ({device}).")


def check_sip_line(cfg: Config, db_path: Path) -> Check:
    """A SIP line: the back-end is installed, its settings hold, and the running daemon's line state.

    The doctor never binds the SIP port or registers itself: the daemon owns both, and a second
    registration would take the calls away from it.
    """
    try:
        from firmware.sip_line import sip_settings_from_uri
    except ImportError:
        return Check.problem(
            "line", "The internet-telephone (SIP) part of mamoru is not installed.",
            "Ask your helper to install it: pip install 'mamoru[sip]', or scripts/build_pjproject.sh on the box.",
        )
    try:
        settings = sip_settings_from_uri(cfg.line.uri, sip_defaults(cfg))
    except ValueError as exc:
        return Check.problem("line", f"The internet-telephone settings are not usable: {exc}.",
                             "Ask your helper to correct [line] uri and [sip] in the settings file.")
    if settings.registrar is not None and settings.password is None:
        return Check.problem(
            "line", f"mamoru registers with {settings.registrar} but has no password for it.",
            "Ask your helper to write the password into the file named by [sip] password_file.",
        )
    status = _daemon_status(db_path)
    where = f"registered at {settings.registrar}" if settings.registrar else f"on {settings.host}:{settings.port}"
    if status is None or status.line_state is LineState.STOPPED or status.stale(datetime.now(UTC)):
        return Check.warning("line", f"The internet-telephone line is set up ({where}), but mamoru is not running.",
                             "Start it: systemctl start mamoru")
    if status.line_state is LineState.FAULT:
        return Check.problem("line", f"The internet-telephone line has a problem: {status.line_message}",
                             "Check the cable to the home gateway, and that the gateway is switched on.")
    return Check.good("line", f"The internet-telephone line is working ({where}).")


def _daemon_status(db_path: Path) -> DaemonStatus | None:
    try:
        return read_status(db_path.parent / STATUS_FILE_NAME)
    except StatusError:
        return None


def _probe_modem(uri: str, cfg: Config, timeout_s: float) -> Check:
    """Open the port, let the modem reset and identify itself, then ``AT``; all bounded."""
    from firmware.modem_line import ModemLine
    from screening.core.line import LineError

    kwargs: dict[str, Any] = {
        "home_region": cfg.line.home_region, "cadence": cfg.line.cadence, "name": "doctor",
        "command_timeout_s": timeout_s, "reset_timeout_s": timeout_s, "health_interval_s": None,
    }
    query = dict(parse_qsl(urlsplit(uri).query))
    if "dialect" not in query:
        kwargs["dialect"] = cfg.line.modem.value
    if "baud" not in query:
        kwargs["baudrate"] = cfg.line.baudrate
    line = ModemLine.from_uri(uri, **kwargs)
    try:
        line.open()
    except LineError as exc:
        return _modem_open_failure(exc, line.port)
    try:
        answered = line.ping(timeout=timeout_s)
        described = line.dialect.key if line.dialect is not None else "unknown"
    finally:
        line.close(join_timeout=timeout_s)
    if not answered:
        return _modem_silent(line.port)
    return Check.good("line", f"The telephone modem is connected and answering (type: {described}).")


def _modem_open_failure(exc: Exception, port: str) -> Check:
    """Tell apart 'in use by the running service', 'wrong modem' and 'not answering'."""
    from firmware.modemline.support import CommandTimeout, UnsupportedModem

    text = f"{exc} {exc.__cause__ or ''}"
    if "lock" in text.lower() and "exclusive" in text.lower():
        return Check.good(
            "line", "The telephone modem is connected and in use by the screening service (that is normal).",
        )
    if isinstance(exc, UnsupportedModem):
        return Check.problem(
            "line", "The device plugged in is not a telephone modem mamoru knows.",
            f"Use a U.S. Robotics USR5637 or a Conexant USB modem. ({exc})",
        )
    if isinstance(exc, CommandTimeout) or "timed out" in text.lower():
        return _modem_silent(port)
    return Check.problem(
        "line", f"The telephone modem could not be used. {MODEM_HELP}",
        f"Unplug the modem's USB cable, wait 10 seconds and plug it back in. ({exc})",
    )


def _modem_silent(port: str) -> Check:
    return Check.problem(
        "line", "The telephone modem is plugged in but does not answer.",
        f"Unplug the modem's USB cable, wait 10 seconds and plug it back in. If that does not help, "
        f"restart the mamoru box. ({port})",
    )


def check_speech_model(cfg: Config) -> Check:
    """Without a model, calls are still recorded but not checked for fraud."""
    import importlib.util

    from voice.engine import EngineChoice, ModelError
    from voice.engine_choice import choose_engine

    if not cfg.voice.transcribe:
        return Check.good("speech_model", "Listening to calls for fraud is switched off in the settings.")
    language = cfg.voice.language.value
    try:
        engine, found = choose_engine(cfg.voice.language, cfg.voice.engine, cfg.voice.model_dir, cfg.voice.models_dir)
    except ModelError as exc:
        return Check.problem(
            "speech_model", f"The speech model for '{language}' is missing, so calls cannot be checked for fraud.",
            f"Ask your helper to run: mamoru model install {language}  ({exc})",
        )
    module, extra = ("faster_whisper", "ja") if engine is EngineChoice.WHISPER else ("vosk", "voice")
    if importlib.util.find_spec(module) is None:
        return Check.problem(
            "speech_model", "The speech recognition software is not installed, so calls cannot be checked for fraud.",
            f"Ask your helper to run: pip install 'mamoru[{extra}]'",
        )
    return Check.good("speech_model", f"The speech model for '{language}' is installed ({found}).")


def _data_dirs(cfg: Config, database: Path) -> list[Path]:
    dirs = [database.parent]
    if cfg.recording.enabled:
        dirs.append(Path(cfg.recording.dir))
    return dirs


def _existing_ancestor(path: Path) -> Path:
    """disk_usage needs an existing path; a data dir may not be created yet."""
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def check_disk(paths: Sequence[Path]) -> Check:
    """A full card stops the call log and the recordings; judge each file system once."""
    seen: set[int] = set()
    worst: tuple[float, Path, int] | None = None
    for path in paths:
        where = _existing_ancestor(Path(path))
        device = where.stat().st_dev
        if device in seen:
            continue
        seen.add(device)
        usage = shutil.disk_usage(where)
        fraction = usage.free / usage.total if usage.total else 0.0
        if worst is None or fraction < worst[0]:
            worst = (fraction, Path(path), usage.free)
    assert worst is not None, "no paths to check"
    fraction, path, free = worst
    free_text = _human_bytes(free)
    if fraction < MIN_FREE_FRACTION or free < MIN_FREE_BYTES:
        return Check.problem(
            "disk", f"The memory card is almost full: only {free_text} free ({fraction:.0%}).",
            f"Ask your helper to delete old recordings or lower [recording] max_disk_mb. ({path})",
        )
    return Check.good("disk", f"There is enough space: {free_text} free ({fraction:.0%}).")


def _human_bytes(count: int) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def check_clock(now: datetime, zone: tzinfo = UTC) -> Check:
    """Call times, quiet hours and list expiry all need the right date; shown in the unit's local time."""
    if now.year < MIN_SANE_YEAR:
        return Check.problem(
            "clock", f"The clock is wrong: it says {now:%Y-%m-%d}. Call times and quiet hours will be wrong.",
            "Connect the mamoru box to the internet (it sets its clock from there), then restart it.",
        )
    return Check.good("clock", f"The clock looks right ({local_stamp(now, zone, seconds=False)}).")


def check_database(path: Path) -> Check:
    """Opens read-only (never migrates or locks out the daemon) and checks the schema version."""
    from blocklist.store.schema import MIGRATIONS

    damaged = read_notices(path)
    if damaged:
        return Check.problem(
            "database", DAMAGED_STORE_MESSAGE,
            f"設置担当者に連絡してください。 / Ask your helper to run: mamoru store recover --db {path} "
            f"(the damaged file is kept as {damaged[-1].moved_to}: {damaged[-1].problem})",
        )
    if not path.exists():
        return Check.warning(
            "database", "There are no call records yet. They are created when mamoru first starts.",
            f"If mamoru has been running, ask your helper to check that {path} exists.",
        )
    try:
        version, verdict = _inspect_database(path)
    except sqlite3.DatabaseError as exc:
        return Check.problem(
            "database", "The call records cannot be read; the file may be damaged.",
            f"Ask your helper to restore {path} from a backup, or move it aside so a new one is made. ({exc})",
        )
    current = len(MIGRATIONS)
    if verdict not in ("ok", "unchecked"):
        return Check.problem(
            "database", "The call records are damaged.",
            f"Ask your helper to restore {path} from a backup. (integrity check: {verdict})",
        )
    if version > current:
        return Check.problem(
            "database", "The call records were written by a newer version of mamoru.",
            f"Ask your helper to update mamoru (records are version {version}, this mamoru knows {current}).",
        )
    if version < current:
        return Check.warning(
            "database", "The call records are from an older version; they are updated when mamoru next starts.",
            "Restart mamoru (or the box) once.",
        )
    if verdict == "unchecked":
        return Check.warning("database", "The call records open, but checking them for damage took too long.", "")
    return Check.good("database", f"The call records are readable and up to date ({path}).")


def _inspect_database(path: Path) -> tuple[int, str]:
    """(schema version, quick_check verdict or 'unchecked' when it ran past its time limit)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=DB_BUSY_TIMEOUT_S)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        deadline = time.monotonic() + DB_CHECK_TIMEOUT_S
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            verdict = str(conn.execute("PRAGMA quick_check(1)").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "interrupted" not in str(exc):
                raise
            verdict = "unchecked"
        return version, verdict
    finally:
        conn.close()


def check_recordings(cfg: Config) -> Check:
    """Write a real file: catches a card remounted read-only after errors, not just permissions."""
    if not cfg.recording.enabled:
        return Check.good("recordings", "Call recording is switched off in the settings.")
    directory = Path(cfg.recording.dir)
    target = directory if directory.exists() else _existing_ancestor(directory)
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".mamoru-doctor-"):
            pass
    except OSError as exc:
        return Check.problem(
            "recordings", "Calls cannot be recorded: mamoru cannot save files in the recordings folder.",
            f"Ask your helper to check {directory} (owner mamoru, not read-only). ({exc.strerror or exc})",
        )
    if target != directory:
        return Check.good("recordings", "The recordings folder will be created with the first recording.")
    return Check.good("recordings", f"Recordings can be saved ({directory}).")


def check_relatives(cfg: Config) -> Check:
    """No relative configured means nobody hears about a fraud call."""
    if not cfg.relatives:
        return Check.warning(
            "relatives", "No family members are set up, so nobody is told about fraud calls.",
            "Ask your helper to add a [[relatives]] entry (name and phone or notify) to the settings.",
        )
    names = ", ".join(r.name for r in cfg.relatives)
    return Check.good("relatives", f"Family members who are told about fraud calls: {names}.")


def check_feeds(path: Path, cfg: Config, now: datetime) -> Check:
    """Signed number feeds: is each one still being checked, or are its numbers about to stop blocking?

    Reads the ``feeds`` table read-only, like ``check_database``. A feed that failed its
    last check is a warning while its numbers still block; once the last verified check is
    older than ``[feeds] max_age_days`` its numbers have expired: a problem.
    """
    rows = _feed_rows(path)
    if not rows:
        return Check.warning(
            "feeds", "No number lists from the police or the town are set up; only your own lists are used.",
            "Ask your helper or the police officer who installed mamoru to add one (mamoru feed add).",
        )
    stale_after = timedelta(minutes=2 * max(cfg.feeds.update_minutes, 60))
    expired_after = timedelta(days=cfg.feeds.max_age_days)
    expired, stale, fine = [], [], []
    for row in rows:
        checked = _parse_time(row["checked_at"])
        age = now - checked if checked else None
        why = f" ({row['error']})" if row["error"] else ""
        if age is None or age >= expired_after:
            expired.append(f"{row['name']}{why}")
        elif age >= stale_after or row["error"]:
            stale.append(f"{row['name']}, last checked {checked:%Y-%m-%d}{why}")
        else:
            fine.append(f"{row['name']} ({row['entries']} numbers)")
    if expired:
        return Check.problem(
            "feeds", "These number lists are out of date and no longer block anything: " + "; ".join(expired) + ".",
            "Check that the box is connected to the internet; if it is, tell the police officer or helper.",
        )
    if stale:
        return Check.warning(
            "feeds", "These number lists could not be updated lately: " + "; ".join(stale) + ".",
            "Check that the box is connected to the internet.",
        )
    return Check.good("feeds", "Number lists up to date: " + ", ".join(fine) + ".")


def check_hub(cfg: Config, database: Path, now: datetime) -> Check:
    """``[hub]``: complete, its files readable, and nothing waiting long for an unreachable hub."""
    hub = cfg.hub
    missing = [k for k, v in (("unit_id", hub.unit_id), ("credentials_file", hub.credentials_file),
                              ("command_key", hub.command_key)) if not v]  # fmt: skip
    if missing:
        return Check.problem("hub", f"The hub link is set up without {', '.join(missing)}.",
                             "Ask your helper to complete the [hub] section of the settings.")  # fmt: skip
    for path in (hub.credentials_file, hub.ca_file):
        if path is not None and not os.access(path, os.R_OK):
            return Check.problem("hub", f"The hub file {path} cannot be read.",
                                 "Apply the household's provisioning bundle again: mamoru provision apply")  # fmt: skip
    waiting, oldest = queue_backlog(queue_path_for(database))
    if oldest is not None and now - parse_iso_utc(oldest) > HUB_BACKLOG_WARNING:
        return Check.warning("hub", f"{waiting} messages for the hub have waited since {oldest}: it cannot be reached.",
                             "Check the home's internet connection; the messages are kept and sent when it returns.")  # fmt: skip
    return Check.good("hub", f"Linked to the hub {hub.url} as {hub.unit_id} ({waiting} messages waiting).")


def _feed_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=DB_BUSY_TIMEOUT_S)
    conn.row_factory = sqlite3.Row
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'feeds'").fetchone() is None:
            return []
        return [dict(r) for r in conn.execute("SELECT name, entries, checked_at, error FROM feeds ORDER BY name")]
    finally:
        conn.close()


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_iso_utc(text)
    except ValueError:
        return None


# ---- command line -------------------------------------------------------------------


def collect(config_path: Path | None, db: str | None) -> list[Check]:
    """Load the config, then run the checks; a broken config still gets the clock checked."""
    try:
        cfg = load_config(config_path)
        if db:
            cfg = cfg.with_overrides(db=db)
    except ConfigError as exc:
        zone = region_zone(Config().line.home_region)  # the default region's time: the file's is unknown
        return [config_error_check(exc), _guarded("clock", lambda: check_clock(datetime.now(UTC), zone))]
    return run_checks(cfg, db_path=Path(db) if db else None)


def report_language(config_path: Path | None) -> Language:
    """The configured ``voice.language``; Japanese when the settings cannot be read."""
    try:
        return load_config(config_path).voice.language
    except ConfigError:
        return Language.JA


def format_report(checks: Sequence[Check], language: Language = Language.JA) -> str:
    """One line per check in the household's language; the fix indented under each warning or problem."""
    return doctor_text.format_report(checks, language)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: mamoru doctor")
