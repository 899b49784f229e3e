"""Japanese Number Display on the modem path: the virtual modem's jp_nd line on a real pty, pyserial.

The virtual modem plays the exchange (CAR, FSK after the primary response, then normal
ringing) and prints no formatted caller ID, so every caller ID here came from the FSK audio.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, USR_5637, RingCadence
from firmware.modem_line import ModemLine
from firmware.number_display import NdOutcome, NdTiming
from firmware.scenarios import CallScript, load_scenario
from firmware.v23_fsk import FskTx
from firmware.virtual_modem import VirtualModem
from firmware.virtual_nd import NdExchange, NdLineOutcome
from firmware.vmodem.records import CallOutcome, CallRecord
from screening.core.line import CallOffered, LineEvent, Ring, RingingStopped
from screening.core.model import Reason
from screening.core.nd_frame import encode_caller

pytestmark = pytest.mark.timeout(60)

SCALE = 0.2  # line seconds -> real seconds
WAIT_S = 15.0


def open_line(modem: VirtualModem, cadence: RingCadence = RingCadence.JAPAN_ND,
              timing: NdTiming = NdTiming()) -> ModemLine:
    line = ModemLine(str(modem.device_path), cadence=cadence, ring_gap_s=1.5 * CADENCE_PERIOD_S[cadence] * SCALE,
                     number_display=timing.scaled(SCALE), health_interval_s=None)
    line.open()
    return line


@pytest.fixture
def modem() -> Iterator[VirtualModem]:
    with VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN_ND, SCALE) as vm:
        yield vm


@pytest.fixture
def line(modem: VirtualModem) -> Iterator[ModemLine]:
    line = open_line(modem)
    yield line
    line.close()


def events_until(line: ModemLine, done: Callable[[list[LineEvent]], bool], timeout: float = WAIT_S) -> list[LineEvent]:
    events: list[LineEvent] = []
    deadline = time.monotonic() + timeout
    while not done(events) and time.monotonic() < deadline:
        event = line.next_event(0.1)
        if event is not None:
            events.append(event)
    return events


def normal_rings(n: int) -> Callable[[list[LineEvent]], bool]:
    return lambda events: sum(isinstance(e, Ring) for e in events) >= n


def offered(events: list[LineEvent]) -> list[CallOffered]:
    return [e for e in events if isinstance(e, CallOffered)]


def run_call(modem: VirtualModem, line: ModemLine, script: CallScript) -> tuple[CallRecord, list[LineEvent]]:
    record = modem.place_call(script)
    # CAR bursts are never reported as rings: these are the two normal rings.
    events = events_until(line, normal_rings(2))
    modem.wait_for_call_end(record, WAIT_S)
    return record, events


def assert_decided_before_first_normal_ring(record: CallRecord, events: list[LineEvent]) -> None:
    assert record.nd_outcome is NdLineOutcome.SENT
    assert record.cid_bytes == b""  # the modem printed no caller ID: it all came from the audio
    assert record.first_ring_at is not None and record.nd_on_hook_at is not None
    offer = offered(events)[0]
    assert offer.at < record.first_ring_at
    rings_after_offer = [e for e in events if isinstance(e, Ring) and e.at > offer.at]
    assert [r.count for r in rings_after_offer][:2] == [1, 2]


def test_number_is_decoded_from_fsk_before_the_first_normal_ring(modem: VirtualModem, line: ModemLine) -> None:
    record, events = run_call(modem, line, CallScript(nmbr="0312345678", max_rings=2))
    assert [c.caller.number_e164 for c in offered(events)] == ["+81312345678"]
    assert_decided_before_first_normal_ring(record, events)
    assert record.outcome is CallOutcome.GAVE_UP  # nobody answered the normal ringing: we only took CAR
    assert record.answered_at is None
    commands = [c for _, c in record.commands]
    assert commands == ["AT+VLS=1", "AT+VRX", "ATH0"]  # off-hook, receive, on-hook: nothing else
    # The receive ended once the frame checked out (0.3 s delay + ~0.35 s frame), well before the
    # 1.5 s window; counted in line audio, so a loaded machine cannot blur it.
    attempt = line.number_display.history()[-1]  # type: ignore[union-attr]
    assert attempt.outcome is NdOutcome.CALLER_ID and 0.5 < attempt.audio_s < 1.2
    assert not any(b"NMBR" in entry[2] for entry in line.transcript())


@pytest.mark.parametrize("reason", list(Reason))
def test_each_reason(modem: VirtualModem, line: ModemLine, reason: Reason) -> None:
    record, events = run_call(modem, line, CallScript(nmbr=reason.value, max_rings=2))
    callers = [c.caller for c in offered(events)]
    assert [(c.reason, c.raw_number) for c in callers] == [(reason, None)]
    assert_decided_before_first_normal_ring(record, events)


def test_dle_inside_the_data(modem: VirtualModem, line: ModemLine) -> None:
    number = "0120123456789012"  # 16 digits: the length octet is DLE and is sent twice
    record, events = run_call(modem, line, CallScript(nmbr=number, max_rings=2))
    assert b"\x90\x90" in record.nd_frame
    assert [c.caller.raw_number for c in offered(events)] == [number]


def test_noisy_quiet_offset_line(line: ModemLine) -> None:
    exchange = NdExchange(snr_db=15.0, tx=FskTx(amplitude=0.05, baud_error=-0.015, frequency_offset_hz=20.0), seed=3)
    with VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN_ND, SCALE, number_display=exchange) as modem:
        noisy_line = open_line(modem)
        try:
            record, events = run_call(modem, noisy_line, CallScript(nmbr="0662223333", max_rings=2))
        finally:
            noisy_line.close()
    assert [c.caller.number_e164 for c in offered(events)] == ["+81662223333"]


def test_corrupted_crc_is_logged_and_the_call_rings_on_without_caller_id(
    modem: VirtualModem, line: ModemLine, caplog: pytest.LogCaptureFixture
) -> None:
    frame = bytearray(encode_caller("0312345678"))
    frame[-1] ^= 0x40
    caplog.set_level(logging.WARNING, logger="firmware.number_display")
    record, events = run_call(modem, line, CallScript(nmbr="0312345678", nd_frame=bytes(frame), max_rings=3))
    assert offered(events) == []  # no caller ID: the call loop screens it by ring count
    assert record.outcome is CallOutcome.GAVE_UP and record.rings == 3  # never dropped: it rang on
    attempt = line.number_display.history()[-1]  # type: ignore[union-attr]
    assert attempt.outcome is NdOutcome.BAD_FRAME and "bad_crc" in attempt.detail
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "bad_crc" in warning and bytes(frame).hex(" ") in warning


def test_late_primary_response_still_gets_caller_id(modem: VirtualModem) -> None:
    late_line = open_line(modem, timing=NdTiming(primary_response_delay_s=3.5))
    try:
        record, events = run_call(modem, late_line, CallScript(nmbr="0312345678", max_rings=2))
    finally:
        late_line.close()
    assert record.car_rings >= 4  # CAR kept coming while we waited
    assert [c.caller.number_e164 for c in offered(events)] == ["+81312345678"]
    assert_decided_before_first_normal_ring(record, events)


def test_no_primary_response_falls_back_to_ringing_without_caller_id(modem: VirtualModem) -> None:
    plain = open_line(modem, cadence=RingCadence.JAPAN)  # a terminal that knows nothing of ND
    try:
        record = modem.place_call(CallScript(nmbr="0312345678", max_rings=2))
        events = events_until(plain, lambda ev: modem.wait_until(lambda: record.ended, 0.0))
        modem.wait_for_call_end(record, WAIT_S)
    finally:
        plain.close()
    assert record.nd_outcome is NdLineOutcome.NO_PRIMARY_RESPONSE
    assert record.primary_response_at is None and record.rings == 2 and record.cid_bytes == b""
    assert offered(events) == []
    assert record.first_ring_at is not None and record.first_car_at is not None
    assert record.first_ring_at - record.first_car_at >= 6.0 * SCALE * 0.9


def test_handset_already_off_hook_never_answers_car(modem: VirtualModem, line: ModemLine) -> None:
    modem.set_handset(True)
    events_until(line, lambda ev: line.handset_off_hook(), timeout=5.0)
    record = modem.place_call(CallScript(nmbr="0312345678", max_rings=2))
    events = events_until(line, lambda ev: record.ended, timeout=WAIT_S)
    assert record.outcome is CallOutcome.LINE_IN_USE
    assert record.nd_outcome is NdLineOutcome.NOT_SENT and record.car_rings == 0
    assert record.commands == [] and offered(events) == []
    # Even if the line did report CAR-like rings now, the receiver must not take the line.
    receiver = line.number_display
    assert receiver is not None
    now = time.monotonic()
    assert receiver.on_ring(now) is False and receiver.on_ring(now + 0.1) is False
    time.sleep(0.3)
    assert receiver.history() == [] and not modem.off_hook


def test_normal_ringing_on_a_line_without_nd_is_never_taken_for_car() -> None:
    with VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, SCALE) as modem:  # an exchange without ND
        nd_line = open_line(modem)
        try:
            record = modem.place_call(CallScript(nmbr="0312345678", max_rings=3))
            events = events_until(nd_line, normal_rings(3))
            modem.wait_for_call_end(record, WAIT_S)
        finally:
            nd_line.close()
    assert [e.count for e in events if isinstance(e, Ring)] == [1, 2, 3]
    assert record.commands == [] and record.outcome is CallOutcome.GAVE_UP  # never went off-hook
    assert [c.caller.number_e164 for c in offered(events)] == ["+81312345678"]  # the modem's own caller ID
    assert nd_line.number_display is not None and nd_line.number_display.history() == []


def test_usr_dialect_gets_the_number_too() -> None:
    with VirtualModem(USR_5637, RingCadence.JAPAN_ND, SCALE) as modem:
        usr_line = open_line(modem)
        try:
            record, events = run_call(modem, usr_line, CallScript(nmbr="0312345678", max_rings=2))
        finally:
            usr_line.close()
    assert [c.caller.number_e164 for c in offered(events)] == ["+81312345678"]
    assert_decided_before_first_normal_ring(record, events)


@pytest.mark.parametrize(
    "kwargs",
    [{"car_max_interval_s": 0}, {"fsk_window_s": -1}, {"primary_response_delay_s": -0.1},
     {"primary_response_delay_s": 5.0, "primary_response_deadline_s": 5.0}],
)
def test_bad_nd_timing_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        NdTiming(**kwargs)


def test_scenario_files_carry_a_raw_nd_frame(tmp_path: Path) -> None:
    path = tmp_path / "calls.toml"
    path.write_text('[[call]]\nnmbr = "0312345678"\nnd_frame = "90 81 87"\n', encoding="utf-8")
    assert load_scenario(path)[0].nd_frame == b"\x90\x81\x87"


def test_uri_tunes_the_nd_timing() -> None:
    line = ModemLine.from_uri("modem:///dev/x?nd_window_ms=2000&nd_car_interval_ms=1400", cadence=RingCadence.JAPAN_ND)
    assert line.number_display is not None
    assert line.number_display.timing == NdTiming(car_max_interval_s=1.4, fsk_window_s=2.0)
    for bad in ("modem:///dev/x?nd_window_ms=abc", "modem:///dev/x?nd_window_ms=0",
                "modem:///dev/x?nd_response_delay_ms=6000"):
        with pytest.raises(ValueError):
            ModemLine.from_uri(bad, cadence=RingCadence.JAPAN_ND)
    assert ModemLine.from_uri("modem:///dev/x").number_display is None  # plain jp: no ND receiver


def test_a_redial_right_after_ringing_stopped_is_a_new_call(modem: VirtualModem, line: ModemLine) -> None:
    # The second call's CAR starts 3 s after the first call's last ring: within the ring gap, so
    # its first CAR burst must not count as "ring 2" of the first call (the call loop screens a
    # call still without caller ID on ring 2), and the same number must be offered again.
    first = modem.place_call(CallScript(nmbr="0312345678", max_rings=1))
    second = modem.place_call(CallScript(nmbr="0312345678", max_rings=1, gap_s=0))
    events = events_until(line, lambda ev: len(offered(ev)) == 2 and normal_rings(2)(ev))
    modem.wait_for_call_end(second, WAIT_S)
    assert first.outcome is CallOutcome.GAVE_UP and second.nd_outcome is NdLineOutcome.SENT
    offers = offered(events)
    assert len(offers) == 2
    before_second = [e for e in events if e.at < offers[1].at]  # type: ignore[attr-defined]
    assert all(e.count == 1 for e in before_second if isinstance(e, Ring))
    assert any(isinstance(e, RingingStopped) for e in before_second if e.at > offers[0].at)  # type: ignore[attr-defined]
    # CAR bursts are not ringing: the only Ring events are the normal rings after each caller ID.
    rings = [e for e in events if isinstance(e, Ring)]
    assert len(rings) == 2 and all(any(o.at < r.at for o in offers) for r in rings)


def test_a_stray_handset_report_on_an_idle_nd_line_does_not_cost_the_next_callers_number(
        modem: VirtualModem, line: ModemLine) -> None:
    modem.inject(b"\x10H")  # DLE H from line noise: nobody picked up
    events_until(line, lambda ev: line.handset_off_hook(), timeout=5.0)
    assert line.handset_off_hook()
    record, events = run_call(modem, line, CallScript(nmbr="0312345678", max_rings=2))
    # CAR itself proves the handset is down: the primary response is made and the number decoded.
    assert not line.handset_off_hook()
    assert [c.caller.number_e164 for c in offered(events)] == ["+81312345678"]
    assert_decided_before_first_normal_ring(record, events)
