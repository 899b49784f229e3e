"""Japanese Number Display (ND) data frames: encode, check and decode. Pure, no I/O.

What the exchange sends after the terminal's primary response, once the V.23
FSK has been turned back into octets (``firmware/v23_fsk.py``)::

    DLE SOH  0x07  DLE STX  0x40 LEN  {type len value}*  DLE ETX  CRC_lo CRC_hi

* Every octet through ETX carries 7 data bits plus an even-parity bit as its
  8th bit; the two CRC octets are plain 8-bit.
* Between ``DLE STX`` and ``DLE ETX`` an octet equal to DLE is sent twice;
  lengths count it once.
* CRC-16, reflected polynomial 0x8408, init 0, no final XOR (CRC-16/KERMIT),
  over everything after the leading ``DLE SOH``, parity bits included; sent
  LSB first, so the CRC over those octets and the two CRC octets is 0.

Parameters we use: 0x01 date/time (MMDDHHMM), 0x02 caller number (ASCII
digits), 0x04 reason for absence of number (``P``/``O``/``C``/``S``),
0x09 dialled number. The result is the same :class:`CallerID` the modem's
formatted caller ID gives, built by :func:`screening.core.callerid.caller_id_from_fields`
so that every caller-ID source follows one set of rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from screening.core.callerid import CidField, caller_id_from_fields
from screening.core.model import CallerID, Reason

DLE, SOH, STX, ETX = 0x10, 0x01, 0x02, 0x03
HEADER = 0x07  # "caller ID" frame header
MESSAGE_TYPE = 0x40  # Number Display information message
MAX_VALUE = 0x7F  # every value through ETX is 7-bit (the 8th bit is parity)


class NdParam(IntEnum):
    """Parameter types inside the ND message."""

    DATETIME = 0x01
    CALLER_NUMBER = 0x02
    ABSENCE_REASON = 0x04
    DIALLED_NUMBER = 0x09


class NdFault(StrEnum):
    """Why a received frame was refused."""

    NO_FRAME = "no_frame"  # no DLE SOH found
    TRUNCATED = "truncated"
    BAD_PARITY = "bad_parity"
    BAD_CRC = "bad_crc"
    MALFORMED = "malformed"  # framing octets or lengths wrong


class NdFrameError(ValueError):
    """A frame that must not be trusted; ``raw`` is what was received (for the log)."""

    def __init__(self, fault: NdFault, detail: str, raw: bytes) -> None:
        super().__init__(f"Number Display frame {fault.value}: {detail} [{raw.hex(' ')}]")
        self.fault = fault
        self.raw = raw


@dataclass(frozen=True, slots=True)
class NdMessage:
    """A checked frame's parameters in order (7-bit values, parity stripped)."""

    params: tuple[tuple[int, bytes], ...]
    raw: bytes  # the frame as received, DLE SOH through CRC

    def get(self, kind: int) -> bytes | None:
        for param_type, value in self.params:
            if param_type == kind:
                return value
        return None


def with_parity(value: int) -> int:
    """A 7-bit value with even parity in bit 7."""
    if not 0 <= value <= MAX_VALUE:
        raise ValueError(f"not a 7-bit value: {value:#x}")
    return value | (0x80 if value.bit_count() % 2 else 0)


def parity_ok(octet: int) -> bool:
    return octet.bit_count() % 2 == 0


def crc16(data: bytes, crc: int = 0) -> int:
    """CRC-16/KERMIT: reflected poly 0x8408, init 0, no final XOR."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def encode_message(params: Mapping[int, bytes] | tuple[tuple[int, bytes], ...]) -> bytes:
    """A complete frame (DLE SOH … CRC) carrying ``params`` (7-bit values)."""
    items = tuple(params.items()) if isinstance(params, Mapping) else tuple(params)
    body = bytearray()
    for kind, payload in items:
        body += bytes([kind, len(payload)]) + payload
    if len(body) > MAX_VALUE:
        raise ValueError(f"ND message too long: {len(body)} octets")
    content = bytes([MESSAGE_TYPE, len(body)]) + body
    if any(b > MAX_VALUE for b in content):
        raise ValueError("ND parameters must be 7-bit")
    stuffed = bytearray()
    for octet in content:
        stuffed.append(with_parity(octet))
        if octet == DLE:
            stuffed.append(with_parity(DLE))  # DLE in the data is sent twice
    checked = bytes([with_parity(HEADER), with_parity(DLE), with_parity(STX)]) + stuffed
    checked += bytes([with_parity(DLE), with_parity(ETX)])
    crc = crc16(checked)
    return bytes([with_parity(DLE), with_parity(SOH)]) + checked + bytes([crc & 0xFF, crc >> 8])


def encode_caller(number: str | None = None, reason: Reason | None = None, datetime: str | None = None) -> bytes:
    """The frame an exchange sends for a caller: digits, or a reason for their absence."""
    params: list[tuple[int, bytes]] = []
    if datetime is not None:
        params.append((NdParam.DATETIME, datetime.encode("ascii")))
    if number is not None:
        params.append((NdParam.CALLER_NUMBER, number.encode("ascii")))
    if reason is not None:
        params.append((NdParam.ABSENCE_REASON, reason.value.encode("ascii")))
    return encode_message(tuple(params))


def find_frame(octets: bytes) -> int:
    """Index of the first ``DLE SOH`` (with parity), or -1."""
    return octets.find(bytes([with_parity(DLE), with_parity(SOH)]))


def decode_frame(octets: bytes) -> NdMessage:
    """Check and parse the first frame in ``octets`` (leading noise octets are skipped).

    Raises :class:`NdFrameError`; never anything else, whatever the input.
    """
    start = find_frame(octets)
    if start < 0:
        raise NdFrameError(NdFault.NO_FRAME, "no DLE SOH", bytes(octets[:64]))
    data = bytes(octets[start:])
    pos = 2
    # Unstuff through DLE ETX, checking parity as we go.
    if len(data) < 5:
        raise NdFrameError(NdFault.TRUNCATED, "header cut short", data)
    for octet in data[2:5]:
        if not parity_ok(octet):
            raise NdFrameError(NdFault.BAD_PARITY, f"octet {octet:#04x}", data)
    if (data[2] & MAX_VALUE, data[3] & MAX_VALUE, data[4] & MAX_VALUE) != (HEADER, DLE, STX):
        raise NdFrameError(NdFault.MALFORMED, "expected header DLE STX", data)
    pos = 5
    content = bytearray()
    while True:
        if pos >= len(data):
            raise NdFrameError(NdFault.TRUNCATED, "no DLE ETX", data)
        octet = data[pos]
        if not parity_ok(octet):
            raise NdFrameError(NdFault.BAD_PARITY, f"octet {octet:#04x} at {pos}", data)
        value = octet & MAX_VALUE
        pos += 1
        if value != DLE:
            content.append(value)
            continue
        if pos >= len(data):
            raise NdFrameError(NdFault.TRUNCATED, "frame ends after DLE", data)
        follower = data[pos]
        if not parity_ok(follower):
            raise NdFrameError(NdFault.BAD_PARITY, f"octet {follower:#04x} at {pos}", data)
        pos += 1
        if follower & MAX_VALUE == DLE:
            content.append(DLE)
        elif follower & MAX_VALUE == ETX:
            break
        else:
            raise NdFrameError(NdFault.MALFORMED, f"DLE followed by {follower:#04x}", data)
    if pos + 2 > len(data):
        raise NdFrameError(NdFault.TRUNCATED, "CRC missing", data)
    frame = data[: pos + 2]
    if crc16(frame[2:]) != 0:
        raise NdFrameError(NdFault.BAD_CRC, f"CRC {frame[-2] | frame[-1] << 8:#06x} does not match", frame)
    return NdMessage(_parse_params(bytes(content), frame), frame)


def _parse_params(content: bytes, frame: bytes) -> tuple[tuple[int, bytes], ...]:
    if len(content) < 2 or content[0] != MESSAGE_TYPE:
        raise NdFrameError(NdFault.MALFORMED, "not a Number Display message", frame)
    length = content[1]
    body = content[2:]
    if length != len(body):
        raise NdFrameError(NdFault.MALFORMED, f"message length {length} but {len(body)} octets", frame)
    params: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(body):
        if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
            raise NdFrameError(NdFault.MALFORMED, f"parameter at {pos} overruns the message", frame)
        kind, size = body[pos], body[pos + 1]
        params.append((kind, body[pos + 2 : pos + 2 + size]))
        pos += 2 + size
    return tuple(params)


def caller_id_from_message(message: NdMessage, home_region: str) -> CallerID:
    """The :class:`CallerID` for a checked frame, by the same rules as a modem's block."""
    fields: dict[str, str] = {}
    number = message.get(NdParam.CALLER_NUMBER)
    reason = message.get(NdParam.ABSENCE_REASON)
    if number is not None:
        fields[CidField.NMBR] = number.decode("ascii", errors="replace")
    if reason is not None:
        fields[CidField.DDN_NMBR] = reason.decode("ascii", errors="replace")  # a reason wins over a number
    stamp = message.get(NdParam.DATETIME)
    if stamp is not None:
        fields[CidField.DATE] = stamp.decode("ascii", errors="replace")
    return caller_id_from_fields(fields, home_region, (f"ND {message.raw.hex(' ')}",))
