"""Japanese Number Display frames: byte-exact encodings, every fault, round trips."""

from __future__ import annotations

import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from screening.core.model import Reason
from screening.core.nd_frame import (
    NdFault,
    NdFrameError,
    NdParam,
    caller_id_from_message,
    crc16,
    decode_frame,
    encode_caller,
    encode_message,
)


def _reverse8(value: int) -> int:
    return int(f"{value:08b}"[::-1], 2)


def kermit_crc_reference(data: bytes) -> int:
    """CRC-16/KERMIT computed another way: bit-reversed CRC-CCITT (binascii) of bit-reversed input."""
    crc = binascii.crc_hqx(bytes(_reverse8(b) for b in data), 0)
    return int(f"{crc:016b}"[::-1], 2)


# A withheld caller (P), byte by byte: parity bit set where the 7-bit value has an odd bit count.
WITHHELD_FRAME = bytes.fromhex(
    "90 81"  # DLE SOH
    " 87"  # header 0x07 (3 bits -> parity)
    " 90 82"  # DLE STX
    " c0 03"  # message type 0x40 (parity), length 3
    " 84 81 50"  # type 0x04 (parity), length 1 (parity), 'P' 0x50 (even)
    " 90 03"  # DLE ETX
)


def test_crc_matches_the_reference_and_the_standard_check_value() -> None:
    assert crc16(b"123456789") == 0x2189  # CRC-16/KERMIT check value
    assert crc16(WITHHELD_FRAME[2:]) == kermit_crc_reference(WITHHELD_FRAME[2:])


def test_withheld_frame_is_byte_exact() -> None:
    crc = kermit_crc_reference(WITHHELD_FRAME[2:])
    assert encode_caller(reason=Reason.WITHHELD) == WITHHELD_FRAME + bytes([crc & 0xFF, crc >> 8])


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_is_byte_exact_and_decodes(reason: Reason) -> None:
    code = ord(reason.value)
    code_octet = code | (0x80 if code.bit_count() % 2 else 0)
    body = WITHHELD_FRAME[:9] + bytes([code_octet]) + WITHHELD_FRAME[10:]
    crc = kermit_crc_reference(body[2:])
    frame = encode_caller(reason=reason)
    assert frame == body + bytes([crc & 0xFF, crc >> 8])
    caller = caller_id_from_message(decode_frame(frame), "JP")
    assert caller.reason is reason and caller.raw_number is None
    assert caller.raw_lines == (f"ND {frame.hex(' ')}",)


def test_number_frame_decodes_to_e164() -> None:
    frame = encode_caller("0312345678")
    assert frame[7:9] == bytes([0x82, 0x0A])  # caller number (0x02 with parity), length 10
    assert frame[9:19] == bytes([0x30, 0x33, 0xB1, 0xB2, 0x33, 0xB4, 0x35, 0x36, 0xB7, 0xB8])
    caller = caller_id_from_message(decode_frame(b"\xff\x00" + frame + b"\xff"), "JP")
    assert caller.raw_number == "0312345678"
    assert caller.number_e164 == "+81312345678"


def test_a_reason_wins_over_a_number() -> None:
    frame = encode_message(((NdParam.CALLER_NUMBER, b"0312345678"), (NdParam.ABSENCE_REASON, b"O")))
    caller = caller_id_from_message(decode_frame(frame), "JP")
    assert caller.reason is Reason.OUT_OF_AREA and caller.raw_number is None


def test_dle_inside_the_data_is_doubled_and_undoubled() -> None:
    # A 16-digit number: its length octet is 0x10 = DLE, so it is sent twice.
    number = "0120123456789012"
    frame = encode_caller(number)
    assert frame[7:11] == bytes([0x82, 0x90, 0x90, 0x30])  # type, DLE DLE (length 16), '0'
    assert frame[5:7] == bytes([0xC0, 0x12])  # the message length counts the DLE once
    message = decode_frame(frame)
    assert message.get(NdParam.CALLER_NUMBER) == number.encode()
    assert crc16(frame[2:]) == 0


def test_a_corrupted_crc_is_refused_with_the_bytes() -> None:
    frame = bytearray(encode_caller("0312345678"))
    frame[-1] ^= 0x01
    with pytest.raises(NdFrameError) as info:
        decode_frame(bytes(frame))
    assert info.value.fault is NdFault.BAD_CRC
    assert bytes(frame).hex(" ") in str(info.value)


def test_a_flipped_data_bit_fails_parity() -> None:
    frame = bytearray(encode_caller("0312345678"))
    frame[10] ^= 0x04  # one bit of a digit: parity no longer even
    with pytest.raises(NdFrameError) as info:
        decode_frame(bytes(frame))
    assert info.value.fault is NdFault.BAD_PARITY


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        (b"", NdFault.NO_FRAME),
        (b"\x12\x34", NdFault.NO_FRAME),
        (bytes.fromhex("90 81 87"), NdFault.TRUNCATED),
        (bytes.fromhex("90 81 87 90 82 c0 03 84 81 50"), NdFault.TRUNCATED),
        (bytes.fromhex("90 81 87 90 82 c0 03 84 81 50 90 03 1e"), NdFault.TRUNCATED),
        (bytes.fromhex("90 81 87 90 81"), NdFault.MALFORMED),
    ],
)
def test_broken_frames_name_their_fault(data: bytes, fault: NdFault) -> None:
    with pytest.raises(NdFrameError) as info:
        decode_frame(data)
    assert info.value.fault is fault


def test_a_wrong_message_length_is_malformed() -> None:
    frame = bytearray(encode_caller(reason=Reason.PAYPHONE))
    frame[6] = 0x05  # claims 5 octets (even parity), has 3; fix the CRC so only the length is wrong
    crc = crc16(bytes(frame[2:-2]))
    frame[-2:] = bytes([crc & 0xFF, crc >> 8])
    with pytest.raises(NdFrameError) as info:
        decode_frame(bytes(frame))
    assert info.value.fault is NdFault.MALFORMED


seven_bit = st.binary(max_size=20).map(lambda b: bytes(x & 0x7F for x in b))
params = st.lists(st.tuples(st.integers(0, 0x7F), seven_bit), max_size=4)


@given(params)
def test_round_trip_any_parameters(items: list[tuple[int, bytes]]) -> None:
    frame = encode_message(tuple(items))
    assert crc16(frame[2:]) == 0
    assert list(decode_frame(frame).params) == items


@given(st.text("0123456789", min_size=1, max_size=20), st.sampled_from([None, *Reason]))
def test_round_trip_callers(number: str, reason: Reason | None) -> None:
    caller = caller_id_from_message(decode_frame(encode_caller(number, reason)), "JP")
    if reason is None:
        assert caller.raw_number == number
    else:
        assert caller.reason is reason


@given(st.binary(max_size=80))
def test_no_input_raises_anything_but_a_frame_error(data: bytes) -> None:
    try:
        decode_frame(data)
    except NdFrameError:
        pass
