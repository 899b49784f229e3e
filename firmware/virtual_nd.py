"""The exchange's side of Japanese Number Display, for the virtual modem's ``jp_nd`` lines.

On a ``jp_nd`` line the virtual modem prints no formatted caller ID (no real
modem decodes ND). Instead, like the exchange, it sends CAR -- RING reports at
the fast cadence -- waits for the primary response (off-hook), streams the
caller ID frame as V.23 FSK in the received voice audio, and after the
terminal goes back on-hook rings normally. A terminal that never answers CAR
gets normal ringing with no caller ID after ``primary_response_timeout_s``.

This module holds the settings and builds the audio; the call state machine
stays in ``firmware/virtual_modem.py`` with the rest of the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from firmware.v23_fsk import SAMPLE_RATE, FskTx, modulate, to_u8
from screening.core.model import Reason
from screening.core.nd_frame import encode_caller

REASON_CODES = {r.value: r for r in Reason}


class NdLineOutcome(StrEnum):
    """What happened to Number Display on one emulated call."""

    SENT = "sent"  # primary response, frame sent, terminal back on-hook
    NO_PRIMARY_RESPONSE = "no_primary_response"  # CAR timed out: normal ringing, no caller ID
    NOT_SENT = "not_sent"  # call-waiting / handset off-hook: no CAR at all


@dataclass(frozen=True, slots=True)
class NdExchange:
    """How the emulated exchange runs ND (line seconds; the modem's time_scale applies)."""

    car_on_s: float = 0.5
    car_off_s: float = 0.5
    primary_response_timeout_s: float = 6.0
    fsk_delay_s: float = 0.3  # off-hook -> first mark bit
    ring_after_on_hook_s: float = 0.4  # terminal on-hook -> first normal ring
    snr_db: float | None = None  # white noise on the line (None: clean)
    tx: FskTx = field(default_factory=FskTx)  # level, baud error, frequency offset, framing
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("car_on_s", "car_off_s", "primary_response_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.fsk_delay_s < 0 or self.ring_after_on_hook_s < 0:
            raise ValueError("fsk_delay_s and ring_after_on_hook_s must be >= 0")

    @property
    def car_period_s(self) -> float:
        return self.car_on_s + self.car_off_s


def nd_frame_for(nmbr: str | None, raw_frame: bytes | None = None) -> bytes:
    """The frame the exchange sends: the script's raw frame, a reason code, or the digits."""
    if raw_frame is not None:
        return raw_frame
    if nmbr is None:
        return encode_caller(reason=Reason.OUT_OF_AREA)  # the exchange always says something
    reason = REASON_CODES.get(nmbr)
    if reason is not None:
        return encode_caller(reason=reason)
    return encode_caller(nmbr)


def nd_line_audio(frame: bytes, exchange: NdExchange) -> bytes:
    """What the terminal receives after its primary response: silence, FSK, a little silence; u8 8 kHz."""
    signal = np.concatenate([
        np.zeros(int(exchange.fsk_delay_s * SAMPLE_RATE)),
        modulate(frame, exchange.tx),
        np.zeros(SAMPLE_RATE // 10),
    ])
    if exchange.snr_db is not None:
        rng = np.random.default_rng(exchange.seed)
        noise_power = exchange.tx.amplitude**2 / 2 / 10 ** (exchange.snr_db / 10)
        signal = signal + rng.normal(0.0, np.sqrt(noise_power), len(signal))
    return to_u8(signal)
