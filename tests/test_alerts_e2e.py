"""Alerts end to end: from the screening daemon and from the live voice pipeline to a real local receiver.

1. ``mamoru run`` (a subprocess) on the virtual modem: a blocklisted caller who
   keeps trying produces one alert at a local JSON webhook, with the number,
   and the outbox shows it sent.
2. The live pipeline: the segment that makes a call's verdict fraud raises the
   fraud event, and the alert with what was said reaches the receiver within a
   second. (The segments are text a recogniser would emit; live recognition
   itself is covered by tests/test_voice_e2e.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blocklist.store import Store
from screening.alert_wiring import start_alerts
from screening.config import parse_config
from screening.core.model import CallerID
from tests.support.receivers import HttpReceiver, json_url
from voice.asr import Segment, Word
from voice.detector import PhrasePack
from voice.pipeline import VoiceService

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).parent.parent


def test_repeat_blocked_caller_alerts_a_relative_through_the_daemon(tmp_path: Path, http: HttpReceiver) -> None:
    cfg = tmp_path / "mamoru.toml"
    cfg.write_text(f'''
[alerts]
repeat_block_count = 2
repeat_block_minutes = 10

[[relatives]]
name = "Hanako"
notify = ["{json_url(http.port, "hanako")}"]
language = "en"

[recording]
dir = "{tmp_path / "rec"}"
''', encoding="utf-8")
    scenario = tmp_path / "calls.toml"
    scenario.write_text('[[call]]\nnmbr = "0398765432"\nhang_up_after_s = 400\n'
                        '[[call]]\nnmbr = "0398765432"\nhang_up_after_s = 400\ngap_s = 1\n', encoding="utf-8")
    db = tmp_path / "m.db"
    with Store(db) as store:
        from screening.core.model import ListEntry, ListKind, MatchKind
        store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81398765432", note="fake bank"))
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("MAMORU_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "screening.cli", "run", "--config", str(cfg), "--db", str(db),
                           "--line", f"sim:?time_scale=0.05&scenario={scenario}"],
                          capture_output=True, text=True, timeout=100, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    # two alerts: "no speech model for ja" (health) and the repeat caller
    assert http.wait_for("/hanako", 2, timeout=10), proc.stderr
    bodies = [json.dumps(b, ensure_ascii=False) for b in http.paths("/hanako")]
    assert any("03-9876-5432" in b for b in bodies), bodies
    assert any("speech model" in b for b in bodies), bodies
    listed = json.loads(subprocess.run(
        [sys.executable, "-m", "screening.cli", "alerts", "--json", "--config", str(cfg), "--db", str(db)],
        capture_output=True, text=True, timeout=30, env=env, cwd=ROOT).stdout)
    assert any(a["kind"] == "repeat_block" for a in listed)


def test_fraud_event_alert_arrives_within_a_second_of_the_flag(tmp_path: Path, http: HttpReceiver) -> None:
    config = parse_config({"relatives": [{"name": "Taro", "notify": [json_url(http.port, "taro")]}]}, "test")
    with Store(tmp_path / "m.db") as store:
        call_id = store.begin_call("modem", CallerID(raw_number="0312345678", number_e164="+81312345678"))
        alerts = start_alerts(config, store)
        assert alerts is not None
        try:
            voice = VoiceService(store=store, recordings_dir=None, pack=PhrasePack.load("ja"), model=None)
            voice.on_fraud.append(alerts.fraud_handler())
            raised: list[float] = []
            voice.on_fraud.append(lambda _event: raised.append(time.monotonic()))
            audio = voice.start_call(call_id)
            for text, start, end in [("もしもし 警察 です", 0.5, 2.0),
                                     ("あなた の 口座 が 犯罪 に 使わ れ て い ます", 2.5, 5.0),
                                     ("キャッシュ カード を 預かり に 伺い ます", 5.5, 8.0),
                                     ("暗証 番号 を 教え て ください", 8.5, 10.0)]:
                audio.add_segment(Segment(text, start, end, (Word(text.split()[0], start, start + 0.3, 1.0),)))
            assert raised, "the script did not make the verdict fraud"
            assert http.wait_for("/taro", 1, timeout=5)
            arrived = http.received[0][2]
            assert arrived - raised[0] < 1.0
            body = json.dumps(http.paths("/taro")[0], ensure_ascii=False)
            assert "03-1234-5678" in body and ("キャッシュ" in body or "口座" in body or "警察" in body)
            audio.finish()
        finally:
            alerts.stop()


def test_relative_is_phoned_after_the_fraud_call_and_acknowledges_with_1(tmp_path: Path) -> None:
    """The voice-call alert through the running daemon: queued by the alert worker, dialled by the
    call loop once the line is idle, message played, DTMF 1 from the relative acknowledges it."""
    import threading

    from test_alerts import fraud_event

    from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, RingCadence
    from firmware.modem_line import ModemLine
    from firmware.scenarios import CalleeScript
    from firmware.virtual_modem import VirtualModem
    from screening.core.rules import Policy
    from screening.daemon import Daemon
    from screening.line_jobs import LineJobs
    from screening.session import CallSettings, SessionSettings
    from voice.announcements import ToneAnnouncements

    config = parse_config({"relatives": [{"name": "Taro", "phone": "090-1234-5678", "language": "ja"}]}, "test")
    modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, time_scale=0.1)
    modem.start()
    # Line seconds at time_scale 0.1: the relative answers, listens to the ~10 s (real) message, presses 1.
    modem.expect_dial("09012345678", CalleeScript(answer_after_s=1.0, dtmf=((115.0, "1"),), hang_up_after_s=400))
    line = ModemLine(str(modem.device_path), "auto", "JP", RingCadence.JAPAN,
                     ring_gap_s=1.5 * CADENCE_PERIOD_S[RingCadence.JAPAN] * 0.1)
    line.open()
    with Store(tmp_path / "m.db") as store:
        call_id = store.begin_call("modem", CallerID(raw_number="0312345678", number_e164="+81312345678"))
        jobs = LineJobs()
        alerts = start_alerts(config, store, line, jobs)
        assert alerts is not None
        daemon = Daemon(line, store, CallSettings(Policy(), ToneAnnouncements()), SessionSettings(), line_jobs=jobs)
        stop = threading.Event()
        loop = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
        loop.start()
        try:
            alerts.fraud_handler()(fraud_event(call_id))
            record = modem.wait_for_dial_end(0, timeout=60)
            deadline = time.monotonic() + 30
            status = None
            while time.monotonic() < deadline:
                (_, deliveries), *_ = alerts.service.outbox.recent(5)
                status = deliveries[0].status.value
                if status == "acknowledged":
                    break
                time.sleep(0.1)
        finally:
            stop.set()
            loop.join(timeout=30)
            alerts.stop()
            line.close()
            modem.stop()
    assert record.dial_string.endswith("09012345678")
    assert len(record.played_audio) > 8000  # the spoken message reached the relative
    assert status == "acknowledged"


def test_nearly_full_disk_raises_one_health_alert(tmp_path: Path, http: HttpReceiver, monkeypatch) -> None:
    """The hourly check: below 5 % (or 200 MB) free, the family is told once that recordings will stop."""
    import shutil as real_shutil
    from collections import namedtuple

    config = parse_config({"relatives": [{"name": "Taro", "notify": [json_url(http.port, "taro")]}]}, "test")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(real_shutil, "disk_usage", lambda _p: usage(16 * 2**30, 16 * 2**30 - 50 * 2**20, 50 * 2**20))
    with Store(tmp_path / "m.db") as store:
        alerts = start_alerts(config, store)
        assert alerts is not None
        try:
            alerts.check_disk(tmp_path)
            alerts.check_disk(tmp_path)  # same problem, same day: no second alert
            assert http.wait_for("/taro", 1, timeout=5)
            time.sleep(0.5)
            assert len(http.paths("/taro")) == 1
            assert "50 MB free" in json.dumps(http.paths("/taro")[0])
        finally:
            alerts.stop()
