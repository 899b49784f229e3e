"""Build the voice side of the daemon from config: prompts, model, pack, recordings, housekeeping.

Every part degrades on its own: no speech model means recording without
transcription, no recordings dir means transcription without recording, and a
broken prompt override falls back to the shipped prompt. Screening never waits
for any of them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from blocklist.store import Store
from screening.core.clock import region_zone
from screening.core.model import EventKind, Language, Prompt
from voice.adoption import adopt_orphan_recordings
from voice.announcements import PromptLibrary
from voice.engine import EngineChoice
from voice.pipeline import FraudEvent, FraudHandler, VoiceService
from voice.recorder import repair_interrupted
from voice.retention import RetentionPolicy, apply_retention

log = logging.getLogger(__name__)

SPEAKER_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    """What the voice side is built from; the composition root maps ``[voice]`` (and the line's
    region, for local times) into it, so voice never reads the app's Config."""

    language: Language
    prompts_dir: Path | None
    transcribe: bool
    model_dir: Path | None
    models_dir: Path
    household_warning: bool
    speaker_device: str | None
    home_region: str
    engine: EngineChoice = EngineChoice.AUTO
    whisper_step_s: float = 3.0  # voice.whisper_engine.DEFAULT_STEP_S


def build_prompts(settings: VoiceSettings) -> PromptLibrary:
    prompts = PromptLibrary(settings.language, settings.prompts_dir)
    for problem in prompts.check():  # also loads and caches every clip before the first call
        log.error("announcements: %s", problem)
    return prompts


def build_voice(settings: VoiceSettings, store: Store, recordings_dir: Path | None) -> VoiceService:
    """The shared voice service. Loads the speech model once (seconds, hundreds of MB)."""
    from voice.detector import PhrasePack

    pack = PhrasePack.load(settings.language)
    model = _load_model(settings) if settings.transcribe else None
    service = VoiceService(store=store, recordings_dir=recordings_dir, pack=pack, model=model,
                           zone=region_zone(settings.home_region))
    return service


def _load_model(settings: VoiceSettings):  # -> SpeechEngine | None
    try:
        from voice.asr import ModelError
        from voice.engine_choice import load_engine
    except ImportError as exc:  # the voice extra is not installed
        # Degraded, not broken: calls are screened and recorded; doctor and a health alert say what to do.
        log.warning("calls are screened and recorded but not listened to for fraud: the speech software is not "
                    "installed (%s; pip install 'mamoru[voice]')", exc)
        return None
    try:
        model = load_engine(settings.language, settings.engine, settings.model_dir, settings.models_dir,
                            whisper_step_s=settings.whisper_step_s)
    except ModelError as exc:
        log.warning("calls are screened and recorded but not listened to for fraud: %s", exc)
        return None
    log.info("speech model (%s) loaded from %s", model.kind.value, model.path)
    return model


def household_warner(settings: VoiceSettings, store: Store) -> FraudHandler | None:
    """On a fraud verdict, tell the person in the house, through their own speaker (None: not wanted).

    The composition root subscribes it to the fraud events, first, so the house hears it soonest.
    """
    if not settings.household_warning:
        return None
    prompts = PromptLibrary(settings.language, settings.prompts_dir)
    device = settings.speaker_device

    def warn(event: FraudEvent) -> None:
        def play() -> None:
            from voice.local_audio import HouseholdSpeaker, LocalAudioError

            clip = prompts.clip_for(Prompt.HOUSEHOLD_WARNING)
            try:
                HouseholdSpeaker(device).play(clip, timeout=clip.duration_s + SPEAKER_TIMEOUT_S)
            except LocalAudioError as exc:
                log.error("call %s: household warning not played: %s", event.call_id, exc)
                return
            store.add_event(event.call_id, EventKind.HOUSEHOLD_WARNING, device=device or "default")

        threading.Thread(target=play, name="household-warning", daemon=True).start()

    return warn


@dataclass(slots=True)
class RecordingHousekeeping:
    """Start-up repair of recordings cut by a crash, adoption of those whose call row was lost,
    then retention now and periodically."""

    store: Store
    recordings_dir: Path
    policy: RetentionPolicy

    def at_start(self) -> None:
        for info in repair_interrupted(self.store, self.recordings_dir):
            log.warning("repaired recording left by a crash: %s (%.1f s)", info.path, info.seconds)
        try:
            adopt_orphan_recordings(self.store, self.recordings_dir)
        except Exception:  # noqa: BLE001 -- housekeeping must never stop screening
            log.exception("could not adopt recordings without a call")
        self.run()

    def run(self) -> None:
        try:
            report = apply_retention(self.store, self.recordings_dir, self.policy, datetime.now(UTC))
        except Exception:  # noqa: BLE001 -- housekeeping must never stop screening
            log.exception("recording retention failed")
            return
        if report.deleted:
            log.info("retention: deleted %d recording(s), freed %d bytes", len(report.deleted), report.freed_bytes)
