"""Japanese Number Display on a voice modem: time from the first CAR RING to the caller ID, and demod CPU.

Two parts:

* **Line timing**: the virtual modem (real pty, pyserial, real time: ``time_scale`` 1.0) plays a
  ``jp_nd`` line -- CAR, FSK after the primary response, then normal ringing -- and ``ModemLine``
  with the ND receiver answers it. For each call: first CAR RING -> caller ID offered to the call
  loop (``CallOffered``; the rules' ``decide`` adds ~0.15 ms, see ``bench_sip.py``), the margin
  left before the first normal ring, and the CPU the receiver spent demodulating during the call
  (it tries a decode every 0.1 s of audio so it can go on-hook as soon as the frame checks out).
* **CPU**: demodulating + checking one received window (``NdTiming.fsk_window_s`` of 8 kHz audio
  holding one frame, noise at 20 dB SNR) on one core, and the frame success rate over an SNR sweep.

    .venv/bin/python benchmarks/bench_number_display.py [--calls 5] [--frames 300] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, RingCadence  # noqa: E402
from firmware.modem_line import ModemLine  # noqa: E402
from firmware.number_display import NdTiming  # noqa: E402
from firmware.scenarios import CallScript  # noqa: E402
from firmware.v23_fsk import FskTx, demodulate, from_u8, modulate, to_u8  # noqa: E402
from firmware.virtual_modem import VirtualModem  # noqa: E402
from screening.core.line import CallOffered  # noqa: E402
from screening.core.nd_frame import NdFrameError, caller_id_from_message, decode_frame, encode_caller  # noqa: E402

RATE = 8000


def line_timing(calls: int) -> dict[str, float | int]:
    cadence = RingCadence.JAPAN_ND
    to_offer: list[float] = []
    margin: list[float] = []
    with VirtualModem(CONEXANT_CX93001, cadence, 1.0) as modem:
        line = ModemLine(str(modem.device_path), cadence=cadence, ring_gap_s=1.5 * CADENCE_PERIOD_S[cadence],
                         number_display=NdTiming(), health_interval_s=None)
        with line:
            for i in range(calls):
                record = modem.place_call(CallScript(nmbr=f"03123456{i:02d}", max_rings=1, gap_s=1.0))
                offer: CallOffered | None = None
                deadline = time.monotonic() + 30
                while offer is None and time.monotonic() < deadline:
                    event = line.next_event(0.2)
                    if isinstance(event, CallOffered):
                        offer = event
                modem.wait_for_call_end(record, 30)
                if offer is None or record.first_car_at is None or record.first_ring_at is None:
                    raise SystemExit(f"call {i}: no caller ID offered")
                to_offer.append(offer.at - record.first_car_at)
                margin.append(record.first_ring_at - offer.at)
            assert line.number_display is not None
            in_call_cpu = [a.demod_cpu_s for a in line.number_display.history()]
    return {
        "calls": calls,
        "first_car_ring_to_caller_id_s_p50": round(statistics.median(to_offer), 3),
        "first_car_ring_to_caller_id_s_max": round(max(to_offer), 3),
        "caller_id_before_first_normal_ring_s_min": round(min(margin), 3),
        # every decode tried while the audio came in (one per 0.1 s) plus the final one
        "in_call_demod_cpu_ms_max": round(max(in_call_cpu) * 1000, 2),
    }


def received_window(frame: bytes, snr_db: float, seed: int, window_s: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tx = FskTx(amplitude=0.3)
    signal = np.concatenate([np.zeros(int(0.3 * RATE)), modulate(frame, tx)])
    signal = np.concatenate([signal, np.zeros(max(0, int(window_s * RATE) - len(signal)))])
    signal = signal + rng.normal(0.0, np.sqrt(tx.amplitude**2 / 2 / 10 ** (snr_db / 10)), len(signal))
    return from_u8(to_u8(signal))


def cpu(frames: int) -> dict[str, float | int]:
    window_s = NdTiming().fsk_window_s
    frame = encode_caller("0312345678")
    audio = [received_window(frame, 20.0, seed, window_s) for seed in range(frames)]
    costs: list[float] = []
    for samples in audio:
        start = time.process_time()
        caller_id_from_message(decode_frame(demodulate(samples)), "JP")
        costs.append(time.process_time() - start)
    sweep: dict[str, float] = {}
    for snr in (20.0, 12.0, 10.0, 8.0, 6.0):
        ok = 0
        for seed in range(100):
            try:
                decode_frame(demodulate(received_window(frame, snr, 1000 + seed, window_s)))
                ok += 1
            except NdFrameError:
                pass
        sweep[f"frames_ok_at_{int(snr)}_db_snr"] = ok / 100
    return {
        "frames": frames,
        "window_s": window_s,
        "demod_cpu_ms_per_frame_p50": round(statistics.median(costs) * 1000, 2),
        "demod_cpu_ms_per_frame_max": round(max(costs) * 1000, 2),
        **sweep,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    result = {**cpu(args.frames), **line_timing(args.calls)}
    for key, value in result.items():
        print(f"{key:>42}: {value}")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
