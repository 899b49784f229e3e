"""DLE shielding for voice-mode data streams (ITU-T V.253).

In voice transmit/receive state every byte is audio, except DLE (0x10), which
introduces a two-byte code: ``DLE DLE`` is a literal 0x10 audio byte and
``DLE <c>`` is an event (from the modem) or a command (to the modem).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DLE = 0x10
ETX = 0x03


class DleEvent(StrEnum):
    """DLE codes a modem sends inside a voice data stream (V.253 table 14/15)."""

    END_OF_STREAM = "\x03"  # DLE ETX
    BUSY = "b"
    DIAL_TONE = "d"
    SILENCE = "s"  # presumed end of message (silence detection)
    QUIET = "q"
    RINGBACK = "r"
    RING = "R"
    HANDSET_OFF_HOOK = "H"
    HANDSET_ON_HOOK = "h"
    LOOP_INTERRUPTION = "l"  # loop current interruption: far end hung up
    LOOP_REVERSAL = "L"
    FAX_CALLING = "c"
    DATA_CALLING = "e"
    FAX_ANSWER = "a"
    RX_OVERRUN = "o"
    TX_UNDERRUN = "u"
    DTMF_START = "/"
    DTMF_END = "~"


DTMF_DIGITS = frozenset("0123456789*#ABCD")

# DLE commands the host sends to the modem.
END_TRANSMIT = bytes([DLE, ETX])  # end of audio in +VTX: modem finishes playing, returns to command
ABORT_RECEIVE = bytes([DLE, ord("!")])  # stop +VRX


def shield(audio: bytes) -> bytes:
    """Escape audio for the modem: every DLE byte is doubled."""
    return audio.replace(b"\x10", b"\x10\x10")


@dataclass(slots=True)
class Unshielder:
    """Incremental decoder of a shielded stream: splits audio from DLE codes.

    ``feed()`` may be called with arbitrary chunk boundaries (a DLE at the end of
    one chunk pairs with the first byte of the next). Unknown codes are returned
    as their raw character so the caller can log them; they never raise.
    """

    _pending_dle: bool = False

    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        audio = bytearray()
        events: list[str] = []
        i = 0
        n = len(data)
        if self._pending_dle and n:
            self._pending_dle = False
            self._code(data[0], audio, events)
            i = 1
        while i < n:
            j = data.find(b"\x10", i)
            if j < 0:
                audio += data[i:]
                break
            audio += data[i:j]
            if j + 1 >= n:
                self._pending_dle = True
                break
            self._code(data[j + 1], audio, events)
            i = j + 2
        return bytes(audio), events

    @staticmethod
    def _code(byte: int, audio: bytearray, events: list[str]) -> None:
        if byte == DLE:
            audio.append(DLE)
        else:
            events.append(chr(byte))
