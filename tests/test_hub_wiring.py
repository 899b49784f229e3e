"""The hub link in the rest of the unit: alert links to the hub's page, ``mamoru doctor``, and a
broken ``[hub]`` that must never stop screening.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from blocklist.store import Store
from screening.core.clock import utc_now
from screening.core.model import CallerID, Verdict
from screening.events import EventBus
from screening.hub_client.queue import HubQueue
from screening.hubwire import (
    Channel,
    CommandSigner,
    public_key_text,
)
from tests.support import hub_unit
from tests.support.hub_unit import (
    SCAM,
    UNIT,
)
from voice.detector import Detection, Flag
from voice.pipeline import FraudEvent

broker, signer, store = hub_unit.broker, hub_unit.signer, hub_unit.store  # fixtures


# ---- family anywhere: alerts link to the hub's page ----------------------------------------


def test_alerts_link_to_the_hub_page_when_it_has_one(store: Store, signer: CommandSigner) -> None:
    from screening.alerts import AlertService
    from screening.config.loader import parse_config
    from screening.notify import AppriseNotifier

    relatives = [{"name": "Taro", "notify": ["json://127.0.0.1:9/hook"]}]
    hub = {"url": "mqtts://hub.example.jp:8883", "unit_id": UNIT, "command_key": public_key_text(signer.public)}
    detection = Detection(Verdict.FRAUD, 4.5, (Flag("還付金", "refund", 3.0, "還付金"),))
    calls = [store.begin_call("sim", CallerID(raw_number="0355550101", number_e164=SCAM), utc_now()) for _ in range(2)]
    links = []
    for call_id, extra in zip(calls, ({}, {"public_url": "https://hub.example.jp/"}), strict=True):
        config = parse_config({"alerts": {"web_base_url": "http://mamoru.local:8080"}, "relatives": relatives,
                               "hub": {**hub, **extra}}, source="test")  # fmt: skip
        svc = AlertService(store, config, AppriseNotifier(timeout_s=1), tz=None, household="母").open()
        try:
            alert = svc.on_fraud(FraudEvent(call_id, detection, 1.0, utc_now(), "還付金"), "03-5555-0101")
            assert alert is not None
            links.append(alert.payload["url"])
        finally:
            svc.close()
    # The hub's page knows a call by its summary's message id, which the unit makes the call's uid.
    assert links == [f"http://mamoru.local:8080/calls/{calls[0]}",
                     f"https://hub.example.jp/family/call/{UNIT}/{store.get_call(calls[1]).call_uid}"]


# ---- mamoru doctor ------------------------------------------------------------------------------


def test_doctor_says_what_is_wrong_with_the_hub_link_in_japanese(tmp_path: Path, signer: CommandSigner) -> None:
    from screening import doctor
    from screening.config.loader import parse_config
    from screening.core.model import Language
    from screening.doctor_text import format_report, untranslated
    from screening.hub_client.queue import queue_path_for

    db = tmp_path / "mamoru.db"
    password = tmp_path / "hub-password"
    hub = {"url": "mqtts://hub.example.jp:8883", "unit_id": UNIT, "command_key": public_key_text(signer.public)}

    def check(**extra: object) -> doctor.Check:
        cfg = parse_config({"hub": {**hub, **extra}}, source="test")
        return doctor.check_hub(cfg, db, utc_now())

    incomplete = doctor.check_hub(parse_config({"hub": {"url": hub["url"]}}, source="test"), db, utc_now())
    unreadable = check(credentials_file=str(password))
    password.write_text("unit-pw\n")
    good = check(credentials_file=str(password))
    with HubQueue(queue_path_for(db), limit=100) as queue:
        queue.put(Channel.HEALTH, b"{}", utc_now() - timedelta(hours=2))
    waiting = check(credentials_file=str(password))
    assert (incomplete.severity, unreadable.severity, good.severity, waiting.severity) == (
        "problem", "problem", "ok", "warning")
    assert "credentials_file, command_key" in incomplete.message
    assert "1 messages for the hub have waited" in waiting.message
    findings = [incomplete, unreadable, good, waiting]
    assert not [t for f in findings for t in (f.message, f.fix) if untranslated(t)]
    assert "見守りセンター" in format_report(findings, Language.JA)
    assert "hub" not in [c.name for c in doctor.run_checks(parse_config({}, source="test"), db_path=db)]


def test_a_broken_hub_setting_leaves_screening_running(tmp_path: Path, signer: CommandSigner, store: Store,
                                                        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """A missing password file (bundle not applied yet) or a half-filled [hub]: logged, no hub, no crash."""
    from screening.config.loader import parse_config
    from screening.hub_wiring import run_hub

    key = public_key_text(signer.public)
    for hub in ({"url": "mqtts://hub.example.jp", "unit_id": UNIT, "command_key": key,
                 "credentials_file": str(tmp_path / "not-there")},
                {"url": "mqtts://hub.example.jp", "unit_id": UNIT},
                {"url": "mqtts://hub.example.jp", "unit_id": UNIT, "command_key": key,
                 "credentials_file": str(store.path), "ca_file": str(tmp_path / "no-ca.pem")}):  # fmt: skip
        with run_hub(parse_config({"hub": hub}, source="test"), store, store.path, None, EventBus()) as client:
            assert client is None
    errors = [r.getMessage() for r in caplog.records if r.name == "screening.hub_wiring" and r.levelname == "ERROR"]
    assert len(errors) == 3 and "not-there" in errors[0] and "command_key" in errors[1], errors
