"""Frames from an external Japanese Number Display (ND) adapter's serial output.

Pure: bytes in, :class:`~screening.core.model.CallerID` out; no I/O, no clock (the
caller passes ``now``). The driver (``firmware/nd_adapter.py``) feeds what it
reads into a :class:`FrameReader`, parses each complete frame with
:func:`parse_frame`, and answers ACK or NAK.

The format is data (:class:`NdFrameFormat`), so another adapter model is one
more entry in :data:`FORMATS`. The one implemented, ``stx``::

    9600 bit/s, 7 data bits, even parity, 1 stop bit (7E1)

    STX  MMDD "," HHMM "," NUMBER-or-REASON  ETX  BCC
    02   "1205"   "1432"   "0312345678"      03   XOR of every byte after STX up to and
                                                  including ETX, 7 bits

    REASON is one ND "reason for absence of number" letter:
    P withheld (非通知) · O out of area (表示圏外) · C payphone (公衆電話) · S service conflict

    host -> adapter: ACK (06) for a good frame, NAK (15) for a bad one; the adapter
    resends a frame that got a NAK or no answer (up to 3 times, 0.5 s apart).

Where it comes from: the fields are exactly those of the ND message (date, time,
number or reason, NTT's "電話サービスのインタフェース" for Number Display); the
STX/ETX/BCC framing with ACK/NAK is the usual Japanese RS-232C "basic mode"
convention. No public serial-output specification of a commercial ND adapter was
found; one published hobby build (a Sony TL-C10 adapter with a microcontroller
on its demodulator) prints ``NMBR=<number>`` or ``NMBR=P/C/O`` lines instead,
which the modem caller-ID parser (``screening/core/callerid.py``) already reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from screening.core.callerid import CidField, caller_id_from_fields
from screening.core.model import CallerID

STX, ETX, ACK, NAK = 0x02, 0x03, 0x06, 0x15


class FrameError(ValueError):
    """A frame the adapter must send again (answered with NAK)."""


class Parity(StrEnum):
    EVEN = "E"
    ODD = "O"
    NONE = "N"


@dataclass(frozen=True, slots=True)
class NdFrameFormat:
    """One adapter model's serial output: line settings, framing and fields in order.

    ``fields`` gives each field and its exact width (None = variable, 1..max_number_len).
    """

    name: str
    baudrate: int
    bytesize: int
    parity: Parity
    stopbits: int
    fields: tuple[tuple[CidField, int | None], ...]
    separator: bytes = b","
    bcc: bool = True  # a block check byte follows ETX
    max_frame_len: int = 64  # bytes from STX to ETX; longer is garbage
    max_number_len: int = 20
    frame_timeout_s: float = 0.5  # STX seen but no ETX within this: the frame is broken
    resend_wait_s: float = 0.5  # how long the adapter waits for ACK/NAK before resending
    max_sends: int = 4  # the first send and three resends


FORMATS: dict[str, NdFrameFormat] = {
    "stx": NdFrameFormat(
        name="stx",
        baudrate=9600,
        bytesize=7,
        parity=Parity.EVEN,
        stopbits=1,
        fields=((CidField.DATE, 4), (CidField.TIME, 4), (CidField.NMBR, None)),
    ),
}
DEFAULT_FORMAT = FORMATS["stx"]

_REASON_LETTERS = frozenset(b"POCS")


def block_check(body: bytes) -> int:
    """BCC: XOR of the bytes after STX up to and including ETX, kept to 7 bits."""
    value = 0
    for byte in body:
        value ^= byte
    return value & 0x7F


def build_frame(fmt: NdFrameFormat, values: dict[CidField, str]) -> bytes:
    """The bytes an adapter of this format sends for these field values (for the fake adapter)."""
    text = fmt.separator.join(values[f].encode("ascii") for f, _ in fmt.fields)
    body = text + bytes([ETX])
    return bytes([STX]) + body + (bytes([block_check(body)]) if fmt.bcc else b"")


def parse_frame(frame: bytes, fmt: NdFrameFormat, home_region: str) -> CallerID:
    """One complete frame (STX … ETX [BCC]) → CallerID. Raises FrameError for anything wrong."""
    if len(frame) < 2 or frame[0] != STX:
        raise FrameError("frame does not start with STX")
    end = len(frame) - (2 if fmt.bcc else 1)
    if end < 1 or frame[end] != ETX:
        raise FrameError("frame does not end with ETX")
    body = frame[1:end + 1]
    if fmt.bcc and block_check(body) != frame[-1]:
        raise FrameError(f"block check {frame[-1]:#04x}, expected {block_check(body):#04x}")
    payload = body[:-1]
    if any(b >= 0x80 or b < 0x20 for b in payload):
        raise FrameError("control or 8-bit bytes inside the frame")
    parts = payload.split(fmt.separator)
    if len(parts) != len(fmt.fields):
        raise FrameError(f"{len(parts)} fields, expected {len(fmt.fields)}")
    values: dict[str, str] = {}
    for (cid_field, width), part in zip(fmt.fields, parts, strict=True):
        if cid_field is CidField.NMBR:
            if not (len(part) == 1 and part[0] in _REASON_LETTERS) and not (
                part.isdigit() and 1 <= len(part) <= fmt.max_number_len
            ):
                raise FrameError(f"number field {part!r} is neither digits nor a reason letter")
        elif width is not None and (len(part) != width or not part.isdigit()):
            raise FrameError(f"{cid_field.value} field {part!r} is not {width} digits")
        values[cid_field.value] = part.decode("ascii")
    caller = caller_id_from_fields(values, home_region, raw_lines=(frame.hex(" "),))
    if caller.date is None or caller.time is None:
        raise FrameError(f"impossible date/time {values.get('DATE')!r} {values.get('TIME')!r}")
    return caller


class FrameReader:
    """Splits the adapter's byte stream into frames; bytes outside STX … ETX are line noise.

    ``feed`` returns complete frames (bytes, to be checked by :func:`parse_frame`)
    and FrameErrors for frames that can never complete (overlong, restarted by a
    new STX, or timed out: see :meth:`expire`).
    """

    def __init__(self, fmt: NdFrameFormat = DEFAULT_FORMAT) -> None:
        self.fmt = fmt
        self._buf = bytearray()
        self._in_frame = False
        self._need_bcc = False
        self._started_at = 0.0

    def feed(self, data: bytes, now: float) -> list[bytes | FrameError]:
        out: list[bytes | FrameError] = self.expire(now)
        for byte in data:
            if self._need_bcc:
                self._buf.append(byte)
                out.append(self._finish())
            elif byte == STX:
                if self._in_frame:
                    out.append(FrameError("frame restarted before its ETX"))
                self._buf = bytearray([STX])
                self._in_frame, self._started_at = True, now
            elif not self._in_frame:
                continue  # noise between frames (a line hit, a half-open USB-serial chip)
            else:
                self._buf.append(byte)
                if byte == ETX:
                    if self.fmt.bcc:
                        self._need_bcc = True
                    else:
                        out.append(self._finish())
                elif len(self._buf) > self.fmt.max_frame_len:
                    self._reset()
                    out.append(FrameError(f"no ETX within {self.fmt.max_frame_len} bytes"))
        return out

    def expire(self, now: float) -> list[bytes | FrameError]:
        """A frame begun more than ``frame_timeout_s`` ago and still open is broken."""
        if self._in_frame and now - self._started_at > self.fmt.frame_timeout_s:
            self._reset()
            return [FrameError("frame not finished in time")]
        return []

    def _finish(self) -> bytes:
        frame = bytes(self._buf)
        self._reset()
        return frame

    def _reset(self) -> None:
        self._buf = bytearray()
        self._in_frame = self._need_bcc = False
