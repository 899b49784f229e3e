"""A message the caller left (screen flow), as the call page and the call log show it.

The screen flow writes ``<recordings>/messages/message-<call>.wav`` and a MESSAGE event
whose ``path`` detail names it. The event's path is data (a tampered spool line or a bad
row could name anything), so it is served only if it resolves, links included, to a
``message-*.wav`` directly inside the messages dir.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from blocklist.store import Store
from blocklist.store.rows import CallRow, EventRow
from screening.core.clock import parse_iso_utc
from screening.core.model import EventKind, Language
from screening.message_alerts import message_event
from screening.web.call_views import TranscriptLine
from screening.web.i18n import translate

__all__ = ["MESSAGES_DIR_NAME", "MessageView", "calls_with_messages", "message_event", "message_file", "message_view"]

MESSAGES_DIR_NAME = "messages"  # under the recordings dir, as the runner gives the screen flow
_SLACK_S = 1.0  # recogniser segment starts are approximate


@dataclass(frozen=True, slots=True)
class MessageView:
    seconds_text: str  # 「12秒」
    playable: bool  # the file is there and inside the messages dir
    transcript: tuple[TranscriptLine, ...]  # the lines said after the tone, when their times are known


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def message_file(recordings_dir: Path, event: EventRow | None) -> Path | None:
    """The message's WAV if the event names an existing file inside the messages dir, else None."""
    if event is None:
        return None
    named = event.detail.get("path")
    if not isinstance(named, str) or not named.strip() or "\x00" in named:
        return None
    base = (recordings_dir / MESSAGES_DIR_NAME).resolve()
    try:
        path = (base / named).resolve()  # an absolute path replaces base: checked below like any other
    except (OSError, RuntimeError, ValueError):
        return None
    if path.parent != base or not path.name.startswith("message-") or path.suffix != ".wav":
        return None
    return path if path.is_file() else None


def message_view(row: CallRow, events: list[EventRow], lines: list[TranscriptLine], recordings_dir: Path,
                 lang: Language) -> MessageView | None:  # fmt: skip
    event = message_event(events)
    if event is None:
        return None
    seconds = _seconds(event.detail.get("seconds"))
    text = translate(lang, "calls.seconds", s=f"{seconds:.0f}") if seconds is not None else ""
    return MessageView(text, message_file(recordings_dir, event) is not None,
                       tuple(_said_after_tone(row, event, seconds, lines)))


def _said_after_tone(row: CallRow, event: EventRow, seconds: float | None,
                     lines: list[TranscriptLine]) -> list[TranscriptLine]:  # fmt: skip
    """The transcript lines of the message: the message ends the call's audio, so its start in
    audio time is the recording's length less the time from the message's end to the call's end
    (the thanks prompt) less the message's length."""
    if seconds is None or row.recording_seconds is None or not row.ended_at:
        return []
    try:
        after = (parse_iso_utc(row.ended_at) - parse_iso_utc(event.at)).total_seconds()
    except ValueError:
        return []
    start = row.recording_seconds - max(after, 0.0) - seconds - _SLACK_S
    return [line for line in lines if line.start_s is not None and line.start_s >= start]


def calls_with_messages(store: Store, call_ids: list[int]) -> set[int]:
    """Which of these calls have a message (one query per page of the log)."""
    return store.calls_with_event(EventKind.MESSAGE, call_ids)
