"""A relative phoned during a live SIP call, who may listen to it (2) or speak into it (3).

The voice-call alert normally waits for the line to be free (``screening.line_jobs``): an
analog line does one thing at a time. A SIP upstream carries a second call while the first
is up, so here the alert call is placed *beside* the live call of a slot, as a third leg of
pjsua2's conference bridge. It is an ordinary alert until the relative presses a key:

* 1 acknowledges, as on any alert call;
* 2 (when the household allowed it) connects the caller's and the household's audio to the
  relative: they hear both sides, nobody hears them;
* 3 (when allowed) first plays "your family has joined" to both sides, then connects the
  relative's voice both ways.

The leg's own pjsua2 subclass reports to this module, not to the endpoint, so the relative's
digits never reach the call loop (which is listening to the live call on the slot's port).
Everything touching pjsua2 runs on the endpoint's owner thread via ``SipEndpoint.submit``.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pjsua2 as pj  # type: ignore[import-untyped]

from firmware.sip_calls import CallState
from firmware.sip_pjsua import guarded
from screening.core.audio import wav_bytes
from screening.core.line import AudioClip, LineError

log = logging.getLogger(__name__)

LISTEN_DIGIT = "2"
SPEAK_DIGIT = "3"
ACK_DIGIT = "1"
SUBMIT_TIMEOUT_S = 5.0
PLAY_SLACK_S = 2.0


class JoinMode(StrEnum):
    LISTEN = "listen"  # the relative hears both sides; nobody hears them
    SPEAK = "speak"  # the relative is heard too


@dataclass(frozen=True, slots=True)
class RelativeCallResult:
    answered: bool
    digits: tuple[str, ...] = ()
    joined: JoinMode | None = None
    detail: str = ""

    @property
    def acknowledged(self) -> bool:
        return self.joined is not None or ACK_DIGIT in self.digits


class RelativeLegCall(pj.Call):  # type: ignore[misc]
    """The relative's pjsua2 call; its callbacks go to its :class:`RelativeLeg` (owner thread)."""

    def __init__(self, leg: RelativeLeg, account: Any) -> None:
        super().__init__(account)
        self._leg = leg

    @guarded
    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        self._leg.on_state(info.state, info.lastStatusCode)

    @guarded
    def onDtmfDigit(self, prm: Any) -> None:
        digit = str(prm.digit)[:1]
        if digit:
            self._leg.digits.put(digit)

    @guarded
    def onCallMediaState(self, prm: Any) -> None:
        info = self.getInfo()
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self._leg.media = self.getAudioMedia(media.index)
                self._leg.media_up.set()


class RelativeLeg:
    """One relative's call beside the live call ``state`` of ``endpoint`` (a SipEndpoint).

    No I/O in the constructor; ``call`` runs the whole conversation on the calling thread
    (the alert worker), every wait bounded.
    """

    def __init__(self, endpoint: Any, state: CallState, *, allow_join: bool, ring_timeout_s: float = 45.0,
                 listen_s: float = 15.0) -> None:
        self._endpoint = endpoint
        self._state = state
        self.allow_join = allow_join
        self.ring_timeout_s = ring_timeout_s
        self.listen_s = listen_s
        self.digits: queue.Queue[str] = queue.Queue()
        self.media: Any = None
        self.media_up = threading.Event()
        self.answered = threading.Event()
        self.gone = threading.Event()
        self._call: RelativeLegCall | None = None
        self._players: list[tuple[Any, str]] = []  # (AudioMediaPlayer, its temp WAV), freed on hang-up
        self.joined: JoinMode | None = None

    # ---- pjsua2 callbacks (owner thread) ---------------------------------------------

    def on_state(self, inv_state: int, code: int) -> None:
        if inv_state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.answered.set()
        elif inv_state == pj.PJSIP_INV_STATE_DISCONNECTED:
            log.info("relative leg ended (%s)", code)
            self.media = None
            self.gone.set()

    # ---- the conversation (alert worker thread) ----------------------------------------

    def call(self, uri: str, alert: AudioClip, joined_prompt: AudioClip | None) -> RelativeCallResult:
        self._submit(lambda: self._dial(uri))
        try:
            if not _wait_any((self.answered, self.gone), self.ring_timeout_s) or self.gone.is_set():
                return RelativeCallResult(False, detail="no answer")
            if not _wait_any((self.media_up, self.gone), SUBMIT_TIMEOUT_S) or self.gone.is_set():
                return RelativeCallResult(True, detail="no audio")
            self._submit(lambda: self._play(alert, [self.media]))
            return self._converse(alert.duration_s + PLAY_SLACK_S + self.listen_s, joined_prompt)
        finally:
            if self.joined is None:  # not joined: the alert is over
                self.hang_up()

    def _converse(self, window_s: float, joined_prompt: AudioClip | None) -> RelativeCallResult:
        pressed: list[str] = []
        deadline = time.monotonic() + window_s
        while (left := deadline - time.monotonic()) > 0 and not self.gone.is_set() \
                and not self._state.gone.is_set():
            try:
                digit = self.digits.get(timeout=min(0.2, left))
            except queue.Empty:
                continue
            pressed.append(digit)
            mode = {LISTEN_DIGIT: JoinMode.LISTEN, SPEAK_DIGIT: JoinMode.SPEAK}.get(digit)
            if mode is None:
                continue
            if not self.allow_join:
                log.info("relative pressed %s; joining the call is off ([alerts] relative_can_join)", digit)
                continue
            if self._submit(lambda m=mode: self._join(m, joined_prompt)):
                self.joined = mode
                if mode is JoinMode.SPEAK:  # the household hears who joined before they hear them
                    if joined_prompt is not None:
                        _wait_any((self.gone, self._state.gone), joined_prompt.duration_s)
                    self._submit(self._speak)
                log.info("relative joined the live call to %s", mode.value)
                return RelativeCallResult(True, tuple(pressed), mode, f"joined: {mode.value}")
        detail = "the live call ended" if self._state.gone.is_set() else "no key to join"
        return RelativeCallResult(True, tuple(pressed), None, detail)

    def stay_until_either_ends(self, timeout_s: float) -> None:
        """A joined relative stays until the live call or their own call ends (bounded)."""
        _wait_any((self.gone, self._state.gone), timeout_s)
        self.hang_up()

    def hang_up(self) -> None:
        try:
            self._submit(self._hang_up)
        except LineError as exc:  # the endpoint is closing: it hangs up every call itself
            log.debug("relative leg hang-up: %s", exc)

    # ---- owner thread -------------------------------------------------------------------

    def _submit(self, fn: Any) -> Any:
        return self._endpoint.submit(fn, SUBMIT_TIMEOUT_S)

    def _dial(self, uri: str) -> None:
        account = self._endpoint.call_account()
        if account is None or self._state.gone.is_set():
            raise LineError("no live call to join or the line is closed")
        self._call = RelativeLegCall(self, account)
        try:
            self._call.makeCall(uri, pj.CallOpParam(True))
        except pj.Error as exc:
            self.gone.set()
            raise LineError(f"could not call {uri}: {exc.info()}") from None
        log.info("phoning a relative beside the live call: %s", uri)

    def _play(self, clip: AudioClip, to: list[Any]) -> None:
        """Play ``clip`` once to ``to`` through a file player of its own (the slot's port is the call loop's)."""
        fd, path = tempfile.mkstemp(prefix="mamoru-relative-", suffix=".wav")
        with os.fdopen(fd, "wb") as out:
            out.write(wav_bytes(clip.pcm16, clip.sample_rate))
        player = pj.AudioMediaPlayer()
        player.createPlayer(path, pj.PJMEDIA_FILE_NO_LOOP)
        self._players.append((player, path))
        for media in to:
            if media is not None:
                player.startTransmit(media)

    def _join(self, mode: JoinMode, joined_prompt: AudioClip | None) -> bool:
        state, relative = self._state, self.media
        if relative is None or state.gone.is_set() or state.media is None:
            return False
        household = state.household_media if state.household_up.is_set() else None
        if mode is JoinMode.SPEAK and joined_prompt is not None:
            self._play(joined_prompt, [state.media, household])
        for side in (state.media, household):  # the relative hears both sides
            if side is not None:
                side.startTransmit(relative)
        return True

    def _speak(self) -> None:
        """After the joined prompt: the relative is heard by both sides."""
        state, relative = self._state, self.media
        if relative is None or state.gone.is_set():
            return
        household = state.household_media if state.household_up.is_set() else None
        for side in (state.media, household):
            if side is not None:
                relative.startTransmit(side)

    def _hang_up(self) -> None:
        call, self._call = self._call, None
        if call is not None and not self.gone.is_set():
            try:
                call.hangup(pj.CallOpParam())
            except pj.Error as exc:
                log.debug("relative leg hang-up: %s", exc.info())
        self._endpoint.bury_later(call, *(p for p, _ in self._players))
        for _, path in self._players:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._players.clear()


def live_call_on(endpoint: Any) -> CallState | None:
    """An answered incoming call up on any slot of ``endpoint`` (a relative may be phoned beside it)."""
    for slot in endpoint.slots:
        state = slot.current
        if state is not None and not state.gone.is_set() and not state.outgoing and state.answered.is_set():
            return state
    return None


def _wait_any(events: tuple[threading.Event, ...], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if any(e.is_set() for e in events):
            return True
        events[0].wait(min(0.05, left))
    return any(e.is_set() for e in events)
