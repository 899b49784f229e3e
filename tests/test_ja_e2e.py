"""Japanese end to end: a Japanese fraudster's voice flagged live, over the virtual modem and over SIP.

``mamoru run`` (the real composition root, as a subprocess) with ``[voice] language = "ja"``:
the shipped Kokoro prompts, the Whisper model that ``mamoru model install ja`` puts in the test
models cache (tests/support/whisper_model.py), the shipped Japanese phrase pack, recordings in a
temp dir and one relative whose ``json://`` alert URL is a real HTTP receiver on 127.0.0.1.

The caller's voice is made in the test (tests/support/ja_speech.py): OpenJTalk says the script,
then a telephone channel (300-3400 Hz, 8 kHz, 20 dB SNR line noise, G.711 mu-law) degrades it.
Two callers, over each line:

* the commonest Japanese scam opener ("it's me; I lost my phone and my number changed; I spent
  the company's money and need money today; a colleague will collect your cash card, tell me the
  PIN; tell no one"): warned with the
  Japanese warning, recorded, transcribed while it speaks, judged fraud during the call, and
  the relative's receiver gets the alert before the caller hangs up;
* an everyday call (a visit next Sunday, dumplings): the same path, no fraud, no alert.

Over the modem the caller is the virtual modem's scripted call (``sim:?time_scale=1&scenario=``,
real time, 8-bit line audio through a real pty); over SIP it is tests/sip_peer.py (its own pjsua2
endpoint, PCMU over RTP), which speaks once the announcement is over.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("faster_whisper", reason="needs the Whisper engine (pip install 'mamoru[ja]')")
pytest.importorskip("pyopenjtalk", reason="needs pyopenjtalk-plus (the test extra)")
pytest.importorskip("apprise")

from blocklist.store import Store
from blocklist.store.rows import CallRow
from screening.core.model import Action, CallState, EventKind, Prompt
from tests.support.daemon import ROOT, DaemonProcess, daemon_env
from tests.support.ja_speech import EVERYDAY, FRAUD_OPENER, SpokenScript, spoken_script
from tests.support.ports import free_udp_port
from tests.support.receivers import HttpReceiver
from tests.support.whisper_model import cached_models_dir, whisper_model_dir
from voice.announcements import PromptLibrary

pytestmark = pytest.mark.timeout(240)

CALLER = "0662223333"  # an Osaka number on no list: screened "unknown" -> warn, stays on the line
CALLER_SHOWN = "06-6222-3333"  # how the alert names it
LISTEN_S = 1.0  # the caller starts talking this long after the warning ends (modem caller)
STAY_AFTER_S = 10.0  # and hangs up this long after the last word (a loaded test machine lags)
DAEMON_READY_S = 90.0  # Whisper loads in seconds, but the machine may be busy
PEER = ROOT / "tests" / "sip_peer.py"
WARNING_S = PromptLibrary("ja").clip_for(Prompt.WARNING).duration_s


@pytest.fixture(scope="module")
def models_dir() -> Path:
    whisper_model_dir()  # installed once into the test cache, as `mamoru model install ja` does
    return cached_models_dir()


def write_config(tmp: Path, models: Path, receiver: HttpReceiver) -> Path:
    config = tmp / "mamoru.toml"
    config.write_text(f'''
[line]
home_region = "JP"
call_timeout_s = 180

[voice]
language = "ja"
models_dir = "{models}"

[recording]
dir = "{tmp / "rec"}"

[web]
enabled = false

[feeds]
update_minutes = 0
dir = "{tmp / "feeds"}"

[[relatives]]
name = "Hanako"
notify = ["json://127.0.0.1:{receiver.port}/hanako"]
language = "ja"
''', encoding="utf-8")
    return config


def wall(mono: float) -> float:
    """A time.monotonic() reading as wall-clock seconds (the database stores UTC wall time)."""
    return time.time() - (time.monotonic() - mono)


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Outcome:
    row: CallRow
    events: list[Any]
    flags: list[Any]
    hung_up_at: float  # wall clock, from the call's hung_up event
    answered_at: float


def finished_call(db: Path, timeout: float = 60.0) -> Outcome:
    deadline = time.monotonic() + timeout
    with Store(db) as store:
        while True:
            rows = store.recent_calls(limit=5)
            if rows and rows[0].state is CallState.COMPLETED:
                break
            assert time.monotonic() < deadline, f"no completed call: {rows}"
            time.sleep(0.2)
        assert len(rows) == 1, rows
        row = rows[0]
        events = store.events_for(row.id)
        flags = store.flags_for(row.id)
    at = {e.kind: epoch(e.at) for e in reversed(events)}  # the first of each kind
    return Outcome(row, events, flags, at[EventKind.HUNG_UP], at[EventKind.ANSWERED])


def check_warned_recorded_transcribed(out: Outcome, speech_s: float) -> None:
    """Common to every call: the Japanese warning, a whole recording, transcript stored during the call.

    ``speech_s``: how long the call lasts at least, the warning included.
    """
    row, kinds = out.row, [e.kind for e in out.events]
    assert (row.action, row.rule, row.end_reason) == (Action.WARN, "unknown", "caller_hung_up"), row
    played = [e.detail for e in out.events if e.kind is EventKind.PLAYED]
    assert played and played[0]["clip"] == "ja:warning" and played[0]["end"] == "completed", played
    assert EventKind.RECORDING in kinds and row.recording and row.recording_seconds
    assert row.recording_seconds >= speech_s - 1.0, (row.recording_seconds, speech_s)
    live = [e for e in out.events if e.kind is EventKind.TRANSCRIPT and not e.detail.get("final")]
    assert live and epoch(live[0].at) < out.hung_up_at, "no transcript segment stored during the call"
    final = [e.detail for e in out.events if e.kind is EventKind.TRANSCRIPT and e.detail.get("final")]
    assert len(final) == 1 and row.transcript, final


def check_flagged_and_alerted(out: Outcome, receiver: HttpReceiver) -> None:
    row = out.row
    assert row.verdict is not None and row.verdict.value == "fraud", (row.verdict, row.score, row.transcript)
    assert row.fraud_at is not None and epoch(row.fraud_at) < out.hung_up_at, (row.fraud_at, out.hung_up_at)
    fraud = [e for e in out.events if e.kind is EventKind.FRAUD]
    assert len(fraud) == 1 and fraud[0].detail["phrases"] and epoch(fraud[0].at) < out.hung_up_at, fraud
    assert out.flags and all(f.phrase and f.category and f.start_s is not None for f in out.flags), out.flags
    alerts = receiver.wait_matching("/hanako", CALLER_SHOWN, timeout=10)
    assert alerts, f"no fraud alert at the receiver: {receiver.received}"
    body, arrived = alerts[0]
    assert wall(arrived) < out.hung_up_at, f"alert {wall(arrived) - out.hung_up_at:.1f} s after the hang-up"
    assert "詐欺" in json.dumps(body, ensure_ascii=False), body  # the relative reads Japanese


def check_quiet(out: Outcome, receiver: HttpReceiver) -> None:
    row = out.row
    assert row.verdict is None or row.verdict.value != "fraud", (row.verdict, row.score, row.transcript)
    assert row.fraud_at is None and not [e for e in out.events if e.kind is EventKind.FRAUD]
    time.sleep(1.0)  # an alert would have been sent at once, during the call
    assert not receiver.matching("/hanako", CALLER_SHOWN), receiver.received


# ---- over the virtual modem ----------------------------------------------------------------------


def modem_call(tmp: Path, models: Path, receiver: HttpReceiver, sentences: tuple[str, ...], seed: int) -> tuple[
        Outcome, SpokenScript]:
    """``mamoru run --line sim:?time_scale=1&scenario=...``: one scripted call in real time, then exit."""
    script = spoken_script(sentences, seed=seed, lead_s=WARNING_S + LISTEN_S)
    wav = script.write_wav(tmp / "caller.wav")
    scenario = tmp / "calls.toml"
    scenario.write_text(f'[[call]]\nnmbr = "{CALLER}"\ncaller_audio = "{wav}"\n'
                        f"hang_up_after_s = {script.duration_s + STAY_AFTER_S:.2f}\n", encoding="utf-8")
    db = tmp / "mamoru.db"
    daemon = DaemonProcess(["run", "--line", f"sim:?time_scale=1&scenario={scenario}",
                            "--config", str(write_config(tmp, models, receiver)), "--db", str(db)], daemon_env(tmp))
    try:
        daemon.start("mamoru demo: virtual modem", DAEMON_READY_S)
        assert daemon.proc is not None
        daemon.proc.wait(timeout=script.duration_s + 120)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_text()
    assert any("loaded" in line and "whisper" in line.lower() for line in daemon.lines), daemon.log_text()
    return finished_call(db), script


def test_japanese_fraud_call_on_the_modem_is_flagged_and_the_relative_alerted_during_it(
        tmp_path: Path, models_dir: Path, http: HttpReceiver) -> None:
    out, script = modem_call(tmp_path, models_dir, http, FRAUD_OPENER, seed=11)
    check_warned_recorded_transcribed(out, script.duration_s)  # the script starts with the listening
    check_flagged_and_alerted(out, http)


def test_everyday_japanese_call_on_the_modem_raises_nothing(tmp_path: Path, models_dir: Path,
                                                            http: HttpReceiver) -> None:
    out, script = modem_call(tmp_path, models_dir, http, EVERYDAY, seed=12)
    check_warned_recorded_transcribed(out, script.duration_s)
    check_quiet(out, http)


# ---- over SIP ---------------------------------------------------------------------------------------


@pytest.fixture
def sip_daemon(tmp_path: Path, models_dir: Path, http: HttpReceiver) -> Iterator[tuple[DaemonProcess, int]]:
    pytest.importorskip("pjsua2", reason="needs pjsua2 (pip install 'mamoru[sip]')")
    port = free_udp_port()
    daemon = DaemonProcess(["run", "--line", f"sip://127.0.0.1:{port}", "--config",
                            str(write_config(tmp_path, models_dir, http)), "--db", str(tmp_path / "mamoru.db")],
                           daemon_env(tmp_path))
    try:
        yield daemon.start("screening on line sip:", DAEMON_READY_S), port
    finally:
        code = daemon.stop()
    assert code == 0, f"daemon exit code {code}:\n{daemon.log_text()}"


def sip_call(tmp: Path, port: int, sentences: tuple[str, ...], seed: int) -> tuple[Outcome, SpokenScript]:
    """tests/sip_peer.py calls, listens to the warning, speaks the script over PCMU, hangs up."""
    script = spoken_script(sentences, seed=seed)
    wav = script.write_wav(tmp / "caller.wav")
    proc = subprocess.run(
        [sys.executable, str(PEER), "--uri", f"sip:mamoru@127.0.0.1:{port}", "--from", f"sip:{CALLER}@127.0.0.1",
         "--play", str(wav), "--play-after-quiet", "0.8", "--play-after", "15",
         "--hang-up-after-play", str(STAY_AFTER_S), "--max-s", "150"],
        capture_output=True, text=True, cwd=ROOT, timeout=170, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    caller = json.loads(proc.stdout.strip().splitlines()[-1])
    assert caller["answered"] and caller["codec"] == "PCMU" and caller["ended_by"] == "us", caller
    assert caller["play_started_s"] >= WARNING_S, caller
    return finished_call(tmp / "mamoru.db"), script


@pytest.mark.sip
def test_japanese_fraud_call_over_sip_is_flagged_and_the_relative_alerted_during_it(
        tmp_path: Path, sip_daemon: tuple[DaemonProcess, int], http: HttpReceiver) -> None:
    out, script = sip_call(tmp_path, sip_daemon[1], FRAUD_OPENER, seed=21)
    check_warned_recorded_transcribed(out, WARNING_S + script.duration_s)
    check_flagged_and_alerted(out, http)


@pytest.mark.sip
def test_everyday_japanese_call_over_sip_raises_nothing(tmp_path: Path, sip_daemon: tuple[DaemonProcess, int],
                                                       http: HttpReceiver) -> None:
    out, script = sip_call(tmp_path, sip_daemon[1], EVERYDAY, seed=22)
    check_warned_recorded_transcribed(out, WARNING_S + script.duration_s)
    check_quiet(out, http)
