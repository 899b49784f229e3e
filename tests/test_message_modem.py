"""A message left over the virtual modem (real daemon, real pty) reaches the family's digest and the web page."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from firmware.scenarios import UNKNOWN_NUMBER, CallScript
from screening.alert_wiring import RunningAlerts
from screening.alerts import AlertService, AlertWorker
from screening.config import parse_config
from screening.core.model import Action, CallOutcome
from screening.core.rules import Policy
from screening.events import EventBus
from screening.notify import AppriseNotifier
from screening.screen_flow import ChallengeMode, ScreenSettings
from screening.session import SessionSettings
from screening.web.call_messages import message_event, message_file
from tests.support.daemon import ModemDaemonRig
from tests.support.receivers import HttpReceiver, json_url
from tests.test_screen_modem import TALKER, line_s, presses

pytestmark = pytest.mark.timeout(120)


def test_a_message_left_on_the_modem_line_is_in_the_digest_and_servable(tmp_path: Path, http: HttpReceiver) -> None:
    recordings = tmp_path / "recordings"
    settings = SessionSettings(screen=ScreenSettings(challenge=ChallengeMode.ANY_KEY, decide_timeout_s=2.0,
                                                     challenge_timeout_s=3.0, message_cap_s=4.0, name_cap_s=3.0,
                                                     messages_dir=recordings / "messages"))  # fmt: skip
    bus = EventBus()
    config = parse_config({"alerts": {"web_base_url": "http://mamoru.local:8080"},
                           "relatives": [{"name": "Taro", "notify": [json_url(http.port)]}]}, source="test")
    with ModemDaemonRig(tmp_path, settings=settings, policy=Policy(unknown=Action.SCREEN), bus=bus) as rig:
        svc = AlertService(rig.store, config, AppriseNotifier(timeout_s=3), tz=ZoneInfo("Asia/Tokyo")).open()
        unsubscribe = RunningAlerts(svc, AlertWorker(svc), rig.store, "JP").subscribe(bus)
        try:
            rig.call(CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=TALKER, dtmf=presses("3"),
                                hang_up_after_s=line_s(40)), timeout=60)
            (row,) = rig.wait_calls(1, 20)
            assert row.end_reason == CallOutcome.MESSAGE
            event = message_event(rig.store.events_for(row.id))
            assert event is not None and message_file(recordings, event) is not None
            assert svc.run_pending(wait_s=5) == 0  # a message not judged fraud waits for the digest
            assert svc.digest(datetime.now(UTC)) is not None
            assert svc.run_pending(wait_s=5) == 1
        finally:
            unsubscribe()
            svc.close()
    (body,) = [json.dumps(b, ensure_ascii=False) for b in http.paths("/hook")]
    assert "伝言 1件" in body and "JST" in body and f"http://mamoru.local:8080/calls/{row.id}" in body, body
    assert round(float(event.detail["seconds"])) >= 1 and f"{round(float(event.detail['seconds']))}秒" in body
