"""The hub page end to end on a real broker and PostgreSQL: a relative reads and acts on the
household's calls (signed commands reach the unit), the police see health and figures only, and
a number reported by three households is approved and blocked by a unit after its feed check."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from screening.core.clock import utc_now
from screening.core.model import Action, CallOutcome, Category, Verdict
from screening.hub.store import HubRole, HubStore, add_account
from screening.hub.web import HubWebSettings, hub_app
from screening.hubwire import (
    CallSummary,
    Channel,
    CommandAction,
    CommandSigner,
    CommandVerifier,
    FraudReport,
    Health,
    LineHealth,
    Recording,
    ReplayGuard,
    Status,
    topic,
)
from screening.web.accounts import hash_password
from tests.support import hub_servers
from tests.support.hub_servers import FollowingUnit, HubRig

broker, pg_cluster, pg_dsn, hub_rig = hub_servers.broker, hub_servers.pg_cluster, hub_servers.pg_dsn, hub_servers.hub_rig

pytestmark = pytest.mark.timeout(300)
HOST = "hub.example.jp"
PASSWORD = "correct horse battery"
FRAUD_NUMBER = "+81345678901"


def _wait(what, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture()
def page(hub_rig: HubRig, tmp_path: Path) -> Iterator[tuple[HubRig, TestClient, CommandSigner, FollowingUnit]]:
    signer = CommandSigner.generate()
    hub = hub_rig.start_hub(signer)
    feed = FollowingUnit(tmp_path / "feed")
    with HubStore(hub_rig.dsn) as store:
        for i, unit in enumerate(["unit-001", "unit-002", "unit-003", "unit-004"], start=1):
            store.register_unit(unit, f"house-{i}", "setagaya" if i < 3 else "meguro")
        add_account(store, "hanako", hash_password(PASSWORD), HubRole.FAMILY, household="house-1")
        add_account(store, "officer", hash_password(PASSWORD), HubRole.POLICE)
        add_account(store, "sato", hash_password(PASSWORD), HubRole.REVIEWER)
    settings = HubWebSettings(hub_rig.dsn, frozenset({HOST}), feed.repo.path, secure_cookies=False)
    client = TestClient(hub_app(settings, hub.send), base_url=f"http://{HOST}")
    try:
        yield hub_rig, client, signer, feed
    finally:
        feed.close()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def _login(client: TestClient, name: str) -> None:
    client.cookies.clear()
    form = client.get("/login")
    assert form.status_code == 200 and "ログイン" in form.text
    answer = client.post("/login", data={"name": name, "password": PASSWORD, "csrf": _csrf(form.text)},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def _call(unit: str, call_id: int, number: str = "+81312345678", alerted: bool = True) -> CallSummary:
    return CallSummary(unit, call_id=call_id, started=utc_now(), number=number, category=Category.DOMESTIC,
                       action=Action.SCREEN, outcome=CallOutcome.CALLER_HUNG_UP, verdict=Verdict.FRAUD,
                       excerpt="還付金があるのでATMに行ってください", alerted=alerted)


def test_a_relative_reads_the_households_calls_and_the_unit_obeys(page) -> None:  # type: ignore[no-untyped-def]
    rig, client, signer, _ = page
    mother = rig.unit("unit-001")
    stranger = rig.unit("unit-003")
    mother.client.subscribe(topic("unit-001", Channel.COMMANDS), qos=1)
    mother.publish(_call("unit-001", 41))
    stranger.publish(_call("unit-003", 42, number="+81399998888"))
    with HubStore(rig.dsn) as store:
        _wait(lambda: store.count("calls") == 2)
    _login(client, "hanako")
    listing = client.get("/family")
    assert "+81312345678" in listing.text and "詐欺の疑い" in listing.text
    assert "+81399998888" not in listing.text  # another household's call
    link = re.search(r'href="(/family/call/unit-001/[0-9a-f]{32})"', listing.text)
    assert link
    detail = client.get(link.group(1))
    assert "還付金があるのでATMに行ってください" in detail.text
    other = client.get(link.group(1).replace("unit-001", "unit-003"))
    assert other.status_code == 404
    # Without the CSRF token nothing happens.
    assert client.post(link.group(1) + "/block", data={}).status_code == 403
    csrf = _csrf(detail.text)
    for action in ("acknowledge", "block"):
        assert client.post(f"{link.group(1)}/{action}", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    _wait(lambda: len(mother.received) == 2, 30)
    verifier = CommandVerifier("unit-001", [signer.public], ReplayGuard())
    commands = [verifier.verify(data) for data in mother.received]
    assert [c.action for c in commands] == [CommandAction.ACKNOWLEDGE, CommandAction.BLOCK]
    assert commands[1].number == "+81312345678" and commands[0].call_id == 41 and commands[0].by == "family:hanako"
    assert "確認しました" in client.get(link.group(1)).text and "family:hanako" in client.get(link.group(1)).text
    # The police role gets none of this.
    _login(client, "officer")
    assert client.get("/family").status_code == 403
    assert client.get(link.group(1)).status_code == 403


def test_the_police_see_health_and_figures_never_calls(page) -> None:  # type: ignore[no-untyped-def]
    rig, client, _, _ = page
    rig.unit("unit-001").publish(_call("unit-001", 1))
    rig.units[-1].publish(Status("unit-001", online=True))
    rig.unit("unit-004").publish(_call("unit-004", 2, alerted=False))
    rig.unit("unit-002").publish(Health("unit-002", line=LineHealth.FAULT, version="0.1.0", disk_free_mb=10,
                                        uptime_s=5, faults=("modem_missing",)))
    with HubStore(rig.dsn) as store:
        _wait(lambda: store.count("calls") == 2 and store.count("health") == 1
              and any(row["state"] == "online" for row in store.fleet()))
        states = {row["unit"]: row["state"] for row in store.fleet()}
    assert states == {"unit-001": "online", "unit-002": "faulty", "unit-003": "offline", "unit-004": "offline"}
    _login(client, "officer")
    fleet = client.get("/fleet")
    assert "稼働中 1 台・停止 2 台・故障 1 台" in fleet.text
    assert fleet.status_code == 200 and "setagaya" in fleet.text and "meguro" in fleet.text
    assert "+81312345678" not in fleet.text and "還付金" not in fleet.text
    # Results per area as server-side SVG: this month's call in setagaya, by category, and the share hung up.
    month = utc_now().strftime("%Y-%m")
    setagaya = re.search(r'<section class="area-charts" data-area="setagaya">(.*?)</section>', fleet.text, re.S)
    assert setagaya and "setagaya の結果" in setagaya.group(1) and setagaya.group(1).count("<svg") >= 2
    assert f'data-key="domestic" data-month="{month}" data-value="1"' in setagaya.group(1)
    assert f'data-key="hung_up" data-month="{month}" data-value="100"' in setagaya.group(1)
    assert 'data-area="meguro"' in fleet.text and "<script" not in fleet.text
    csv = client.get("/fleet.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert "area,setagaya,domestic,1,1,1,1,0" in csv.text and "+8131" not in csv.text
    assert client.get("/review").status_code == 403


def test_the_page_refuses_strange_hosts_and_strangers(page) -> None:  # type: ignore[no-untyped-def]
    _, client, _, _ = page
    assert client.get("/login", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/family", follow_redirects=False).headers["location"] == "/login"
    for _ in range(5):
        form = client.get("/login")
        wrong = client.post("/login", data={"name": "hanako", "password": "wrong", "csrf": _csrf(form.text)},
                            follow_redirects=False)
        assert wrong.headers["location"] == "/login?failed=1"
    form = client.get("/login")
    # Five failures: even the right password is refused for a while.
    throttled = client.post("/login", data={"name": "hanako", "password": PASSWORD, "csrf": _csrf(form.text)})
    assert throttled.status_code == 429
    # A login form posted from another site (no matching CSRF token) is refused.
    assert client.post("/login", data={"name": "sato", "password": PASSWORD, "csrf": "x"}).status_code == 403


def test_three_households_reports_are_approved_and_a_unit_blocks_the_number(page) -> None:  # type: ignore[no-untyped-def]
    rig, client, _, feed = page
    feed.follow()  # a unit following the hub's feed
    assert not feed.blocked(FRAUD_NUMBER)
    for unit in ("unit-001", "unit-002"):
        rig.unit(unit).publish(FraudReport(unit, number=FRAUD_NUMBER, call_id=1, heard=utc_now(), phrases=("未納料金",)))
    with HubStore(rig.dsn) as store:
        _wait(lambda: store.count("reports") == 2)
    _login(client, "sato")
    queue = client.get("/review")
    assert FRAUD_NUMBER not in queue.text  # two households are not enough
    refused = client.post("/review/approved", data={"number": FRAUD_NUMBER, "csrf": _csrf(queue.text)})
    assert refused.status_code == 409
    rig.unit("unit-003").publish(FraudReport("unit-003", number=FRAUD_NUMBER, call_id=5, heard=utc_now(),
                                             phrases=("未納料金", "裁判")))
    with HubStore(rig.dsn) as store:
        _wait(lambda: store.count("reports") == 3)
    queue = client.get("/review")
    assert FRAUD_NUMBER in queue.text and "未納料金" in queue.text
    done = client.post("/review/approved", data={"number": FRAUD_NUMBER, "csrf": _csrf(queue.text)},
                       follow_redirects=False)
    assert done.status_code == 303
    feed.sync()  # the issuer's web server serves the new metadata
    feed.update()
    assert feed.blocked(FRAUD_NUMBER)
    assert FRAUD_NUMBER not in client.get("/review").text


def test_recordings_are_kept_only_when_the_family_asked(page) -> None:  # type: ignore[no-untyped-def]
    rig, client, signer, _ = page
    unit = rig.unit("unit-001")
    unit.client.subscribe(topic("unit-001", Channel.COMMANDS), qos=1)
    unit.publish(_call("unit-001", 77))
    wav = b"RIFF" + bytes(2000)
    # Pushed unasked: refused by the hub (no request_recording command for it).
    unit.publish(Recording("unit-001", call_id=77, command="0" * 32, wav=wav))
    with HubStore(rig.dsn) as store:
        _wait(lambda: store.count("calls") == 1)
    _login(client, "hanako")
    link = re.search(r'href="(/family/call/unit-001/[0-9a-f]{32})"', client.get("/family").text)
    assert link and client.get(link.group(1) + "/recording.wav").status_code == 404
    csrf = _csrf(client.get(link.group(1)).text)
    client.post(link.group(1) + "/recording", data={"csrf": csrf})
    _wait(lambda: len(unit.received) == 1, 30)
    request = CommandVerifier("unit-001", [signer.public], ReplayGuard()).verify(unit.received[0])
    assert request.action is CommandAction.REQUEST_RECORDING and request.call_id == 77
    unit.publish(Recording("unit-001", call_id=77, command=request.id, wav=wav))
    with HubStore(rig.dsn) as store:
        _wait(lambda: store.count("recordings") == 1)
    audio = client.get(link.group(1) + "/recording.wav")
    assert audio.status_code == 200 and audio.content == wav and audio.headers["content-type"] == "audio/wav"


def test_hub_cli_registers_units_and_accounts(pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from screening.cli import main
    from screening.hub.store import find_account

    (tmp_path / "pw").write_text("secret\n")
    config = tmp_path / "hub.toml"
    config.write_text(f'[broker]\nca_file = "{tmp_path / "ca.pem"}"\npassword_file = "{tmp_path / "pw"}"\n'
                      f'[database]\ndsn = "{pg_dsn}"\n[web]\nallowed_hosts = ["{HOST}"]\n')
    assert main(["hub", "unit", "--config", str(config), "unit-042", "--household", "house-42", "--area", "akita"]) == 0
    assert main(["hub", "unit", "--config", str(config), "Bad/Unit", "--household", "x"]) != 0
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["hub", "account", "--config", str(config), "taro", "--role", "family", "--household", "house-42"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["hub", "account", "--config", str(config), "nobody", "--role", "family"]) != 0  # no household
    with HubStore(pg_dsn) as store:
        account = find_account(store, "taro")
        assert account is not None and account.household == "house-42" and account.password_hash.startswith("$argon2")
        assert store.units_of("house-42") == ["unit-042"]
    config.write_text('[broker]\nport = "x"\n')
    assert main(["hub", "unit", "--config", str(config), "unit-042", "--household", "h"]) != 0
    err = capsys.readouterr().err
    assert "[broker] port: expected int" in err and "[database] dsn: missing" in err


def test_a_flood_of_login_page_visits_does_not_grow_sessions_without_bound() -> None:
    from screening.hub.store import HubAccount
    from screening.hub.web import MAX_SESSIONS, _Sessions

    sessions = _Sessions()
    logged_in = sessions.new(HubAccount("hanako", "x", HubRole.FAMILY, "house-1", None), 1)
    for _ in range(MAX_SESSIONS * 2):
        sessions.new(None, 0.5)
    assert len(sessions.by_token) <= MAX_SESSIONS
    assert sessions.get(logged_in.token) is logged_in  # a flood never logs a relative out
