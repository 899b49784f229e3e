"""One call's voice pipeline: record everything, transcribe the caller live, flag fraud.

The line's I/O thread only hands audio over (``received``): the recorder
appends (cheap, buffered) and the transcription worker queues it. Recognition,
detection and their store writes run on the worker's thread, so a slow model
never delays the line. Announcements we play are written to the recording but
never fed to the recogniser: our own "this call is recorded" must not count as
the caller's speech.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screening.core.audio import resample_pcm16
from screening.core.line import AudioClip, CallAudio
from screening.core.model import EventKind
from voice.adoption import recording_relpath
from voice.recorder import CallRecorder

if TYPE_CHECKING:
    from voice.asr import Segment
    from voice.detector import Detection, PhrasePack
    from voice.engine import SpeechEngine

log = logging.getLogger(__name__)

LINE_RATE = 8000
WORKER_CLOSE_TIMEOUT_S = 30.0
PARTIAL_CONTEXT_CHARS = 200  # final transcript kept in view when judging a partial hypothesis


@dataclass(frozen=True, slots=True)
class FraudEvent:
    """Raised once per call, the moment the verdict first becomes fraud."""

    call_id: int
    detection: Detection
    audio_time_s: float  # when, in the call's audio, the decisive phrase was heard
    raised_at: datetime
    transcript_excerpt: str


FraudHandler = Callable[[FraudEvent], None]


@dataclass(slots=True)
class VoiceService:
    """Shared by every call: the loaded speech model, the phrase pack, where recordings go."""

    store: Any  # blocklist.store.Store
    recordings_dir: Path | None  # None: recording disabled
    pack: PhrasePack | None  # None: no detection
    model: SpeechEngine | None  # Vosk or Whisper (voice.engine); None: no transcription, recording still happens
    on_fraud: list[FraudHandler] = field(default_factory=list)
    on_segment: list[Callable[[int, Segment], None]] = field(default_factory=list)  # benchmarks, tests
    zone: tzinfo = UTC  # recording folders are dated in the unit's local day (screening.core.clock)

    def start_call(self, call_id: int, started: datetime | None = None) -> VoiceCallAudio:
        when = (started or datetime.now(UTC)).astimezone(self.zone)
        recorder, relpath = None, None
        if self.recordings_dir is not None:
            relpath = recording_relpath(call_id, when)
            recorder = CallRecorder(self.recordings_dir / relpath, LINE_RATE)
            if recorder.open():
                # Linked now, sizes unknown: a crash leaves a row start-up repair can find.
                self.store.set_recording(call_id, relpath)
            else:
                recorder, relpath = None, None
        return VoiceCallAudio(self, call_id, recorder, relpath)


class VoiceCallAudio(CallAudio):
    """Audio of one answered call: recorded, transcribed, checked. ``received`` is the line's AudioSink."""

    def __init__(self, service: VoiceService, call_id: int, recorder: CallRecorder | None,
                 relpath: str | None) -> None:
        self._service = service
        self.call_id = call_id
        self._recorder = recorder
        self._relpath = relpath
        self._lock = threading.Lock()
        self._transcript: list[str] = []
        self._fraud_at: datetime | None = None
        self._fraud_detection: Detection | None = None  # what raised the fraud event
        self._audio_offset_s = 0.0  # received audio fed to ASR so far
        self._detector = None
        self._worker = None
        self._partial_detector = None
        if service.pack is not None:
            from voice.detector import FraudDetector, StreamingDetector

            self._detector = StreamingDetector(service.pack)
            self._partial_detector = FraudDetector(service.pack)
        if service.model is not None:
            from voice.asr import TranscriptionWorker

            # Only what the caller says is fed (``received``), never our own prompts (``played``).
            self._worker = TranscriptionWorker(service.model.transcriber(LINE_RATE), self.add_segment,
                                               on_partial=self.add_partial)

    # ---- called on the line's thread -------------------------------------------------

    def played(self, clip: AudioClip) -> None:
        """What we said goes into the recording (both voices), never into the recogniser."""
        if self._recorder is not None:
            self._recorder.write(resample_pcm16(clip.pcm16, clip.sample_rate, LINE_RATE))

    def received(self, pcm16: bytes) -> None:
        if self._recorder is not None:
            self._recorder.write(pcm16)
        if self._worker is not None:
            self._worker.feed(pcm16)

    # ---- called on the worker's thread ---------------------------------------------

    def add_segment(self, segment: Segment) -> None:
        """One final ASR segment: store it, flag it, raise the fraud event the moment it is due."""
        if not segment.text.strip():
            return
        with self._lock:
            self._transcript.append(segment.text)
        # Timed transcript: what the family page shows, with flags at their offsets.
        self._service.store.add_event(self.call_id, EventKind.TRANSCRIPT, text=segment.text,
                                      start_s=round(segment.start_s, 2), end_s=round(segment.end_s, 2))
        for handler in self._service.on_segment:
            handler(self.call_id, segment)
        if self._detector is None:
            return
        words = [(w.text, w.start_s, w.end_s) for w in segment.words]
        new_flags = self._detector.add_segment(segment.text, segment.start_s, segment.end_s, words)
        if new_flags:
            # Store what was said (readable in the call log), not the pack's pattern.
            self._service.store.add_flags(self.call_id, [(f.matched, f.category, f.start) for f in new_flags])
            log.info("call %s: flagged %s", self.call_id,
                     ", ".join(f"{f.matched!r} ({f.category}) at {f.start:.1f}s" for f in new_flags))
        detection = self._detector.detection
        if detection.verdict.value == "fraud" and self._fraud_at is None:
            self._raise_fraud(detection)

    def _raise_fraud(self, detection: Detection, audio_time: float | None = None) -> None:
        now = self._fraud_at = datetime.now(UTC)
        self._fraud_detection = detection
        if audio_time is None:
            audio_time = self._detector.fraud_since if self._detector and self._detector.fraud_since else 0.0
        event = FraudEvent(self.call_id, detection, audio_time, now, self.transcript()[-300:])
        store = self._service.store
        store.set_detection(self.call_id, detection.verdict.value, detection.score, self.transcript(), fraud_at=now)
        store.add_event(self.call_id, EventKind.FRAUD, score=detection.score, audio_time_s=audio_time,
                        phrases=[f.matched for f in detection.flags])
        log.warning("call %s: FRAUD (score %.2f): %s", self.call_id, detection.score,
                    ", ".join(sorted({f.category for f in detection.flags})))
        for handler in self._service.on_fraud:
            try:
                handler(event)
            except Exception:  # noqa: BLE001 -- one failing handler must not stop the others
                log.exception("call %s: fraud handler failed", self.call_id)

    def add_partial(self, text: str, audio_s: float) -> None:
        """The engine's running hypothesis (Vosk's partial, Whisper's live window): raise the fraud event without waiting for the utterance to end.

        Flags are stored from final segments only (their text and times are stable);
        this only decides *when* the family hears about it.
        """
        if self._partial_detector is None or self._fraud_at is not None:
            return
        detection = self._partial_detector.detect(f"{self.transcript()[-PARTIAL_CONTEXT_CHARS:]} {text}")
        if detection.verdict.value == "fraud":
            self._raise_fraud(detection, audio_s)

    def transcript(self) -> str:
        with self._lock:
            return " ".join(t for t in self._transcript if t)

    # ---- end of call -------------------------------------------------------------

    def finish(self) -> None:
        """Drain recognition, close the recording and store both. Never raises."""
        if self._worker is not None:
            try:
                for segment in self._worker.close(WORKER_CLOSE_TIMEOUT_S):
                    self.add_segment(segment)
            except Exception:  # noqa: BLE001 -- the recording and the call row matter more
                log.exception("call %s: transcription failed at the end of the call", self.call_id)
        store = self._service.store
        if self._recorder is not None:
            info = self._recorder.close()
            if info is not None and info.bytes and self._relpath:
                store.set_recording(self.call_id, self._relpath, info.bytes, info.seconds)
                store.add_event(self.call_id, EventKind.RECORDING, path=self._relpath,
                                seconds=round(info.seconds, 2))
        if self._detector is not None and (self._worker is not None or self._transcript):
            # No transcription means no verdict, not "clean".
            detection = self._detector.detection
            if self._fraud_detection is not None and detection.verdict.value != "fraud":
                # Raised on a partial hypothesis the final text no longer carries: the family was
                # alerted and retention must keep the evidence, so the call stays judged fraud.
                detection = self._fraud_detection
            store.set_detection(self.call_id, detection.verdict.value, detection.score, self.transcript(),
                                fraud_at=self._fraud_at)
            store.add_event(self.call_id, EventKind.TRANSCRIPT, final=True, verdict=detection.verdict.value, score=detection.score,
                            words=len(self.transcript().split()))
