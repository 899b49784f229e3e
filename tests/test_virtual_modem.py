"""Byte-level tests of the virtual voice modem, driven over its pty with pyserial."""

from __future__ import annotations

import random
import struct
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.dialects import CONEXANT_CX93001, DIALECTS, USR_5637, ModemDialect, RingCadence, dialect_for_ati3
from firmware.dle import DLE, ETX, shield
from firmware.scenarios import (
    BLOCKED_NUMBER,
    FAMILY_NUMBER,
    INTERNATIONAL_NUMBER,
    OUT_OF_AREA,
    PAYPHONE,
    POLICE_LOOKALIKE_NUMBER,
    UNKNOWN_NUMBER,
    WITHHELD,
    CallScript,
    ScenarioError,
    caller_audio_u8,
    demo_scenario,
    load_scenario,
)
from firmware.virtual_modem import VirtualModem, emulate_forever
from firmware.vmodem.at import format_cid_block, parse_at_body
from firmware.vmodem.records import CallOutcome
from tests.support.examples import examples

pytestmark = pytest.mark.timeout(20)

SCALE = 0.02
OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
RING = b"\r\nRING\r\n"
DLE_H = bytes([DLE, ord("H")])
DLE_h = bytes([DLE, ord("h")])

ModemFactory = Callable[..., VirtualModem]


@pytest.fixture
def make_modem(tmp_path: Path) -> Iterator[ModemFactory]:
    modems: list[VirtualModem] = []

    def make(dialect: ModemDialect = CONEXANT_CX93001, cadence: RingCadence = RingCadence.JAPAN,
             scale: float = SCALE) -> VirtualModem:
        modem = VirtualModem(dialect, cadence, time_scale=scale, link_dir=tmp_path / "dev")
        modem.start()
        modems.append(modem)
        return modem

    yield make
    for modem in modems:
        modem.stop()


@pytest.fixture
def ports() -> Iterator[Callable[[VirtualModem], serial.Serial]]:
    opened: list[serial.Serial] = []

    def open_port(modem: VirtualModem) -> serial.Serial:
        port = serial.Serial(str(modem.device_path), 115200, timeout=0.02)
        opened.append(port)
        return port

    yield open_port
    for port in opened:
        port.close()


def read_until(port: serial.Serial, marker: bytes, timeout: float = 2.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} not seen within {timeout} s; got {buf!r}")
        buf += port.read(4096)
    return buf


def read_for(port: serial.Serial, seconds: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        buf += port.read(4096)
    return buf


def transact(port: serial.Serial, command: bytes, final: bytes = OK, timeout: float = 1.0) -> bytes:
    port.write(command + b"\r")
    return read_until(port, final, timeout)


def voice_setup(port: serial.Serial, dialect: ModemDialect = CONEXANT_CX93001) -> None:
    """What a host does after reset: the dialect's init, then voice mode and format."""
    for cmd in (*dialect.init_commands, dialect.voice_mode, dialect.voice_format, dialect.silence_detection):
        reply = transact(port, cmd.encode())
        assert reply.endswith(OK), (cmd, reply)
    port.reset_input_buffer()


CONNECT = b"\r\nCONNECT\r\n"


def connect(port: serial.Serial, command: bytes) -> bytes:
    """Send +VTX/+VRX, expect exactly CONNECT first; returns what followed it."""
    reply = transact(port, command, CONNECT)
    assert reply.startswith(CONNECT), reply
    return reply[len(CONNECT) :]


def answer(port: serial.Serial, modem: VirtualModem) -> None:
    read_until(port, RING)
    final = modem.dialect.off_hook_replies[0].encode()
    assert transact(port, modem.dialect.off_hook.encode(), b"\r\n" + final + b"\r\n").endswith(
        b"\r\n" + final + b"\r\n")


# ---- command interpreter --------------------------------------------------------------


def test_echo_on_by_default_and_off_after_ate0(make_modem: ModemFactory, ports) -> None:
    port = ports(make_modem())
    assert transact(port, b"AT") == b"AT\r" + OK
    assert transact(port, b"at") == b"at\r" + OK  # prefix is case-insensitive
    assert transact(port, b"ATE0") == b"ATE0\r" + OK  # echo of the line itself still happens
    assert transact(port, b"AT") == OK
    assert transact(port, b"ATE1") == OK
    assert transact(port, b"AT") == b"AT\r" + OK


def test_crlf_accepted_and_lf_ignored(make_modem: ModemFactory, ports) -> None:
    port = ports(make_modem())
    transact(port, b"ATE0")
    port.write(b"AT\r\n")
    assert read_until(port, OK) == OK
    port.write(b"\nAT\r")
    assert read_for(port, 0.1) == OK


def test_unknown_malformed_and_overlong_commands_give_error(make_modem: ModemFactory, ports) -> None:
    port = ports(make_modem())
    transact(port, b"ATE0")
    for bad in (b"ATY", b"AT+FOO=1", b"AT+FCLASS=9", b"ATE2", b"AT&", b"AT$", b"ATI9", b"AT" + b"E0" * 140):
        assert transact(port, bad, ERROR) == ERROR, bad
    assert transact(port, b"ATZZ\x08") == OK  # backspace edits the line: ATZ


def test_chained_commands_and_queries(make_modem: ModemFactory, ports) -> None:
    port = ports(make_modem())
    transact(port, b"ATE0")
    assert transact(port, b"ATV1 Q0 L2 M1") == OK
    assert transact(port, b"AT+FCLASS=8;+VCID=1") == OK
    assert transact(port, b"AT+FCLASS?") == b"\r\n8\r\n" + OK
    assert transact(port, b"AT+VCID?") == b"\r\n1\r\n" + OK
    assert transact(port, b"ATS0=2S0?") == b"\r\n002\r\n" + OK
    assert transact(port, b"ATV0", b"0\r") == b"0\r"  # numeric result codes
    assert transact(port, b"ATFOO", b"4\r") == b"4\r"
    assert transact(port, b"ATZ", b"OK\r\n") == OK  # ATZ restores verbose (and echo)
    assert transact(port, b"AT+FCLASS?") == b"AT+FCLASS?\r\r\n0\r\n" + OK


@pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=list(DIALECTS))
def test_ati0_and_ati3_per_dialect(make_modem: ModemFactory, ports, dialect: ModemDialect) -> None:
    port = ports(make_modem(dialect))
    transact(port, b"ATE0")
    reply = transact(port, b"ATI3")
    assert reply == f"\r\n{dialect.ati3_reply}\r\n".encode() + OK
    assert dialect_for_ati3(reply.decode()) is dialect
    assert transact(port, b"ATI0") == f"\r\n{dialect.ati0_reply}\r\n".encode() + OK


@pytest.mark.parametrize("dialect", list(DIALECTS.values()), ids=list(DIALECTS))
def test_voice_mode_sequence(make_modem: ModemFactory, ports, dialect: ModemDialect) -> None:
    modem = make_modem(dialect)
    port = ports(modem)
    transact(port, b"ATE0")
    for voice_cmd in (b"AT+VLS=1", b"AT+VTX", b"AT+VRX", b"AT+VSD=128,50", dialect.voice_format.encode()):
        assert transact(port, voice_cmd, ERROR) == ERROR, voice_cmd  # not in +FCLASS=8 yet
    for cmd in dialect.init_commands:
        assert transact(port, cmd.encode()) == OK
    assert transact(port, dialect.voice_mode.encode()) == OK
    assert transact(port, dialect.voice_format.encode()) == OK
    other = next(d for d in DIALECTS.values() if d is not dialect)
    assert transact(port, other.voice_format.encode(), ERROR) == ERROR  # not this chipset's format
    assert transact(port, dialect.silence_detection.encode()) == OK
    assert transact(port, b"AT+VGT=128;+VGR=128;+VIT=10") == OK
    assert transact(port, b"AT+VTX", ERROR) == ERROR  # on-hook: nothing to transmit to
    off_hook_final = b"\r\n" + dialect.off_hook_replies[0].encode() + b"\r\n"
    assert transact(port, dialect.off_hook.encode(), off_hook_final) == off_hook_final
    assert modem.off_hook
    assert transact(port, dialect.hang_up.encode()) == OK
    assert not modem.off_hook


# ---- ringing and caller ID ------------------------------------------------------------------


def test_north_america_ring_cid_ring(make_modem: ModemFactory, ports) -> None:
    modem = make_modem(USR_5637, RingCadence.NORTH_AMERICA)
    port = ports(modem)
    transact(port, b"ATE0")
    transact(port, b"AT#CID=1")  # USR's spelling of caller ID on
    script = CallScript(nmbr="5551234567", name="JOHN DOE", date="0321", time="1405", max_rings=2)
    record = modem.place_call(script)
    modem.wait_for_call_end(record, 3)
    cid = b"\r\nDATE = 0321\r\n\r\nTIME = 1405\r\n\r\nNMBR = 5551234567\r\n\r\nNAME = JOHN DOE\r\n"
    assert read_for(port, 0.05) == RING + cid + RING
    assert record.cid_bytes == cid
    period = 6.0 * SCALE
    assert record.first_ring_at is not None and record.cid_written_at is not None
    assert record.first_ring_at < record.cid_written_at < record.first_ring_at + period
    assert record.outcome is CallOutcome.GAVE_UP and record.rings == 2


@pytest.mark.parametrize("cadence", [RingCadence.JAPAN, RingCadence.UK])
def test_cid_before_first_ring(make_modem: ModemFactory, ports, cadence: RingCadence) -> None:
    modem = make_modem(CONEXANT_CX93001, cadence)
    port = ports(modem)
    transact(port, b"ATE0")
    transact(port, b"AT+VCID=1")
    record = modem.place_call(CallScript(nmbr=FAMILY_NUMBER, mesg="030101", date="1224", time="0930", max_rings=1))
    modem.wait_for_call_end(record, 3)
    expected = format_cid_block(["MESG = 030101", "DATE = 1224", "TIME = 0930", f"NMBR = {FAMILY_NUMBER}"])
    assert read_for(port, 0.05) == expected + RING
    assert record.cid_written_at is not None and record.first_ring_at is not None
    assert record.cid_written_at < record.first_ring_at


def test_raw_cid_lines_and_no_cid_without_vcid(make_modem: ModemFactory, ports) -> None:
    modem = make_modem(CONEXANT_CX93001, RingCadence.UK)
    port = ports(modem)
    transact(port, b"ATE0")
    first = modem.place_call(CallScript(nmbr=FAMILY_NUMBER, max_rings=1))  # caller ID not enabled
    modem.wait_for_call_end(first, 3)
    assert read_for(port, 0.05) == RING
    assert first.cid_written_at is None
    transact(port, b"AT+VCID=1")
    garbage = ("NMBR = 02079460000", "\x01\x7fjunk ###")
    second = modem.place_call(CallScript(raw_cid_lines=garbage, max_rings=1))
    modem.wait_for_call_end(second, 3)
    assert read_for(port, 0.05) == format_cid_block(garbage) + RING


def test_caller_gives_up_after_max_rings(make_modem: ModemFactory, ports) -> None:
    modem = make_modem()
    port = ports(modem)
    transact(port, b"ATE0")
    record = modem.place_call(CallScript(nmbr=UNKNOWN_NUMBER, max_rings=3))
    modem.wait_for_call_end(record, 3)
    assert record.ended_at is not None and record.first_ring_at is not None
    assert record.ended_at - record.first_ring_at >= 3 * 3.0 * SCALE * 0.95
    assert read_for(port, 3 * 3.0 * SCALE).count(RING) == 3  # and no more after giving up
    assert record.outcome is CallOutcome.GAVE_UP and record.answered_at is None
    modem.wait_idle(1)


def test_call_waiting_gives_cid_but_no_ring(make_modem: ModemFactory, ports) -> None:
    modem = make_modem()
    port = ports(modem)
    voice_setup(port)
    script = CallScript(nmbr=BLOCKED_NUMBER, date="0101", time="1200", handset_off_hook_at_s=0, max_rings=2)
    record = modem.place_call(script)
    modem.wait_for_call_end(record, 3)
    out = read_for(port, 0.05)
    cid = format_cid_block(["DATE = 0101", "TIME = 1200", f"NMBR = {BLOCKED_NUMBER}"])
    assert out == DLE_H + cid + DLE_h  # household on the phone, type-II caller ID, then hangs up
    assert RING not in out
    assert record.outcome is CallOutcome.LINE_IN_USE and record.rings == 0


def test_household_picks_up_while_ringing(make_modem: ModemFactory, ports) -> None:
    modem = make_modem()
    port = ports(modem)
    voice_setup(port)
    record = modem.place_call(CallScript(nmbr=FAMILY_NUMBER, handset_off_hook_at_s=4.0, hang_up_after_s=2.0))
    modem.wait_for_call_end(record, 3)
    out = read_for(port, 0.05)
    assert out.count(RING) == 2  # rings at 0 s and 3 s, picked up at 4 s
    assert out.index(DLE_H) > out.rindex(RING) and out.endswith(DLE_h)
    assert record.outcome is CallOutcome.HOUSEHOLD_ANSWERED and record.answered_at is None


def test_manual_handset_reports_dle_only_in_voice_class(make_modem: ModemFactory, ports) -> None:
    modem = make_modem()
    port = ports(modem)
    transact(port, b"ATE0")
    modem.set_handset(True)
    modem.set_handset(False)
    assert read_for(port, 0.05) == b""
    transact(port, b"AT+FCLASS=8")
    modem.set_handset(True)
    assert read_until(port, DLE_H) == DLE_H
    assert modem.handset_off_hook
    modem.set_handset(False)
    assert read_until(port, DLE_h) == DLE_h


# ---- answered calls ----------------------------------------------------------------------


def test_host_hangs_up(make_modem: ModemFactory, ports) -> None:
    modem = make_modem(USR_5637)
    port = ports(modem)
    voice_setup(port, USR_5637)
    record = modem.place_call(CallScript(nmbr=WITHHELD))
    answer(port, modem)
    assert transact(port, b"ATH0") == OK
    modem.wait_for_call_end(record, 2)
    assert record.outcome is CallOutcome.ANSWERED
    assert record.answered_at is not None and record.hung_up_at is not None
    assert record.answered_at < record.hung_up_at
    assert [c for _, c in record.commands] == ["AT+VLS=1", "ATH0"]


def test_vtx_audio_is_unshielded_and_paced(make_modem: ModemFactory, ports) -> None:
    modem = make_modem(scale=0.1)
    port = ports(modem)
    voice_setup(port)
    record = modem.place_call(CallScript(nmbr=UNKNOWN_NUMBER))
    answer(port, modem)
    assert connect(port, b"AT+VTX") == b""
    audio = bytes(range(256)) * 40 + b"\x10"  # 10241 bytes (1.28 s), many DLE bytes, one at the end
    stream = shield(audio)
    split = stream.index(b"\x10\x10", 5000) + 1  # a chunk boundary between DLE and DLE
    started = time.monotonic()
    port.write(stream[:split])
    port.flush()
    time.sleep(0.02)
    port.write(stream[split:] + bytes([DLE, ETX]))
    reply = read_until(port, OK, 3)
    elapsed = time.monotonic() - started
    assert reply == OK
    assert record.played_audio == audio
    assert elapsed >= len(audio) / 8000 * 0.1 * 0.8  # OK only once the audio has "played"
    assert transact(port, b"ATH") == OK
    assert modem.wait_for_call_end(record, 2).outcome is CallOutcome.ANSWERED


def test_vtx_reports_caller_hang_up(make_modem: ModemFactory, ports) -> None:
    modem = make_modem(scale=0.1)
    port = ports(modem)
    voice_setup(port)
    record = modem.place_call(CallScript(nmbr=UNKNOWN_NUMBER, hang_up_after_s=1.5))
    answer(port, modem)
    assert connect(port, b"AT+VTX") == b""
    port.write(shield(bytes([0x80]) * 16000))  # 2 s of audio; the caller leaves after 1.5 s
    assert read_until(port, b"\x10b") == b"\x10b"  # JP: busy tone after the far end clears
    port.write(bytes([DLE, ETX]))
    read_until(port, OK)
    assert transact(port, b"ATH") == OK
    modem.wait_for_call_end(record, 2)
    assert record.outcome is CallOutcome.CALLER_HUNG_UP and record.hung_up_at is not None


def decode_stream(stream: bytes) -> tuple[bytes, list[tuple[int, str]]]:
    """Split a shielded +VRX stream into audio and (audio offset, event) pairs."""
    audio = bytearray()
    events: list[tuple[int, str]] = []
    i = 0
    while i < len(stream):
        byte = stream[i]
        if byte == DLE and i + 1 < len(stream):
            code = stream[i + 1]
            if code == DLE:
                audio.append(DLE)
            else:
                events.append((len(audio), chr(code)))
            i += 2
        else:
            audio.append(byte)
            i += 1
    return bytes(audio), events


def test_vrx_streams_shielded_audio_with_dtmf_and_busy(make_modem: ModemFactory, ports) -> None:
    scale = 0.1
    modem = make_modem(scale=scale)
    port = ports(modem)
    voice_setup(port)
    rng = random.Random(7)
    caller = bytes(rng.choice([0x10, 0x20, 0x40, 0xC0, 0xE0, 0xF0]) for _ in range(24000))  # 3 s, loud
    script = CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=caller, hang_up_after_s=2.0, dtmf=((0.8, "1"), (1.2, "#")))
    record = modem.place_call(script)
    answer(port, modem)
    stream = connect(port, b"AT+VRX")
    stream += read_until(port, b"\x10b", 3)
    stream += read_for(port, 0.05)
    port.write(bytes([DLE, ord("!")]))
    stream += read_until(port, bytes([DLE, ETX]) + OK)
    body = stream[: -len(bytes([DLE, ETX]) + OK)]
    audio, events = decode_stream(body)
    assert [e for _, e in events] == ["1", "#", "b"]
    start = caller.find(audio[:256])
    assert start >= 0  # the stream is the caller's voice, from where the call has got to
    tolerance = int(0.15 * 8000)  # timer jitter at this scale
    positions = {e: pos + start for pos, e in events}
    assert abs(positions["1"] - 0.8 * 8000) < tolerance
    assert abs(positions["#"] - 1.2 * 8000) < tolerance
    assert abs(positions["b"] - 2.0 * 8000) < tolerance
    voice_len = 2 * 8000 - start
    assert audio[: voice_len - tolerance] == caller[start : start + voice_len - tolerance]
    assert transact(port, b"ATH") == OK
    modem.wait_for_call_end(record, 2)
    assert ("b" in {e for _, e in record.dle_events}) and record.outcome is CallOutcome.CALLER_HUNG_UP


def test_vrx_reports_silence(make_modem: ModemFactory, ports) -> None:
    modem = make_modem(scale=0.05)
    port = ports(modem)
    voice_setup(port)
    transact(port, b"AT+VSD=128,5")  # 0.5 s of silence
    modem.place_call(CallScript(nmbr=UNKNOWN_NUMBER, caller_audio=bytes([0xF0, 0x10]) * 2000))  # 0.5 s voice
    answer(port, modem)
    stream = connect(port, b"AT+VRX")
    stream += read_until(port, b"\x10s", 3)
    port.write(bytes([DLE, ETX]))  # DLE ETX ends +VRX as well as DLE !
    stream += read_until(port, bytes([DLE, ETX]) + OK)
    audio, events = decode_stream(stream[: -len(OK) - 2])
    assert [e for _, e in events] == ["s"]
    assert set(audio.rstrip(b"\x80")) <= {0xF0, 0x10}  # the caller's voice, then silence
    assert transact(port, b"ATH") == OK


# ---- faults ----------------------------------------------------------------------------


def test_go_silent_and_resume(make_modem: ModemFactory, ports) -> None:
    modem = make_modem()
    port = ports(modem)
    modem.go_silent()
    port.write(b"AT\r")
    assert read_for(port, 0.2) == b""
    modem.resume()
    assert transact(port, b"AT") == b"AT\r" + OK


def test_vanish_and_reappear_keep_the_symlink_path(make_modem: ModemFactory, ports) -> None:
    modem = make_modem()
    path = modem.device_path
    old = ports(modem)
    transact(old, b"ATE0")
    transact(old, b"AT+FCLASS=8")
    record = modem.place_call(CallScript(nmbr=UNKNOWN_NUMBER))
    answer(old, modem)
    modem.vanish()
    assert not path.exists() and not path.is_symlink()
    assert modem.wait_for_call_end(record, 1).outcome is CallOutcome.LINE_FAULT
    with pytest.raises(serial.SerialException):
        for _ in range(50):
            old.read(1)
            time.sleep(0.01)
    modem.reappear()
    assert path.is_symlink() and str(path.resolve()) == modem.tty_name
    new = ports(modem)
    assert transact(new, b"AT") == b"AT\r" + OK  # power-on defaults: echo on again
    assert transact(new, b"AT+FCLASS?") == b"AT+FCLASS?\r\r\n0\r\n" + OK


def test_host_garbage_and_injected_garbage(make_modem: ModemFactory, ports) -> None:
    modem = make_modem()
    port = ports(modem)
    transact(port, b"ATE0")
    port.write(bytes(range(256)) * 4 + b"\xff" * 600 + b"\r")
    read_for(port, 0.1)
    port.reset_input_buffer()
    assert transact(port, b"AT") == OK
    modem.inject(b"\x00\xfeNO CARRIER\r\n")
    assert read_until(port, b"NO CARRIER\r\n") == b"\x00\xfeNO CARRIER\r\n"
    port.write(b"noise without prefix\r")  # not a command line: a modem ignores it
    assert read_for(port, 0.1) == b""


def test_idle_modem_uses_no_cpu(make_modem: ModemFactory, ports) -> None:
    make_modem()
    before = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - before < 0.05


# ---- scenarios ----------------------------------------------------------------------------


def test_demo_scenario_numbers() -> None:
    calls = demo_scenario()
    assert [c.nmbr for c in calls] == [FAMILY_NUMBER, BLOCKED_NUMBER, WITHHELD, INTERNATIONAL_NUMBER,
                                       OUT_OF_AREA, PAYPHONE, POLICE_LOOKALIKE_NUMBER, UNKNOWN_NUMBER]
    assert (WITHHELD, OUT_OF_AREA, PAYPHONE) == ("P", "O", "C")
    assert calls[0].name is None and calls[-1].hang_up_after_s == 60.0  # the unknown caller outlasts the warning, then talks
    assert len(caller_audio_u8(calls[-1])) == 3 * 8000


def write_wav(path: Path, rate: int, seconds: float, channels: int = 2) -> None:
    frames = b"".join(
        struct.pack("<h", int(16000 * __import__("math").sin(2 * 3.14159 * 440 * i / rate))) * channels
        for i in range(int(rate * seconds))
    )
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames)


def test_load_scenario(tmp_path: Path) -> None:
    write_wav(tmp_path / "hello.wav", 16000, 0.5)
    scenario = tmp_path / "calls.toml"
    scenario.write_text(
        'description = "test"\n'
        '[[call]]\nlabel = "scam"\nnmbr = "0398765432"\ngap_s = 1\nmax_rings = 3\n'
        'caller_audio = "hello.wav"\nhang_up_after_s = 4.5\ndtmf = [[1.0, "1"], [0.5, "#"]]\n'
        '[[call]]\nraw_cid_lines = ["NMBR = 123"]\nhandset_off_hook_at_s = 0\n',
        encoding="utf-8",
    )
    first, second = load_scenario(scenario)
    assert first.nmbr == "0398765432" and first.gap_s == 1.0 and first.max_rings == 3
    assert first.caller_audio == tmp_path / "hello.wav"
    assert first.dtmf == ((0.5, "#"), (1.0, "1"))
    audio = caller_audio_u8(first)
    assert abs(len(audio) - 4000) <= 2  # 16 kHz stereo -> 8 kHz mono
    assert max(audio) > 0xB0 and min(audio) < 0x50  # the tone survived resampling
    assert second.raw_cid_lines == ("NMBR = 123",) and second.call_waiting


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('[[call]]\nnmbr = "1"\nrings = 3\n', "call[0].rings"),
        ('[[call]]\nnmbr = 312345678\n', "call[0].nmbr"),
        ('[[call]]\nnmbr = "1"\n[[call]]\ndtmf = [[1.0, "x"]]\n', "call[1]"),
        ('[[call]]\nmax_rings = "six"\n', "call[0].max_rings"),
        ('[[calls]]\nnmbr = "1"\n', "'calls'"),
        ("[[call]\n", "invalid TOML"),
    ],
)
def test_load_scenario_errors_name_file_and_key(tmp_path: Path, body: str, needle: str) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(body, encoding="utf-8")
    with pytest.raises(ScenarioError) as err:
        load_scenario(scenario)
    assert "bad.toml" in str(err.value) and needle in str(err.value)


def test_emulate_forever_plays_scenario_until_stopped(tmp_path: Path) -> None:
    import threading

    modem = VirtualModem(time_scale=SCALE, link_dir=tmp_path)
    stop = threading.Event()
    ready: list[Path] = []
    scenario = [CallScript(nmbr=FAMILY_NUMBER, max_rings=1), CallScript(nmbr=WITHHELD, max_rings=1)]
    thread = threading.Thread(
        target=emulate_forever, args=(modem, scenario, stop), kwargs={"on_ready": ready.append, "poll_s": 0.05}
    )
    thread.start()
    try:
        assert modem.wait_until(lambda: len(modem.calls) >= 4, 5)  # played, then repeated
    finally:
        stop.set()
        thread.join(5)
    assert ready == [tmp_path / "mamoru-modem"] and not modem.running
    assert modem.calls[0].outcome is CallOutcome.GAVE_UP


# ---- parser property ------------------------------------------------------------------------


@settings(max_examples=examples(200), deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
def test_parser_only_raises_value_error(body: str) -> None:
    try:
        cmds = parse_at_body(body)
    except ValueError:
        return
    assert all(cmd.name for cmd in cmds)


# ---- dialling out ----------------------------------------------------------------------


def test_dial_answered_reports_after_ringback_goes_away(make_modem: ModemFactory, ports) -> None:
    from firmware.scenarios import CalleeScript
    from firmware.vmodem.records import DialOutcome

    modem = make_modem(USR_5637)
    port = ports(modem)
    voice_setup(port, USR_5637)
    modem.expect_dial("09012345678", CalleeScript(answer_after_s=3.0, dtmf=((8.0, "1"),)))
    t0 = time.monotonic()
    reply = transact(port, b"ATDT090-1234-5678", b"\r\nVCON\r\n", timeout=2.0)
    record = modem.dials[0]
    assert reply == b"\r\nVCON\r\n"  # echo is off after voice_setup
    assert time.monotonic() - t0 >= (0.5 + 11 * 0.2 + 1.0 + 3.0) * SCALE  # dial tone, digits, setup, ringing
    assert (record.number, record.dial_string, record.final) == ("09012345678", "ATDT090-1234-5678", "VCON")
    assert record.answered_at is not None and record.reported_at is not None
    assert record.reported_at > record.answered_at  # the modem notices the answer via +VRA, not at once
    assert modem.off_hook
    after = connect(port, b"AT+VTX")
    port.write(shield(b"\x10\x80\x81") + bytes([DLE, ETX]))
    tail = read_until(port, OK, 2.0)
    assert bytes([DLE, ord("1")]) in after + tail or bytes([DLE, ord("1")]) in read_for(port, 0.3)
    assert transact(port, b"ATH0") == OK
    modem.wait_for_dial_end(record, 1.0)
    assert record.played_audio == b"\x10\x80\x81"
    assert record.outcome is DialOutcome.ANSWERED and not modem.off_hook


def test_dial_call_progress_results(make_modem: ModemFactory, ports) -> None:
    from firmware.scenarios import CalleeScript
    from firmware.vmodem.records import DialOutcome

    modem = make_modem()
    port = ports(modem)
    voice_setup(port)
    modem.expect_dial("0311112222", CalleeScript.busy())
    assert transact(port, b"ATDT0311112222", b"BUSY\r\n") == b"\r\nBUSY\r\n"
    assert transact(port, b"ATS7=5") == OK
    assert transact(port, b"ATDT0399998888", b"NO ANSWER\r\n") == b"\r\nNO ANSWER\r\n"  # unscripted: rings out
    port.write(b"ATDT0399998888\r")
    time.sleep(0.05)
    assert transact(port, b"", b"NO CARRIER\r\n") == b"\r\nNO CARRIER\r\n"  # any character aborts
    assert transact(port, b"ATDT0311112222;", OK) == OK  # ';': OK once dialled, no call progress
    assert transact(port, b"ATDT0311112222", ERROR) == ERROR  # already off-hook
    assert transact(port, b"ATH0") == OK
    modem.set_handset(True)
    read_until(port, DLE_H)
    assert transact(port, b"ATDT0311112222", b"NO DIALTONE\r\n").endswith(b"\r\nNO DIALTONE\r\n")
    outcomes = [d.outcome for d in modem.dials]
    # the ';' call was hung up by the host before the busy tone was reached: aborted
    assert outcomes == [DialOutcome.BUSY, DialOutcome.NO_ANSWER, DialOutcome.ABORTED, DialOutcome.ABORTED,
                        DialOutcome.NO_DIALTONE]
    assert not modem.off_hook
    assert transact(port, b"ATDT", ERROR) == ERROR and transact(port, b"ATDTL", ERROR) == ERROR
