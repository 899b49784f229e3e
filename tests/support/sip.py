"""Screening over SIP in-process: call loops (one Daemon each) on one real pjsua2 endpoint on 127.0.0.1,
called by ``tests/sip_peer.py`` subprocesses. Import after ``pytest.importorskip("pjsua2")``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Self

from blocklist.store import Store
from firmware.sip_line import CallerIdFn, SipLine, SipSettings
from screening.core.line import AudioClip
from screening.core.model import ListEntry, ListKind, MatchKind
from screening.core.rules import Policy
from screening.core.sip_callerid import caller_id_from_sip
from screening.daemon import Daemon
from screening.session import CallSettings, SessionSettings
from tests.support.daemon import finished_calls
from tests.support.ports import free_udp_port
from voice.announcements import ToneAnnouncements

ROOT = Path(__file__).resolve().parent.parent.parent
PEER = ROOT / "tests" / "sip_peer.py"
FAMILY, BLOCKED, UNKNOWN = "0312345678", "0398765432", "0662223333"


class Recorder:
    """A real CallAudio: keeps what the session hands it (the voice pipeline's seat)."""

    def __init__(self) -> None:
        self.clips: list[str] = []
        self.received_pcm = bytearray()
        self.finished = False

    def start_call(self, call_id: int) -> Recorder:
        return self

    def played(self, clip: AudioClip) -> None:
        self.clips.append(clip.name)

    def received(self, pcm16: bytes) -> None:
        self.received_pcm += pcm16

    def finish(self) -> None:
        self.finished = True


class SipDaemonRig:
    """``lines`` call loops (one Daemon each) on one SIP endpoint, a real store, tone prompts."""

    def __init__(self, tmp: Path, ring_timeout_s: float = 20.0, trusted: frozenset[str] = frozenset(),
                 caller_id: CallerIdFn = caller_id_from_sip, lines: int = 1, policy: Policy | None = None,
                 session: SessionSettings | None = None, call_timeout_s: float = 30.0, **settings: object) -> None:
        self.policy = policy or Policy()
        self.call_timeout_s = call_timeout_s
        self.session = session or SessionSettings()
        self.port = free_udp_port()
        self.store = Store(tmp / "calls.db", retry_interval=0.05, busy_timeout=0.2)
        self.voices = [Recorder() for _ in range(lines)]
        base = SipSettings(host="127.0.0.1", port=self.port, ring_period_s=1.0, ring_timeout_s=ring_timeout_s,
                           trusted_upstreams=trusted, max_calls=lines)
        first = SipLine(replace(base, **settings), caller_id)  # type: ignore[arg-type]
        self.lines: list[SipLine] = [first] + [SipLine(first.settings, endpoint=first.endpoint, slot=i)
                                               for i in range(1, lines)]
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    @property
    def line(self) -> SipLine:
        return self.lines[0]

    @property
    def voice(self) -> Recorder:
        return self.voices[0]

    def __enter__(self) -> Self:
        self.store.open()
        self.store.add_entry(ListEntry(ListKind.ALLOW, MatchKind.EXACT, "+81312345678", source="family"))
        self.store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81398765432"))
        for line, voice in zip(self.lines, self.voices):
            line.open()
            daemon = Daemon(line, self.store, CallSettings(self.policy, ToneAnnouncements(), self.call_timeout_s),
                            replace(self.session, voice=voice))
            thread = threading.Thread(target=daemon.run, args=(self.stop,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def start_call(self, user: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(PEER), "--uri", f"sip:mamoru@127.0.0.1:{self.port}",
             "--from", f"sip:{user}@127.0.0.1", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)

    def call(self, user: str, *args: str, timeout: float = 30.0) -> dict:
        return result_of(self.start_call(user, *args), timeout)

    def wait_calls(self, n: int, timeout: float = 10.0) -> list:
        return finished_calls(self.store, n, timeout)

    def event_kinds(self, call_id: int) -> list[str]:
        return [e.kind for e in self.store.events_for(call_id)]

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        for line in self.lines:
            line.close()
        self.store.close()


def result_of(proc: subprocess.Popen[str], timeout: float = 30.0) -> dict:
    """The JSON summary a sip_peer.py caller prints last, once it exited cleanly."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])
