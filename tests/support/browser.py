"""What the browser tests drive: the real appliance (``mamoru run`` with its web server) and Chromium.

``Appliance`` is one household's unit: a config file, a database, a recordings
directory, ``mamoru run`` as a subprocess (screening, with the web page in its
own child process, as on a Pi) and the virtual modem it screens. The modem lives in the
test process, on a real pty the daemon opens through ``modem://``, so a test
can place a call whenever it needs one (``sim:`` plays a fixed list of calls
and stops the daemon when they are done). The line runs at real speed
(``time_scale`` 1): the daemon paces its prompts in real time, so the caller's
scripted timing only agrees with the daemon's at real speed.

``open_browser`` launches Debian's Chromium (never a downloaded browser) with
a fresh profile directory. Without ``/usr/bin/chromium`` the tests fail and
say how to install it: a silently skipped browser test proves nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, ViewportSize, expect

from firmware.audio_format import pcm16_to_u8, wav_to_line_u8
from firmware.dialects import CONEXANT_CX93001, RingCadence
from firmware.scenarios import CallScript
from firmware.virtual_modem import VirtualModem
from firmware.vmodem.records import CallRecord
from screening.core.model import Prompt
from tests.support.ports import free_tcp_port
from voice.announcements import PromptLibrary

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent.parent
SPEECH_DIR = ROOT / "tests" / "data" / "speech"
SCREENSHOTS_DIR = ROOT / "docs" / "screenshots"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")  # fmt: skip
INSTALL_HINT = (f"the browser tests need Debian's Chromium at {CHROMIUM}: run `apt-get install chromium "
                "fonts-noto-cjk` as root (bash scripts/test.sh does this when run as root)")  # fmt: skip

PHONE = ViewportSize(width=412, height=915)
DESKTOP = ViewportSize(width=1280, height=800)
LAUNCH_TIMEOUT_MS = 30_000
ACTION_TIMEOUT_MS = 15_000
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 120.0

SILENCE_U8 = b"\x80"
LINE_RATE = 8000
UNKNOWN_CALLER = "0662223333"  # Osaka number, on no list: screened as "unknown" (warn, recorded)
UNKNOWN_CALLER_SHOWN = "06-6222-3333"
WITHHELD = "P"
INTERNATIONAL_CALLER = "010442079460000"


def chromium_executable() -> Path:
    """Debian's Chromium, or a test failure that says how to install it."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(INSTALL_HINT, pytrace=False)
    return CHROMIUM


def open_browser(pw: Playwright, profile_dir: Path, viewport: ViewportSize = DESKTOP) -> BrowserContext:
    """Chromium with a fresh profile; the caller closes it. Japanese is the browser's language."""
    profile_dir.mkdir(parents=True, exist_ok=True)
    context = pw.chromium.launch_persistent_context(
        str(profile_dir), executable_path=str(chromium_executable()), args=list(CHROMIUM_ARGS), headless=True,
        viewport=viewport, locale="ja-JP", timeout=LAUNCH_TIMEOUT_MS)  # fmt: skip
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
    expect.set_options(timeout=ACTION_TIMEOUT_MS)
    return context


# ---- the appliance ------------------------------------------------------------------


@dataclass(frozen=True)
class CallRow:
    """What the test reads back from the database (read-only, so it never disturbs the daemon)."""

    id: int
    number: str | None
    reason_code: str | None
    action: str | None
    rule: str | None
    state: str
    recording: str | None
    recording_bytes: int | None
    transcript: str | None


class Appliance:
    """``mamoru run --config F --db F`` screening a virtual modem line, with its web page on loopback."""

    def __init__(self, root: Path, *, transcribe: bool = True, voice_language: str = "ja",
                 models_dir: Path | None = None) -> None:
        self.root = root
        self.models_dir = models_dir or root / "models"
        self.config_path = root / "mamoru.toml"
        self.db_path = root / "data" / "mamoru.db"
        self.users_path = root / "data" / "web-users.json"
        self.recordings_dir = root / "data" / "recordings"
        self.log_path = root / "mamoru.log"
        self.transcribe = transcribe
        self.voice_language = voice_language
        self.port = 0
        self.modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, time_scale=1.0)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def _write_config(self, device: Path) -> None:
        # Japanese by default, with the Whisper model `mamoru model install ja` put in the
        # tests' models cache (``models_dir``); the web page's own language is per user.
        self.config_path.write_text(f"""\
# mamoru test unit (tests/test_web_browser.py)
[line]
uri = "modem://{device}"
modem = "conexant"
home_region = "JP"
cadence = "jp"
call_timeout_s = 120

[rules]
withheld = "request_number"   # the tests change this on the settings page

[store]
db = "{self.db_path}"

[voice]
language = "{self.voice_language}"
models_dir = "{self.models_dir}"
transcribe = {str(self.transcribe).lower()}

[recording]
dir = "{self.recordings_dir}"

[feeds]
dir = "{self.root / 'feeds'}"
update_minutes = 0

[web]
enabled = true
host = "127.0.0.1"
port = {self.port}
""", encoding="utf-8")  # fmt: skip

    def start(self) -> Appliance:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        device = self.modem.start()
        self.port = free_tcp_port()
        self._write_config(device)
        env = {k: v for k, v in os.environ.items() if k != "MAMORU_CONFIG"}
        env.update(HOME=str(self.root), XDG_STATE_HOME=str(self.root / "state"), PYTHONUNBUFFERED="1")
        with self.log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "screening.cli", "run", "--config", str(self.config_path),
                 "--db", str(self.db_path)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)  # fmt: skip
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_serving(self) -> None:
        """Screening has started (its log line) and the web page answers."""
        deadline = time.monotonic() + START_TIMEOUT_S
        screening = False
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise AssertionError(f"mamoru run exited with {self._proc.returncode}:\n{self.log_tail()}")
            screening = screening or "screening on line" in self.log_text()
            if screening and self._web_answers():
                return
            time.sleep(0.2)
        raise AssertionError(f"mamoru run did not start screening and serving in {START_TIMEOUT_S:.0f} s "
                             f"(screening: {screening}):\n{self.log_tail()}")  # fmt: skip

    def _web_answers(self) -> bool:
        try:
            response = httpx.get(self.url("/login"), timeout=2.0, follow_redirects=False)
        except httpx.HTTPError:
            return False
        return response.status_code < 500

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, as systemd stops it; a daemon that does not stop in time is killed and reported."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_TIMEOUT_S)
                    raise AssertionError(f"mamoru run ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s:\n{self.log_tail()}")
        finally:
            if self.modem.running:
                self.modem.stop()

    # ---- calls ----

    def place_call(self, script: CallScript) -> CallRecord:
        return self.modem.place_call(script)

    def wait_for_call_end(self, record: CallRecord) -> CallRecord:
        return self.modem.wait_for_call_end(record, timeout=CALL_TIMEOUT_S)

    def calls(self) -> list[CallRow]:
        """Every call row, oldest first; [] while the database is not there yet or busy."""
        if not self.db_path.exists():
            return []
        try:
            con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=2.0)
            try:
                rows = con.execute("SELECT id, raw_number, reason_code, action, rule, state, recording, "
                                   "recording_bytes, transcript FROM calls ORDER BY id").fetchall()
            finally:
                con.close()
        except sqlite3.Error as exc:
            log.debug("calls not readable yet: %s", exc)
            return []
        return [CallRow(*row) for row in rows]

    def wait_for(self, what: str, predicate: Callable[[list[CallRow]], Any], timeout: float = CALL_TIMEOUT_S) -> Any:
        """Poll the call rows until ``predicate`` returns something truthy; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate(self.calls())
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{what}: not seen in {timeout:.0f} s; calls: {self.calls()}\n{self.log_tail()}")

    def wait_for_finished_call(self, number: str | None = None, reason: str | None = None,
                               after_id: int = 0) -> CallRow:  # fmt: skip
        """The first call after ``after_id`` from ``number`` (or with ``reason``) once it is completed
        and, for an answered call, once its recording and transcript are written."""

        def done(rows: list[CallRow]) -> CallRow | None:
            for row in rows:
                if row.id <= after_id or (number and row.number != number) or (reason and row.reason_code != reason):
                    continue
                if row.state != "completed":
                    return None
                if row.recording and row.recording_bytes is None:
                    return None  # the recorder still owns the file
                if self.transcribe and row.recording and row.action == "warn" and not row.transcript:
                    return None
                return row
            return None

        return self.wait_for(f"finished call from {number or reason}", done)


def fraud_call_script(language: str = "ja") -> CallScript:
    """An unknown caller who waits through our warning, then reads a fraud script, then hangs up.

    Japanese (the default): the commonest scam opener said by OpenJTalk through a telephone
    channel (tests/support/ja_speech.py), which Whisper hears well enough to flag. Korean: the
    espeak-ng tests/data/speech/ko_fraud.wav, which the small Korean model mostly mis-hears.
    """
    warning_s = PromptLibrary(language).clip_for(Prompt.WARNING).duration_s
    quiet_s = warning_s + 1.0
    if language == "ja":
        from tests.support.ja_speech import FRAUD_OPENER, spoken_script

        speech = pcm16_to_u8(spoken_script(FRAUD_OPENER, seed=7, lead_s=0.0).pcm16)
    else:
        speech = wav_to_line_u8(SPEECH_DIR / f"{language}_fraud.wav")
    audio = SILENCE_U8 * int(LINE_RATE * quiet_s) + speech
    return CallScript(label="fraud script", nmbr=UNKNOWN_CALLER, caller_audio=audio, gap_s=0.5,
                      hang_up_after_s=quiet_s + len(speech) / LINE_RATE + 1.5)  # fmt: skip


def withheld_call_script() -> CallScript:
    return CallScript(label="withheld", nmbr=WITHHELD, gap_s=0.5, hang_up_after_s=60.0)


def international_call_script() -> CallScript:
    return CallScript(label="international", nmbr=INTERNATIONAL_CALLER, gap_s=0.5, hang_up_after_s=60.0)


def blocked_caller_script() -> CallScript:
    """The fraud caller trying again (after the family blocked the number)."""
    return CallScript(label="fraud caller again", nmbr=UNKNOWN_CALLER, gap_s=0.5, hang_up_after_s=60.0)


# ---- pages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    name: str
    password: str
    role: str


def submit(page: Page, action: str, fields: dict[str, str] | None = None) -> None:
    """Fill a form (by its fields' names) and press its submit button, as a person would."""
    form = page.locator(f'form[action="{action}"]').first
    for name, value in (fields or {}).items():
        field = form.locator(f'[name="{name}"]').first
        tag = field.evaluate("e => e.tagName.toLowerCase() + ':' + (e.type || '')")
        if tag.startswith("select"):
            field.select_option(value)
        elif tag in ("input:radio", "input:checkbox"):
            form.locator(f'[name="{name}"][value="{value}"]').check()
        else:
            field.fill(value)
    with page.expect_navigation():
        form.locator('button[type="submit"], input[type="submit"], button:not([type])').first.click()


def login(page: Page, appliance: Appliance, account: Account, path: str = "/calls") -> None:
    """Open ``path`` logged out, get sent to the login form, log in, land on ``path``."""
    page.goto(appliance.url(path))
    expect(page).to_have_url(re.compile(r"/login\b"))
    submit(page, "/login", {"name": account.name, "password": account.password})
    expect(page).to_have_url(re.compile(re.escape(path) + r"$"))


def logout(page: Page, appliance: Appliance) -> None:
    with page.expect_navigation():
        page.locator('form[action="/logout"] button').first.click()
    expect(page).to_have_url(re.compile(r"/login\b"))


def screenshot(page: Page, name: str) -> list[Path]:
    """Full-page screenshots at phone and desktop size: docs/screenshots/NAME-{phone,desktop}.png."""
    SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    original = page.viewport_size
    try:
        for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
            page.set_viewport_size(size)
            path = SCREENSHOTS_DIR / f"{name}-{label}.png"
            page.screenshot(path=str(path), full_page=True, animations="disabled")
            saved.append(path)
    finally:
        if original:
            page.set_viewport_size(original)
    return saved


def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the window (0 = no sideways scrolling)."""
    return int(page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth"))


@contextlib.contextmanager
def browser_page(pw: Playwright, profile_dir: Path, viewport: ViewportSize = DESKTOP) -> Iterator[Page]:
    context = open_browser(pw, profile_dir, viewport)
    try:
        yield context.pages[0] if context.pages else context.new_page()
    finally:
        context.close()
