"""External Number Display adapter: the frame parser (pure), the driver against the fake adapter on a
real pty, and a modem line taking its caller ID from the adapter (virtual modem + fake adapter)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocklist.store import Store
from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, RingCadence
from firmware.modem_line import ModemLine
from firmware.nd_adapter import NdAdapter
from firmware.nd_line import NdAdapterLine
from firmware.scenarios import CallScript
from firmware.virtual_modem import VirtualModem
from firmware.virtual_nd_adapter import VirtualNdAdapter
from screening.config import Config, ConfigError, load_config
from screening.core.callerid import CidField
from screening.core.line import CallOffered, LineFault, LineRestored, Ring, RingingStopped
from screening.core.model import Action, CallerID, CallState, ListEntry, ListKind, MatchKind, Reason
from screening.core.nd_adapter_frame import (
    DEFAULT_FORMAT,
    ETX,
    STX,
    FrameError,
    FrameReader,
    block_check,
    build_frame,
    parse_frame,
)
from screening.core.rules import Policy
from screening.daemon import Daemon
from screening.doctor import check_nd_adapter, run_checks
from screening.session import CallSettings
from tests.support.daemon import DaemonProcess, daemon_env, finished_calls
from tests.support.examples import examples
from voice.announcements import ToneAnnouncements

pytestmark = pytest.mark.timeout(60)

FMT = DEFAULT_FORMAT


def frame(nmbr: str, date: str = "1205", time_: str = "1432") -> bytes:
    return build_frame(FMT, {CidField.DATE: date, CidField.TIME: time_, CidField.NMBR: nmbr})


# ---- the frame format (pure) --------------------------------------------------------


def test_frame_bytes_are_exactly_the_documented_layout() -> None:
    body = b"1205,1432,0312345678\x03"
    assert frame("0312345678") == b"\x02" + body + bytes([block_check(body)])
    assert block_check(body) < 0x80  # 7 data bits on the wire


def test_number_frame_gives_the_callerid_the_rules_take() -> None:
    caller = parse_frame(frame("0312345678"), FMT, "JP")
    assert (caller.raw_number, caller.number_e164, caller.reason) == ("0312345678", "+81312345678", None)
    assert (caller.date, caller.time) == ("1205", "1432")
    intl = parse_frame(frame("010442079460000"), FMT, "JP")
    assert intl.number_e164 == "+442079460000"


@pytest.mark.parametrize("letter,reason", [("P", Reason.WITHHELD), ("O", Reason.OUT_OF_AREA),
                                           ("C", Reason.PAYPHONE), ("S", Reason.SERVICE_CONFLICT)])
def test_each_reason_letter_maps_to_the_reason_enum(letter: str, reason: Reason) -> None:
    caller = parse_frame(frame(letter), FMT, "JP")
    assert (caller.reason, caller.raw_number, caller.number_e164) == (reason, None, None)


@pytest.mark.parametrize("bad", [
    frame("0312345678")[:-1] + b"\x00",  # wrong block check
    b"\x02" + b"1205,1432,0312345678" + b"\x03",  # no block check at all
    frame("X"),  # neither digits nor a reason letter
    frame("PP"),
    frame(""),
    frame("1" * 21),
    frame("0312345678", date="12O5"),
    frame("0312345678", date="1399"),  # month 13
    frame("0312345678", time_="2561"),
    build_frame(FMT, {CidField.DATE: "1205,1", CidField.TIME: "1432", CidField.NMBR: "0312345678"}),
    b"\x02" + b"12\x8005,1432,0312345678\x03" + bytes([block_check(b"12\x8005,1432,0312345678\x03")]),
])
def test_broken_frames_are_refused(bad: bytes) -> None:
    with pytest.raises(FrameError):
        parse_frame(bad, FMT, "JP")


def test_reader_skips_noise_and_reports_broken_frames() -> None:
    reader = FrameReader(FMT)
    good = frame("0312345678")
    out = reader.feed(b"\xff\x00noise\r\n" + good[:5], now=0.0) + reader.feed(good[5:] + b"zz", now=0.01)
    assert out == [good]
    # A new STX before ETX: the half frame is broken, the new one is read.
    out = reader.feed(b"\x021205,14" + good, now=1.0)
    assert isinstance(out[0], FrameError) and out[1] == good
    # STX and then nothing: broken once the frame timeout passes.
    assert reader.feed(b"\x021205", now=2.0) == []
    assert reader.expire(2.0 + FMT.frame_timeout_s / 2) == []
    assert isinstance(reader.expire(2.0 + FMT.frame_timeout_s + 0.01)[0], FrameError)
    # No ETX within the longest frame.
    out = reader.feed(b"\x02" + b"1" * (FMT.max_frame_len + 5), now=3.0)
    assert len(out) == 1 and isinstance(out[0], FrameError)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_no_byte_stream_makes_the_reader_or_parser_raise_anything_but_frame_error(chunks: list[bytes]) -> None:
    reader = FrameReader(FMT)
    for n, chunk in enumerate(chunks):
        for item in reader.feed(chunk, now=n * 0.1):
            if isinstance(item, bytes):
                assert item[0] == STX and ETX in item
                try:
                    parse_frame(item, FMT, "JP")
                except FrameError:
                    pass


# ---- the driver against the fake adapter on a pty ------------------------------------------


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[VirtualNdAdapter]:
    with VirtualNdAdapter(link_dir=tmp_path) as adapter:
        yield adapter


@pytest.fixture
def driver(fake: VirtualNdAdapter) -> Iterator[NdAdapter]:
    nd = NdAdapter(fake.device_path, home_region="JP", backoff_s=(0.1,))
    nd.open()
    try:
        yield nd
    finally:
        nd.close()


def next_of(source, kind: type, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = source.next_event(0.1)
        if isinstance(event, kind):
            return event
    raise AssertionError(f"no {kind.__name__} within {timeout} s")


def test_a_number_is_acknowledged_and_offered(fake: VirtualNdAdapter, driver: NdAdapter) -> None:
    time.sleep(0.2)  # the driver has the port open
    result = fake.send_caller("0312345678")
    assert (result.acked, result.sends, result.naks) == (True, 1, 0)
    event = next_of(driver, CallOffered)
    assert event.caller.number_e164 == "+81312345678"


@pytest.mark.parametrize("reason", list(Reason))
def test_each_reason_arrives_as_that_reason(fake: VirtualNdAdapter, driver: NdAdapter, reason: Reason) -> None:
    time.sleep(0.2)
    assert fake.send_caller(reason=reason).acked
    assert next_of(driver, CallOffered).caller.reason is reason


def test_garbage_on_the_serial_line_is_survived(fake: VirtualNdAdapter, driver: NdAdapter) -> None:
    time.sleep(0.2)
    fake.send_raw(b"\x00\xff\xfe garbage\r\n" + bytes(range(256)) + b"\x02half a frame")
    time.sleep(FMT.frame_timeout_s + 0.3)  # the half frame times out (NAK)
    assert fake.send_caller("0398765432").acked
    assert next_of(driver, CallOffered).caller.raw_number == "0398765432"
    assert driver.frames_naked >= 1


def test_a_corrupted_frame_is_naked_and_the_resend_taken_once(fake: VirtualNdAdapter, driver: NdAdapter) -> None:
    time.sleep(0.2)
    result = fake.send_caller("0662223333", corrupt_sends=2)
    assert (result.acked, result.sends, result.naks) == (True, 3, 2)
    assert next_of(driver, CallOffered).caller.raw_number == "0662223333"
    assert driver.next_event(0.5) is None  # one caller, not three


def test_a_resend_after_a_lost_ack_is_acked_again(fake: VirtualNdAdapter, driver: NdAdapter) -> None:
    time.sleep(0.2)
    good = frame("0662223333")
    fake.send_raw(good)
    fake.send_raw(good)  # the adapter did not hear our ACK and sent it again
    assert next_of(driver, CallOffered).caller.raw_number == "0662223333"
    assert next_of(driver, CallOffered).caller.raw_number == "0662223333"  # the line decides (below)
    assert _wait(lambda: fake.received.count(b"\x06") == 2, 2.0), fake.received


def test_adapter_missing_at_start_is_a_fault_then_restored_when_plugged_in(tmp_path: Path) -> None:
    fake = VirtualNdAdapter(link_dir=tmp_path)
    nd = NdAdapter(fake.device_path, backoff_s=(0.1,))
    nd.open()
    try:
        fault = next_of(nd, LineFault)
        assert "not available" in fault.message and nd.faulted
        assert nd.next_event(0.5) is None  # one fault per outage, not one per retry
        fake.start()
        next_of(nd, LineRestored)
        time.sleep(0.2)
        assert fake.send_caller(reason=Reason.PAYPHONE).acked
        assert next_of(nd, CallOffered).caller.reason is Reason.PAYPHONE
        # Unplugged mid-run, then back.
        fake.vanish()
        assert "lost" in next_of(nd, LineFault).message
        fake.reappear()
        next_of(nd, LineRestored)
        time.sleep(0.2)
        assert fake.send_caller("0312345678").acked
        assert next_of(nd, CallOffered).caller.raw_number == "0312345678"
    finally:
        nd.close()
        fake.stop()


# ---- a modem line with the adapter's caller ID, screened by the daemon ------------------------

SCALE = 0.1


class NdRig:
    def __init__(self, tmp: Path) -> None:
        self.modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, SCALE)
        self.fake = VirtualNdAdapter(link_dir=tmp)
        self.store = Store(tmp / "calls.db", retry_interval=0.05, busy_timeout=0.2)
        self.stop = threading.Event()

    def __enter__(self) -> NdRig:
        self.modem.start()
        self.fake.start()
        self.store.open()
        self.store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81398765432"))
        gap = 1.5 * CADENCE_PERIOD_S[RingCadence.JAPAN] * SCALE
        modem = ModemLine(str(self.modem.device_path), "auto", "JP", RingCadence.JAPAN, ring_gap_s=gap)
        self.line = NdAdapterLine(modem, NdAdapter(self.fake.device_path, backoff_s=(0.1,)), no_cid_ring=2,
                                  ring_gap_s=gap)
        self.line.open()
        self.daemon = Daemon(self.line, self.store, CallSettings(Policy(), ToneAnnouncements(), 30.0))
        self.thread = threading.Thread(target=self.daemon.run, args=(self.stop,), daemon=True)
        self.thread.start()
        time.sleep(0.3)
        return self

    def call(self, script: CallScript, timeout: float = 20.0):
        return self.modem.wait_for_call_end(self.modem.place_call(script), timeout=timeout)

    def rows(self, n: int, timeout: float = 10.0) -> list:
        return finished_calls(self.store, n, timeout)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.line.close()
        self.fake.stop()
        self.modem.stop()
        self.store.close()


NO_CID = CallScript(raw_cid_lines=(), hang_up_after_s=2)  # the modem itself decodes nothing


def test_the_decision_comes_from_the_adapter_caller_paired_with_the_ring(tmp_path: Path) -> None:
    with NdRig(tmp_path) as rig:
        assert rig.fake.send_caller("0398765432").acked  # blocklisted
        rec = rig.call(NO_CID)
        assert rec.rings <= 1
        assert rig.fake.send_caller(reason=Reason.WITHHELD).acked
        rig.call(NO_CID)
        rows = rig.rows(2)
        assert [(r.action, r.rule) for r in rows] == [(Action.BLOCK, "blocklist:local"),
                                                     (Action.REQUEST_NUMBER, "withheld")]


def test_adapter_silent_means_no_caller_id_warned_on_ring_two_never_dropped(tmp_path: Path) -> None:
    with NdRig(tmp_path) as rig:
        rec = rig.call(NO_CID)
        assert rec.rings == 2
        assert [(r.action, r.rule) for r in rig.rows(1)] == [(Action.WARN, "no_caller_id")]


def test_a_stray_adapter_frame_with_no_ring_never_takes_the_line_off_hook(tmp_path: Path) -> None:
    with NdRig(tmp_path) as rig:
        assert rig.fake.send_caller("0398765432").acked
        time.sleep(1.0)
        assert rig.store.recent_calls(limit=10) == [] and not rig.modem.off_hook
        # Long after (past the pairing window) a call without caller ID is not given that stale number.
        rig.line.pair_window_s = 0.5
        rig.call(NO_CID)
        assert [(r.action, r.rule) for r in rig.rows(1)] == [(Action.WARN, "no_caller_id")]


def kinds(line: NdAdapterLine) -> list[type]:
    out = []
    while (event := line.next_event(0)) is not None:
        out.append(type(event))
    return out


def offline_line(tmp_path: Path) -> NdAdapterLine:
    """The pairing rules on hand-made events (timing real devices this finely would be flaky)."""
    return NdAdapterLine(ModemLine(str(tmp_path / "none"), "auto", "JP", RingCadence.JAPAN),
                         NdAdapter(tmp_path / "none"), no_cid_ring=2, ring_gap_s=4.5)


def caller_at(at: float, number: str = "0312345678") -> CallOffered:
    return CallOffered(CallerID(raw_number=number), at)


def test_pairing_takes_a_late_adapter_caller_on_the_first_ring_but_not_after_the_deadline(tmp_path: Path) -> None:
    line = offline_line(tmp_path)
    line.on_modem_event(Ring(1, 100.0))
    line.on_adapter_event(caller_at(100.5))  # after ring 1: offered at once
    assert kinds(line) == [Ring, CallOffered]
    line.on_modem_event(Ring(1, 200.0))  # long after: a new call, and the last one stopped ringing
    line.on_modem_event(Ring(2, 203.0))
    line.on_adapter_event(caller_at(203.5))  # the daemon already screened this call as no caller ID
    assert kinds(line) == [RingingStopped, Ring, Ring]


def test_a_new_caller_while_the_last_call_still_rings_is_a_new_call(tmp_path: Path) -> None:
    """An allowed call rings; its caller gives up and calls straight back: one ND message per call."""
    line = offline_line(tmp_path)
    line.on_adapter_event(caller_at(99.0))
    line.on_modem_event(Ring(1, 100.0))
    line.on_modem_event(Ring(2, 103.0))
    line.on_adapter_event(caller_at(104.0))  # the modem still counts the old ringing; we know better
    line.on_modem_event(Ring(3, 105.0))
    events = []
    while (event := line.next_event(0)) is not None:
        events.append(event)
    assert [type(e) for e in events] == [CallOffered, Ring, Ring, RingingStopped, CallOffered, Ring]
    assert [e.count for e in events if isinstance(e, Ring)] == [1, 2, 1]  # counted per call
    line.tick(105.0 + 4.0)
    assert kinds(line) == []
    line.tick(105.0 + 4.6)  # neither a ring nor a caller for the ring gap: it stopped ringing
    assert kinds(line) == [RingingStopped]


def test_a_resend_is_the_same_call(tmp_path: Path) -> None:
    """(The same caller again once the call was answered is a new call: the contract suite's modem_nd rig.)"""
    line = offline_line(tmp_path)
    line.on_adapter_event(caller_at(99.0))
    line.on_adapter_event(caller_at(99.5))  # resent: our ACK was lost
    line.on_modem_event(Ring(1, 100.0))
    line.on_adapter_event(caller_at(100.2))  # resent once more, after the ring: still the same call
    assert kinds(line) == [CallOffered, Ring]
    line.tick(110.0)
    line.on_adapter_event(caller_at(111.0))  # the same caller long after: a new call
    line.on_modem_event(Ring(1, 112.0))
    assert kinds(line) == [RingingStopped, CallOffered, Ring]


def test_the_modems_own_ringing_stopped_and_caller_id_are_not_passed_on(tmp_path: Path) -> None:
    line = offline_line(tmp_path)
    line.on_modem_event(RingingStopped(10.0))
    line.on_modem_event(CallOffered(CallerID(raw_number="0398765432"), 11.0))  # the adapter is the source
    assert kinds(line) == []


# ---- the setting -------------------------------------------------------------------------


def test_nd_adapter_setting_is_validated(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[line]\nuri = "modem:///dev/ttyACM0"\nnd_adapter = "/dev/ttyUSB0"\n', encoding="utf-8")
    assert load_config(good, env={}).line.nd_adapter == Path("/dev/ttyUSB0")
    bad = tmp_path / "bad.toml"
    bad.write_text('[line]\nuri = "modem:///dev/ttyACM0"\nnd_adapter = "ttyUSB0"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line\.nd_adapter.*absolute device path"):
        load_config(bad, env={})
    sip = tmp_path / "sip.toml"
    sip.write_text('[line]\nuri = "sip://127.0.0.1:5062"\nnd_adapter = "/dev/ttyUSB0"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line\.nd_adapter.*modem line only"):
        load_config(sip, env={})
    assert load_config(None, env={}, system_path=tmp_path / "none.toml").line.nd_adapter is None


# ---- `mamoru run` on the virtual modem with the fake adapter -------------------------------------

ROOT = Path(__file__).parent.parent


@pytest.mark.slow  # mamoru run as a subprocess with both fakes
def test_mamoru_run_takes_caller_id_from_the_adapter(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with Store(db) as store:
        store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81398765432"))
    env = daemon_env(tmp_path)
    with VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, 0.25, link_dir=tmp_path) as modem, \
            VirtualNdAdapter(link_dir=tmp_path) as fake:
        config = tmp_path / "mamoru.toml"
        config.write_text(f'[line]\nuri = "modem://{modem.device_path}"\nnd_adapter = "{fake.device_path}"\n'
                          f'[store]\ndb = "{db}"\n[recording]\nenabled = false\n[web]\nenabled = false\n'
                          '[voice]\ntranscribe = false\n', encoding="utf-8")
        run = DaemonProcess(["run"], env, config=config).start()
        try:
            # Like the real adapter, the fake resends until the host answers: mamoru is starting up.
            assert _wait(lambda: fake.send_caller("0398765432").acked, 20), "mamoru never acknowledged the adapter"
            first = modem.wait_for_call_end(modem.place_call(NO_CID), timeout=30)
            assert first.rings <= 1
            assert fake.send_caller(reason=Reason.WITHHELD).acked
            modem.wait_for_call_end(modem.place_call(NO_CID), timeout=30)
            modem.wait_for_call_end(modem.place_call(NO_CID), timeout=30)  # the adapter says nothing
            assert _wait(lambda: _finished(db) >= 3, 20)
        finally:
            code = run.stop(timeout=15)
        assert code == 0, run.output()
    with Store(db) as store:
        rows = list(reversed(store.recent_calls(limit=10)))
    assert [(r.action, r.rule) for r in rows] == [(Action.BLOCK, "blocklist:local"),
                                                 (Action.REQUEST_NUMBER, "withheld"),
                                                 (Action.WARN, "no_caller_id")]


def _finished(db: Path) -> int:
    with Store(db) as store:
        return sum(r.state is CallState.COMPLETED for r in store.recent_calls(limit=10))


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


# ---- mamoru doctor ---------------------------------------------------------------------------------


def test_doctor_says_when_the_caller_id_adapter_is_unplugged(tmp_path: Path) -> None:
    fake = VirtualNdAdapter(link_dir=tmp_path)
    cfg = Config.defaults()
    cfg = replace(cfg, line=replace(cfg.line, uri="modem:///dev/null-modem", nd_adapter=fake.device_path))
    missing = check_nd_adapter(cfg)
    assert missing.severity == "problem" and "not plugged in" in missing.message
    with fake:
        assert check_nd_adapter(cfg).severity == "ok"
    without = replace(cfg, line=replace(cfg.line, nd_adapter=None))
    assert "nd_adapter" not in {c.name for c in run_checks(without, db_path=tmp_path / "x.db", modem_timeout_s=0.2)}
    assert "nd_adapter" in {c.name for c in run_checks(cfg, db_path=tmp_path / "x.db", modem_timeout_s=0.2)}
