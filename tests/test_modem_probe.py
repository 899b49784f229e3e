"""``mamoru modem probe`` and ``mamoru line record-calls`` against the virtual modem on a real pty, and
their transcripts replayed by the replay modem as dialect tests: ModemLine must start on the recorded
replies alone and hear the recorded calls."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from firmware.dialects import CONEXANT_CX93001, DIALECTS, USR_5637, ModemDialect, RingCadence
from firmware.line_transcript import Exchange, LineTranscript, redact_line
from firmware.modem_line import ModemLine
from firmware.modemline.base import UnsupportedModem
from firmware.scenarios import CallScript
from firmware.virtual_modem import VirtualModem
from firmware.vmodem.replay import ReplayModem
from screening.cli import main
from screening.core.line import CallOffered, Ring

SCALE = 0.05
TRANSCRIPTS = Path(__file__).parent / "data" / "transcripts"


def _events(line: ModemLine, seconds: float) -> list[object]:
    events: list[object] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        event = line.next_event(timeout=0.1)
        if event is not None:
            events.append(event)
    return events


@pytest.mark.parametrize("dialect", [CONEXANT_CX93001, USR_5637], ids=lambda d: d.key)
def test_probe_of_the_virtual_modem_replays_as_a_dialect_test(dialect: ModemDialect, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "probe.json"
    with VirtualModem(dialect, RingCadence.JAPAN, SCALE) as modem:
        assert main(["modem", "probe", str(modem.device_path), "-o", str(out), "--timeout", "1"]) == 0
    said = capsys.readouterr().out
    assert f"dialect {dialect.key}" in said and "all of mamoru's start-up commands answered OK" in said
    transcript = LineTranscript.from_json(out.read_text(encoding="utf-8"))
    assert json.loads(out.read_text())["dialect"] == dialect.key
    assert transcript.reply_to("AT+FCLASS=?") is not None and transcript.reply_to("AT+VSM=?") is not None
    assert [transcript.reply_to(f"ATI{n}") is not None for n in range(12)] == [True] * 12
    with ReplayModem(transcript) as replay:
        line = ModemLine(str(replay.device_path), "auto", "JP", RingCadence.JAPAN)
        line.open()
        try:
            assert line.dialect is DIALECTS[dialect.key]
        finally:
            line.close()
        # ModemLine sent nothing the real modem was not asked.
        assert all(transcript.reply_to(command) is not None for command in replay.commands)


def test_committed_transcripts_replay_as_dialect_tests() -> None:
    """Each transcript in tests/data/transcripts (from a probe) must still start mamoru's modem line."""
    files = sorted(TRANSCRIPTS.glob("*.json"))
    assert files
    for path in files:
        transcript = LineTranscript.from_json(path.read_text(encoding="utf-8"))
        dialect = transcript.dialect()
        assert dialect is not None, path.name
        with ReplayModem(transcript) as replay:
            line = ModemLine(str(replay.device_path), "auto", "JP", RingCadence.JAPAN)
            line.open()
            line.close()


def test_an_unknown_modem_is_named_and_refused(tmp_path: Path) -> None:
    transcript = LineTranscript.from_json((TRANSCRIPTS / "conexant_cx93001_virtual.json").read_text(encoding="utf-8"))
    transcript.exchanges = [Exchange("ATI3", ("ACME V.92 SoftModem 0.1",), "OK") if e.command == "ATI3" else e
                            for e in transcript.exchanges]  # fmt: skip
    assert transcript.dialect() is None
    with ReplayModem(transcript) as replay:
        line = ModemLine(str(replay.device_path), "auto", "JP", RingCadence.JAPAN)
        with pytest.raises(UnsupportedModem, match="ACME"):
            line.open()


def test_redaction_masks_numbers_and_serials_but_keeps_reason_codes() -> None:
    assert redact_line("NMBR = 0312345678") == "NMBR = XXXXXXXXXX"
    assert redact_line("NAME=YAMADA TARO") == "NAME=XXXXXX XXXX"
    assert redact_line("NMBR = P") == "NMBR = P"
    assert redact_line("Serial Number: AB12345") == "Serial Number: XXXXXXX"
    assert redact_line("CX93001-EIS_V0.2002-V92") == "CX93001-EIS_V0.2002-V92"
    assert redact_line("IMEI 356938035643809") == "IMEI XXXXXXXXXXXXXXX"


@pytest.mark.parametrize("keep", [False, True], ids=["redacted", "keep-numbers"])
def test_record_calls_transcript_replays_the_call(keep: bool, tmp_path: Path) -> None:
    out = tmp_path / "calls.json"
    config = tmp_path / "m.toml"
    config.write_text('[line]\ncadence = "jp"\n', encoding="utf-8")
    with VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, SCALE) as modem:
        timer = threading.Timer(2.5, lambda: modem.place_call(CallScript(nmbr="0662223333", max_rings=3)))
        timer.start()
        args = ["line", "record-calls", "--config", str(config), "--minutes", "0.1", "--line",
                f"modem://{modem.device_path}", "-o", str(out)] + (["--keep-numbers"] if keep else [])
        assert main(args) == 0
        timer.cancel()
    transcript = LineTranscript.from_json(out.read_text(encoding="utf-8"))
    texts = [u.text for u in transcript.unsolicited]
    assert texts.count("RING") == 3
    assert ("NMBR = 0662223333" if keep else "NMBR = XXXXXXXXXX") in texts
    assert "0662223333" not in out.read_text() or keep
    with ReplayModem(transcript) as replay:
        line = ModemLine(str(replay.device_path), "auto", "JP", RingCadence.JAPAN, ring_gap_s=0.225)
        line.open()
        try:
            events = _events(line, 6.0)  # the call starts ~2.5 s after start-up, as recorded
        finally:
            line.close()
    offered = [e for e in events if isinstance(e, CallOffered)]
    assert len(offered) == 1 and sum(isinstance(e, Ring) for e in events) == 3
    assert offered[0].caller.number_e164 == ("+81662223333" if keep else None)


def test_modem_emulate_replays_a_transcript_for_mamoru_to_open(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from tests.support.daemon import ROOT, daemon_env

    emu = subprocess.Popen([sys.executable, "-m", "screening.cli", "modem", "emulate", "--replay",
                            str(TRANSCRIPTS / "usr5637_virtual.json")], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                           env=daemon_env(tmp_path))  # fmt: skip
    try:
        assert emu.stdout is not None
        device = emu.stdout.readline().strip()
        line = ModemLine(device, "auto", "JP", RingCadence.JAPAN)
        line.open()
        try:
            assert line.dialect is USR_5637
        finally:
            line.close()
    finally:
        emu.send_signal(signal.SIGTERM)
        assert emu.wait(timeout=10) == 0


def test_health_checks_after_start_up_are_not_line_traffic() -> None:
    from firmware.at_channel import Direction
    from firmware.modem_probe import transcript_from_entries

    entries = [(1.0, Direction.SENT, b"ATZ\r"), (1.1, Direction.RECEIVED, b"OK"),
               (5.0, Direction.RECEIVED, b"NMBR = 0312345678"), (5.1, Direction.RECEIVED, b"RING"),
               (40.0, Direction.SENT, b"AT\r"), (40.1, Direction.RECEIVED, b"OK"),
               (41.0, Direction.RECEIVED, b"\x10b")]  # fmt: skip
    transcript = transcript_from_entries(entries, device="/dev/ttyACM0", recorded_at="2026-12-06T00:00:00Z",
                                         started_at=2.0, keep_numbers=False)  # fmt: skip
    assert transcript.exchanges == [Exchange("ATZ", (), "OK")]
    assert [(round(u.at_s, 3), u.text) for u in transcript.unsolicited] == [(3.0, "NMBR = XXXXXXXXXX"), (3.1, "RING"),
                                                                  (39.0, "<DLE>b")]  # fmt: skip


def test_a_reply_recorded_before_its_command_is_still_paired_with_it() -> None:
    """The SENT entry is stamped after write() returns: the reader may record the reply first."""
    from firmware.at_channel import Direction
    from firmware.modem_probe import transcript_from_entries

    entries = [(1.0, Direction.SENT, b"ATZ\r"), (1.1, Direction.RECEIVED, b"ATZ"), (1.2, Direction.RECEIVED, b"OK"),
               (1.30, Direction.RECEIVED, b"CX93001-EIS_V0.2002-V92"), (1.31, Direction.RECEIVED, b"OK"),
               (1.32, Direction.SENT, b"ATI3\r"), (1.5, Direction.SENT, b"AT+VSD=128,50\r"),
               (1.6, Direction.RECEIVED, b"OK"), (3.0, Direction.RECEIVED, b"RING")]  # fmt: skip
    transcript = transcript_from_entries(entries, device="d", recorded_at="t", started_at=2.0, keep_numbers=True)
    assert transcript.exchanges == [Exchange("ATZ", (), "OK"), Exchange("ATI3", ("CX93001-EIS_V0.2002-V92",), "OK"),
                                    Exchange("AT+VSD=128,50", (), "OK")]  # fmt: skip
    assert [u.text for u in transcript.unsolicited] == ["RING"]
