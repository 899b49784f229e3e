"""V.23 FSK at 1200 bit/s (mark 1300 Hz = 1, space 2100 Hz = 0), as Number Display sends it.

Both directions on 8 kHz audio in the modem's line format (unsigned 8-bit
linear, 0x80 = silence; see ``firmware/audio_format.py``):

* :func:`modulate` turns octets into continuous-phase FSK with a mark
  preamble and asynchronous framing (start bit, 8 bits LSB first, stop bits).
  The virtual modem uses it to play the exchange's part.
* :func:`demodulate` turns received audio back into octets: a quadrature FM
  discriminator (mix down to the 1700 Hz centre, low-pass, phase step per
  sample) -- level-independent by construction -- gated by signal power, then
  a UART that hunts for each start bit's edge and samples mid-bit, so a baud
  rate or timing offset is absorbed octet by octet, and an octet with a broken
  stop bit makes it resync on the next edge instead of losing the rest.

numpy only; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
BAUD = 1200.0
MARK_HZ = 1300.0
SPACE_HZ = 2100.0
CENTRE_HZ = (MARK_HZ + SPACE_HZ) / 2
U8_SILENCE = 0x80

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FskTx:
    """How the sender frames and shapes the signal (the exchange's side)."""

    preamble_mark_bits: int = 80  # ~75 mark bits before the first start bit
    stop_bits: int = 1  # stop bit(s) after each octet
    gap_mark_bits: int = 3  # extra marks between octets (4 marks in all, as exchanges usually send)
    trailing_mark_bits: int = 10
    amplitude: float = 0.5  # of full scale
    baud_error: float = 0.0  # e.g. 0.01 = 1 % fast
    frequency_offset_hz: float = 0.0
    lead_silence_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.amplitude <= 1:
            raise ValueError(f"amplitude must be in (0, 1], got {self.amplitude}")
        if self.stop_bits < 1 or self.preamble_mark_bits < 0 or self.gap_mark_bits < 0:
            raise ValueError("stop_bits must be >= 1 and mark bit counts >= 0")
        if not -0.05 < self.baud_error < 0.05:
            raise ValueError(f"baud_error must be within 5 %, got {self.baud_error}")


def frame_bits(octets: bytes, tx: FskTx = FskTx()) -> list[int]:
    """The bit sequence on the line: preamble, then per octet start, 8 data LSB first, stop/gap marks."""
    bits = [1] * tx.preamble_mark_bits
    for octet in octets:
        bits.append(0)
        bits.extend((octet >> i) & 1 for i in range(8))
        bits.extend([1] * (tx.stop_bits + tx.gap_mark_bits))
    bits.extend([1] * tx.trailing_mark_bits)
    return bits


def modulate(octets: bytes, tx: FskTx = FskTx(), rate: int = SAMPLE_RATE) -> FloatArray:
    """Continuous-phase FSK samples in [-1, 1] for ``octets``."""
    bits = np.asarray(frame_bits(octets, tx), dtype=np.int8)
    baud = BAUD * (1 + tx.baud_error)
    count = int(np.ceil(len(bits) * rate / baud))
    index = np.minimum((np.arange(count) * baud / rate).astype(np.int64), len(bits) - 1)
    freq = np.where(bits[index] == 1, MARK_HZ, SPACE_HZ) + tx.frequency_offset_hz
    phase = 2 * np.pi * np.cumsum(freq) / rate
    signal = tx.amplitude * np.sin(phase)
    lead = np.zeros(int(tx.lead_silence_s * rate))
    return np.concatenate([lead, signal])


def to_u8(samples: FloatArray) -> bytes:
    """Float samples in [-1, 1] as unsigned 8-bit linear (clipped)."""
    return np.clip(np.round(samples * 127.0) + U8_SILENCE, 0, 255).astype(np.uint8).tobytes()


def from_u8(data: bytes) -> FloatArray:
    return (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - U8_SILENCE) / 128.0


def from_pcm16(data: bytes) -> FloatArray:
    usable = len(data) - len(data) % 2
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.float64) / 32768.0


def _lowpass(cutoff_hz: float, taps: int, rate: int) -> FloatArray:
    """Windowed-sinc FIR, unity gain at DC."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff_hz / rate * n) * np.hamming(taps)
    return h / h.sum()


_BASEBAND_LP = _lowpass(800.0, 31, SAMPLE_RATE)  # keeps +-400 Hz tones and their bit-rate sidebands
_BIT_LP = np.ones(3) / 3  # smooths the discriminator over less than half a bit


@dataclass(frozen=True, slots=True)
class FskRx:
    """Receiver tuning."""

    squelch_ratio: float = 0.02  # power below this fraction of the loudest stretch is "no carrier"
    min_power: float = 1e-5  # absolute floor (8-bit silence is 0)
    stop_bits_checked: int = 1


def discriminate(samples: FloatArray, rate: int = SAMPLE_RATE) -> tuple[FloatArray, FloatArray]:
    """(instantaneous frequency minus the centre, in Hz; smoothed signal power) per sample."""
    t = np.arange(len(samples)) / rate
    mixed = samples * np.exp(-2j * np.pi * CENTRE_HZ * t)
    base = np.convolve(mixed, _BASEBAND_LP, mode="same")
    step = np.angle(base[1:] * np.conj(base[:-1]))
    freq = np.concatenate([[0.0], step]) * rate / (2 * np.pi)
    freq = np.convolve(freq, _BIT_LP, mode="same")
    power = np.convolve(np.abs(base) ** 2, np.ones(7) / 7, mode="same")
    return freq, power


def demodulate(samples: FloatArray, rx: FskRx = FskRx(), rate: int = SAMPLE_RATE) -> bytes:
    """Every asynchronous octet found in ``samples`` (8 bits each, LSB first on the line)."""
    if len(samples) < 16:
        return b""
    samples = samples - float(np.mean(samples))  # 8-bit audio may sit off-centre
    freq, power = discriminate(samples, rate)
    loud = float(np.percentile(power, 99))
    carrier = power > max(rx.min_power, rx.squelch_ratio * loud)
    # Mark (1300 Hz) is below the centre. No carrier counts as mark: the UART idles.
    soft = np.where(carrier, freq, -(SPACE_HZ - MARK_HZ) / 2)
    return _uart(soft, rate / BAUD, rx.stop_bits_checked)


def _uart(soft: FloatArray, spb: float, stop_bits: int) -> bytes:
    """Asynchronous framing on the discriminator output (< 0 = mark = 1).

    Finds each mark->space edge, checks the start bit mid-way, reads 8 bits LSB
    first and checks the stop bit(s); each bit is decided on the mean over its
    middle samples, which rides out short noise spikes. A framing error drops
    that edge and resyncs on the next one.
    """
    bits = soft < 0
    # Cumulative sum: the mean over any window in O(1).
    csum = np.concatenate([[0.0], np.cumsum(soft)])
    half = max(1, int(spb * 0.3))
    n = len(soft)

    def mark(centre: float) -> bool:
        c = int(centre)
        lo, hi = max(0, c - half), min(n, c + half + 1)
        return bool(csum[hi] - csum[lo] < 0)

    out = bytearray()
    falling = np.flatnonzero(bits[:-1] & ~bits[1:]) + 1  # where a space run begins
    frame_len = (9.5 + stop_bits) * spb
    resume = 0
    for edge in falling.tolist():
        if edge < resume:
            continue
        if edge + frame_len >= n:
            break
        if mark(edge + 0.5 * spb):  # a glitch, not a start bit
            continue
        octet = 0
        for bit in range(8):
            if mark(edge + (1.5 + bit) * spb):
                octet |= 1 << bit
        if not all(mark(edge + (9.5 + s) * spb) for s in range(stop_bits)):
            continue  # framing error: resync on the next edge
        out.append(octet)
        resume = int(edge + 9.5 * spb)  # the next start bit cannot begin before this stop bit's middle
    return bytes(out)
