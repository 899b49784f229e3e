"""Japanese fraud-event latency, live through the virtual modem in real time (Whisper, the ja pack).

A scripted caller on the virtual modem (real pty, real-time 8-bit line audio) listens to the
shipped Japanese warning, then says the commonest scam opener (tests/support/ja_speech.py:
OpenJTalk through a telephone channel, 20 dB SNR, G.711; a new noise seed per call). The
daemon's voice pipeline runs the Whisper engine (``mamoru model install ja``) and the
Japanese phrase pack, and raises the fraud event on the live (partial) hypothesis.

Measured per call, on one monotonic clock:
  * ``after_sentence_end_s``: fraud event - the moment the caller finished saying the sentence
    that holds the phrase which tipped the verdict (ground truth: the modem's answer time, the
    origin of the caller's audio, plus the script's sentence end);
  * ``after_heard_phrase_end_s``: fraud event - the moment the pipeline received the audio at
    Whisper's own estimate of where that phrase ended (``FraudEvent.audio_time_s``; an
    estimate, interpolated over a long segment's characters).
Target: the fraud event <= 3 s after the end of the phrase (issue 14).

    .venv/bin/python benchmarks/bench_flag_latency_ja.py [--calls 3] [--models-dir D] [--json-out F]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blocklist.store import Store  # noqa: E402
from firmware.audio_format import pcm16_to_u8  # noqa: E402
from firmware.dialects import CADENCE_PERIOD_S, CONEXANT_CX93001, RingCadence  # noqa: E402
from firmware.modem_line import ModemLine  # noqa: E402
from firmware.scenarios import CallScript  # noqa: E402
from firmware.virtual_modem import VirtualModem  # noqa: E402
from screening.core.model import CallState, Language, Prompt  # noqa: E402
from screening.core.rules import Policy  # noqa: E402
from screening.daemon import Daemon  # noqa: E402
from screening.session import SessionSettings  # noqa: E402
from tests.support.ja_speech import FRAUD_OPENER, SpokenScript, spoken_script  # noqa: E402
from voice.announcements import PromptLibrary  # noqa: E402
from voice.detector import PhrasePack, find_matches  # noqa: E402
from voice.pipeline import FraudEvent, VoiceCallAudio, VoiceService  # noqa: E402
from voice.whisper_engine import DEFAULT_STEP_S, WhisperEngine, resolve_whisper_dir  # noqa: E402

LISTEN_S = 1.0
STAY_AFTER_S = 12.0
TARGET_S = 3.0


class TimedVoice(VoiceService):
    """Records when each byte of caller audio reached the pipeline, and when the fraud event fired."""

    def start_call(self, call_id: int, started: Any = None) -> VoiceCallAudio:
        audio = super().start_call(call_id, started)
        self.arrivals: list[tuple[int, float]] = []  # (cumulative bytes received, monotonic time)
        original = audio.received
        total = [0]

        def received(pcm16: bytes) -> None:
            total[0] += len(pcm16)
            self.arrivals.append((total[0], time.monotonic()))
            original(pcm16)

        audio.received = received  # type: ignore[method-assign]
        return audio


def arrival(voice: TimedVoice, audio_s: float) -> float | None:
    """When the pipeline had received the caller's audio up to ``audio_s``."""
    counts = [b for b, _ in voice.arrivals]
    i = bisect.bisect_left(counts, int(audio_s * 8000) * 2)
    return voice.arrivals[i][1] if i < len(voice.arrivals) else None


def decisive_sentence_end(script: SpokenScript, pack: PhrasePack, event: FraudEvent) -> float:
    """The end of the script sentence that says the phrase which tipped the verdict.

    The tipping phrase is the event's last flag; the sentence is found by matching that phrase
    in the script's own text (ground truth). If the recogniser heard it where the script has
    none (a mishearing), the sentence holding Whisper's time for it is used.
    """
    tipping = event.detection.flags[-1].phrase
    for sentence in script.sentences:
        if any(m.phrase.text == tipping for m in find_matches(pack, sentence.text)[1]):
            return sentence.end_s
    for sentence, nxt in zip(script.sentences, [*script.sentences[1:], None], strict=True):
        if event.audio_time_s < (nxt.start_s if nxt else script.duration_s):
            return sentence.end_s
    return script.sentences[-1].end_s


def one_call(engine: Any, seed: int, tmp: Path) -> dict[str, Any]:
    prompts = PromptLibrary("ja")
    warning_s = prompts.clip_for(Prompt.WARNING).duration_s
    script = spoken_script(FRAUD_OPENER, seed=seed, lead_s=warning_s + LISTEN_S)
    store = Store(tmp / f"call-{seed}.db")
    store.open()
    pack = PhrasePack.load("ja")
    voice = TimedVoice(store=store, recordings_dir=tmp / "rec", pack=pack, model=engine)
    fired: list[tuple[float, FraudEvent]] = []
    voice.on_fraud.append(lambda event: fired.append((time.monotonic(), event)))
    modem = VirtualModem(CONEXANT_CX93001, RingCadence.JAPAN, 1.0)
    modem.start()
    line = ModemLine(str(modem.device_path), "auto", "JP", RingCadence.JAPAN,
                     ring_gap_s=1.5 * CADENCE_PERIOD_S[RingCadence.JAPAN])
    line.open()
    daemon = Daemon(line, store, Policy(), prompts, SessionSettings(call_timeout_s=600.0, voice=voice))
    stop = threading.Event()
    runner = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    runner.start()
    try:
        hang_up = script.duration_s + STAY_AFTER_S
        record = modem.wait_for_call_end(modem.place_call(CallScript(
            nmbr="0662223333", caller_audio=pcm16_to_u8(script.pcm16), hang_up_after_s=hang_up)), timeout=hang_up + 60)
        hung_up = time.monotonic()
        deadline = hung_up + 180  # a loaded machine may still be transcribing
        while time.monotonic() < deadline and not (store.recent_calls(limit=1) and store.recent_calls(
                limit=1)[0].state is CallState.COMPLETED):
            time.sleep(0.5)
        row = store.recent_calls(limit=1)[0]
    finally:
        stop.set()
        runner.join(timeout=60)
        line.close()
        modem.stop()
        store.close()
    if not fired:
        return {"seed": seed, "fraud": False, "verdict": str(row.verdict), "transcript": row.transcript}
    at, event = fired[0]
    sentence_end = decisive_sentence_end(script, pack, event)
    assert record.answered_at is not None  # the origin of the caller's audio on the line
    said_at = record.answered_at + sentence_end
    delivered_phrase_end = arrival(voice, event.audio_time_s)
    return {
        "seed": seed,
        "fraud": True,
        "during_call": at < hung_up,
        "decisive_phrase_heard_at_s": round(event.audio_time_s, 2),
        "decisive_sentence_end_s": round(sentence_end, 2),
        "tipping_phrase": event.detection.flags[-1].phrase,
        "transcript": row.transcript,
        "after_sentence_end_s": round(at - said_at, 3),
        "after_heard_phrase_end_s": None if delivered_phrase_end is None else round(at - delivered_phrase_end, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=3, help="calls, each with its own line-noise seed")
    ap.add_argument("--models-dir", type=Path,
                    default=Path(os.environ.get("MAMORU_TEST_MODELS_DIR", ROOT / ".venv" / "mamoru-models")))
    ap.add_argument("--step-s", type=float, default=DEFAULT_STEP_S, help="Whisper's live step ([voice] whisper_step_s; default 3 s)")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    engine = WhisperEngine.load(resolve_whisper_dir(None, args.models_dir), Language.JA)
    engine.step_s = args.step_s  # [voice] whisper_step_s
    tmp = Path(tempfile.mkdtemp(prefix="mamoru-flag-ja-"))
    calls = []
    for seed in range(1, args.calls + 1):
        calls.append(one_call(engine, seed, tmp))
        print(json.dumps(calls[-1], ensure_ascii=False), flush=True)
    flagged = [c for c in calls if c["fraud"] and c["during_call"] and c["after_sentence_end_s"] is not None]
    after_sentence = [c["after_sentence_end_s"] for c in flagged]
    after_phrase = [c["after_heard_phrase_end_s"] for c in flagged if c["after_heard_phrase_end_s"] is not None]
    result = {
        "calls": len(calls),
        "flagged_during_call": len(flagged),
        "after_sentence_end_s_p50": round(statistics.median(after_sentence), 3) if after_sentence else None,
        "after_sentence_end_s_max": max(after_sentence, default=None),
        "after_heard_phrase_end_s_max": max(after_phrase, default=None),
        "target_s": TARGET_S,
        "whisper_step_s": args.step_s,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "per_call": calls,
    }
    for k, v in result.items():
        if k != "per_call":
            print(f"{k:>30}: {v}")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
