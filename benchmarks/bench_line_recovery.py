"""How soon a modem line screens again: a modem plugged in late, and a stray handset state.

1. **Late modem**: ``ModemLine.open_or_retry()`` on a device path that does not
   exist yet (the daemon started before the modem was plugged in); the virtual
   modem appears after a random 0.5-12 s. Measured: the device appearing ->
   ``LineRestored`` (the line answers and screens). Bounded by the reconnect
   backoff cap (``reconnect_max_s``, 5 s by default) plus one init sequence.
2. **Stray DLE H**: two stray bytes make the line believe the handset is up;
   then a blocklisted call comes. Measured: the first RING written by the
   virtual modem -> its read of the daemon's off-hook command (the held-back
   call is acted on at the first ring).

Both on the virtual modem over a real pty, in this process.

    .venv/bin/python benchmarks/bench_line_recovery.py --late 8 --stray 20

Prints the figures and writes them as JSON (``--json-out``).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blocklist.store import Store  # noqa: E402
from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, RingCadence  # noqa: E402
from firmware.modem_line import ModemLine  # noqa: E402
from firmware.scenarios import CallScript  # noqa: E402
from firmware.virtual_modem import VirtualModem  # noqa: E402
from screening.core.line import LineRestored  # noqa: E402
from screening.core.model import ListEntry, ListKind, MatchKind  # noqa: E402
from screening.core.rules import Policy  # noqa: E402
from screening.daemon import Daemon  # noqa: E402
from screening.session import CallSettings  # noqa: E402
from voice.announcements import ToneAnnouncements  # noqa: E402

OFF_HOOK = {"AT+VLS=1", "ATA"}
SCALE = 0.25  # line seconds -> real seconds for the scripted call


def late_modem(trials: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    delays = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(trials):
            link = Path(tmp) / f"modem{n}"
            modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN)
            line = ModemLine(str(link), health_interval_s=None)
            line.open_or_retry()
            try:
                time.sleep(rng.uniform(0.5, 12.0))
                path = modem.start()
                link.symlink_to(path)
                appeared = time.monotonic()
                deadline = appeared + 30
                while (event := line.next_event(max(0.0, deadline - time.monotonic()))) is not None:
                    if isinstance(event, LineRestored):
                        delays.append(event.at - appeared)
                        break
                else:
                    raise RuntimeError("the line never came back")
            finally:
                line.close()
                modem.stop()
            print(f"  late modem {n + 1}/{trials}: screening {delays[-1]:.2f} s after it appeared", flush=True)
    return delays


def stray_handset(calls: int) -> list[float]:
    latencies = []
    with tempfile.TemporaryDirectory() as tmp:
        modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, SCALE)
        modem.start()
        store = Store(Path(tmp) / "calls.db")
        store.open()
        store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81398765432"))
        line = ModemLine(str(modem.device_path), ring_gap_s=1.5 * CADENCE_PERIOD_S[RingCadence.JAPAN] * SCALE)
        line.open()
        stop = threading.Event()
        daemon = Daemon(line, store, CallSettings(Policy(), ToneAnnouncements(), 30.0))
        thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
        thread.start()
        try:
            for _ in range(calls):
                modem.inject(b"\x10H")
                deadline = time.monotonic() + 5
                while not line.handset_off_hook() and time.monotonic() < deadline:
                    time.sleep(0.01)
                # Stray bytes come on an idle line; a ring within ring_gap/4 of a pick-up proves nothing.
                time.sleep(1.0)
                record = modem.place_call(CallScript(nmbr="0398765432", hang_up_after_s=200, max_rings=4))
                modem.wait_for_call_end(record, timeout=60)
                answer = next((t for t, c in record.commands if c.upper().replace(" ", "") in OFF_HOOK), None)
                if answer is None or record.first_ring_at is None:
                    raise RuntimeError(f"call not answered after a stray DLE H: {record.outcome}")
                latencies.append(answer - record.first_ring_at)
        finally:
            stop.set()
            thread.join(timeout=10)
            line.close()
            modem.stop()
            store.close()
    return latencies


def summary(values: list[float], unit: float, digits: int) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered) * unit, digits), "max": round(ordered[-1] * unit, digits),
            "mean": round(statistics.fmean(ordered) * unit, digits)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--late", type=int, default=8, help="late-modem trials")
    parser.add_argument("--stray", type=int, default=20, help="calls after a stray DLE H")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--json-out", type=Path, default=ROOT / "benchmarks" / "results_line_recovery.json")
    args = parser.parse_args()
    late = late_modem(args.late, args.seed)
    stray = stray_handset(args.stray)
    result = {
        "late_modem_trials": len(late),
        "late_modem_appeared_to_screening_s": summary(late, 1.0, 2),
        "reconnect_max_s": 5.0,
        "stray_dle_h_calls": len(stray),
        "stray_dle_h_first_ring_to_offhook_ms": summary(stray, 1000.0, 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))
    args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
