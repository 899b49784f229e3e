"""V.23 FSK: the demodulator against the modulator over noise, level, timing and frequency offsets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.v23_fsk import (
    FskTx,
    demodulate,
    frame_bits,
    from_pcm16,
    from_u8,
    modulate,
    to_u8,
)
from screening.core.model import Reason
from screening.core.nd_frame import NdParam, decode_frame, encode_caller

NUMBER_FRAME = encode_caller("0312345678")


def line(tx: FskTx, snr_db: float | None, seed: int, frame: bytes = NUMBER_FRAME) -> np.ndarray:
    """The frame as the modem hands it over: noise added, then 8-bit quantised."""
    rng = np.random.default_rng(seed)
    signal = np.concatenate([modulate(frame, tx), np.zeros(1600)])
    if snr_db is not None:
        noise_power = tx.amplitude**2 / 2 / 10 ** (snr_db / 10)
        signal = signal + rng.normal(0.0, np.sqrt(noise_power), len(signal))
    return from_u8(to_u8(signal))


def test_bits_are_framed_lsb_first_with_start_and_stop() -> None:
    bits = frame_bits(b"\x90", FskTx(preamble_mark_bits=2, stop_bits=1, gap_mark_bits=0, trailing_mark_bits=0))
    assert bits == [1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1]


def test_clean_signal_round_trips_every_octet_value() -> None:
    data = bytes(range(256))
    assert demodulate(from_u8(to_u8(modulate(data, FskTx())))) == data


@pytest.mark.parametrize("amplitude", [0.02, 0.05, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("snr_db", [30.0, 15.0, 12.0])
def test_noise_and_level_sweep(amplitude: float, snr_db: float) -> None:
    for seed in range(5):
        tx = FskTx(amplitude=amplitude, lead_silence_s=0.05 * seed)
        assert decode_frame(demodulate(line(tx, snr_db, seed))).raw == NUMBER_FRAME


@pytest.mark.parametrize("baud_error", [-0.02, -0.01, 0.01, 0.02])
@pytest.mark.parametrize("frequency_offset_hz", [-25.0, 0.0, 25.0])
def test_timing_and_frequency_offsets(baud_error: float, frequency_offset_hz: float) -> None:
    tx = FskTx(amplitude=0.3, baud_error=baud_error, frequency_offset_hz=frequency_offset_hz, lead_silence_s=0.123)
    assert decode_frame(demodulate(line(tx, 20.0, 7))).raw == NUMBER_FRAME


@pytest.mark.parametrize("stop_bits", [1, 2, 4])
def test_stop_bit_counts(stop_bits: int) -> None:
    tx = FskTx(stop_bits=stop_bits, gap_mark_bits=0)
    assert decode_frame(demodulate(line(tx, 20.0, 3))).raw == NUMBER_FRAME


def test_short_preamble_and_sample_offsets() -> None:
    for lead in range(0, 7):  # every sub-bit alignment of the first start bit
        tx = FskTx(preamble_mark_bits=20, lead_silence_s=lead / 8000)
        assert decode_frame(demodulate(line(tx, 20.0, lead))).raw == NUMBER_FRAME


def test_resyncs_after_a_noise_burst_before_the_frame() -> None:
    rng = np.random.default_rng(11)
    burst = rng.normal(0.0, 0.3, 1200)  # 150 ms of loud noise: garbage octets, framing errors
    samples = np.concatenate([burst, modulate(encode_caller(reason=Reason.PAYPHONE), FskTx(preamble_mark_bits=30))])
    message = decode_frame(demodulate(from_u8(to_u8(samples))))
    assert message.get(NdParam.ABSENCE_REASON) == b"C"


def test_a_broken_stop_bit_loses_one_octet_not_the_rest() -> None:
    data = b"\x41\x42\x43\x44"
    samples = modulate(data, FskTx(stop_bits=1, gap_mark_bits=2))
    spb = 8000 / 1200
    # Bits: 80 preamble, octet 1 at 80-89 plus 2 gap marks, octet 2 at 92-101: its stop bit (101)
    # and the first gap mark after it become space.
    first, last = int(101 * spb), int(103 * spb)
    samples[first:last] = np.sin(2 * np.pi * 2100 * np.arange(last - first) / 8000) * 0.5
    out = demodulate(from_u8(to_u8(samples)))
    assert out[:1] == b"A" and out.endswith(b"CD")
    assert b"B" not in out


def test_silence_and_noise_alone_give_no_frame() -> None:
    assert demodulate(from_u8(bytes([0x80]) * 8000)) == b""
    rng = np.random.default_rng(5)
    noise = from_u8(to_u8(rng.normal(0.0, 0.05, 8000)))
    with pytest.raises(ValueError):
        decode_frame(demodulate(noise))


def test_pcm16_input_matches_u8_input() -> None:
    samples = modulate(NUMBER_FRAME, FskTx())
    pcm16 = (np.round(samples * 32000)).astype("<i2").tobytes()
    assert decode_frame(demodulate(from_pcm16(pcm16))).raw == NUMBER_FRAME


def test_tiny_inputs() -> None:
    assert demodulate(np.zeros(0)) == b""
    assert demodulate(np.zeros(10)) == b""


@settings(max_examples=40, deadline=None)
@given(
    st.binary(min_size=1, max_size=40),
    st.floats(0.02, 1.0),
    st.floats(-0.02, 0.02),
    st.floats(-25.0, 25.0),
    st.integers(0, 7),
)
def test_round_trip_any_octets(data: bytes, amplitude: float, baud_error: float, offset_hz: float, lead: int) -> None:
    tx = FskTx(amplitude=amplitude, baud_error=baud_error, frequency_offset_hz=offset_hz, lead_silence_s=lead / 8000)
    assert demodulate(from_u8(to_u8(modulate(data, tx)))) == data
