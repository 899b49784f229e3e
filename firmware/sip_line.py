"""SipLine: the line protocol on pjsua2 -- one call slot of a :class:`SipEndpoint`.

Each SipLine is the seat of one daemon loop; the endpoint (one pjsua2 endpoint, one
owner thread) routes every INVITE to a free slot. ``sip_lines_from_uri`` builds the
``[sip] max_calls`` lines of one endpoint; a SipLine built on its own has a private
one-slot endpoint.

Beyond the modem's answer/play/listen/hang-up a SIP line can reject a call without
ringing (``reject_unanswered``, where the upstream honours it), let an allowed call
ring through to the household phone (``ring_household``) and connect a warned call
to it once the warning has played (``connect_household``): see
:class:`screening.core.line.CallRouting`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import time
import traceback
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from firmware.sip_calls import CallState, Slot
from firmware.sip_endpoint import SipEndpoint, settle_s
from firmware.sip_headers import CallerIdFn, parse_sip_headers
from firmware.sip_media import SAMPLE_RATE
from firmware.sip_settings import SipDefaults, SipSettings
from screening.core.audio import resample_pcm16
from screening.core.line import (
    AudioClip,
    AudioSink,
    CallOffered,
    DialResult,
    EndReason,
    HouseholdLegState,
    LineError,
    LineEvent,
    Ring,
    SipUpstream,
)

__all__ = ["CallerIdFn", "SipEndpoint", "SipLine", "SipSettings", "parse_sip_headers", "sip_line_from_uri",
           "sip_lines_from_uri"]

log = logging.getLogger(__name__)

PASSWORD_ENV = "MAMORU_SIP_PASSWORD"


class SipLine:
    """One call slot of a SIP endpoint, behind the line protocol."""

    def __init__(self, settings: SipSettings, caller_id: CallerIdFn | None = None, name: str | None = None, *,
                 endpoint: SipEndpoint | None = None, slot: int = 0) -> None:
        self._endpoint = endpoint or SipEndpoint(settings, caller_id, name)
        self.settings = self._endpoint.settings
        self.name = name or self._endpoint.name
        self._slot: Slot = self._endpoint.slots[slot]
        # The call this line's loop is screening: bound when its CallOffered/Ring is handed out, so
        # answer/play/hang_up never act on a newer call that took the slot after this one ended.
        self._call: CallState | None = None
        self._open = False

    @property
    def endpoint(self) -> SipEndpoint:
        return self._endpoint

    # ---- lifecycle -------------------------------------------------------------

    def open(self) -> None:
        if self._open:
            return
        self._endpoint.acquire()
        self._slot.attached = True
        self._open = True

    def close(self) -> None:
        if not self._open:
            return
        self._slot.attached = False
        self._open = False
        self._endpoint.release()

    # ---- line protocol ------------------------------------------------------

    def next_event(self, timeout: float) -> LineEvent | None:
        try:
            self._slot.in_use = False  # the loop is back: it is done with the call it acted on
            event, state = self._slot.events.get(timeout=timeout)
        except queue.Empty:
            return None
        if state is not None and isinstance(event, CallOffered | Ring):
            self._call = state
            self._slot.in_use = True
        return event

    def handset_off_hook(self) -> bool:
        return False  # the household leg is ours to place: a SIP line never answers into it

    def answer(self, timeout: float = 5.0) -> None:
        state = self._decided()
        if state is None:
            # The caller gave up between INVITE and decision; play/listen will report it.
            log.info("%s: nothing to answer, the caller already left", self.name)
            return
        self._endpoint.submit(lambda: self._endpoint.answer_call(state), timeout)
        if not _wait_any((state.media_up, state.gone), timeout):
            raise LineError(f"{self.name}: no audio path {timeout:.1f}s after answering")

    def play(self, clip: AudioClip, timeout: float | None = None) -> EndReason:
        state, port = self._call, self._slot.port
        if state is None or port is None or state.gone.is_set() or not state.media_up.is_set():
            return EndReason.CALLER_HUNG_UP
        pcm = clip.pcm16 if clip.sample_rate == SAMPLE_RATE else \
            resample_pcm16(clip.pcm16, clip.sample_rate, SAMPLE_RATE)
        deadline = time.monotonic() + (timeout if timeout is not None else clip.duration_s + 5.0)
        port.feed(pcm)
        while not port.wait_drained(0.02):
            if state.gone.is_set():
                port.flush()
                return EndReason.CALLER_HUNG_UP
            if time.monotonic() > deadline:
                port.flush()
                return EndReason.TIMEOUT
        time.sleep(settle_s())
        return EndReason.CALLER_HUNG_UP if state.gone.is_set() else EndReason.COMPLETED

    def listen(self, seconds: float, sink: AudioSink | None = None) -> EndReason:
        """Both voices (the caller's, and the household's once connected) until the call ends."""
        state, port = self._call, self._slot.port
        if state is None or port is None or state.gone.is_set():
            return EndReason.CALLER_HUNG_UP
        port.clear_received()
        port.capturing = True
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                frame = port.received(0.1)
                if frame is not None and sink is not None:
                    try:
                        sink(frame)
                    except Exception:  # noqa: BLE001 -- a recorder failure must not drop the call
                        log.error("%s: audio sink failed:\n%s", self.name, traceback.format_exc())
                if frame is None and state.gone.is_set():
                    if state.household_up.is_set() and state.household_ended.is_set():
                        return EndReason.HANDSET_ON_HOOK  # the household ended the conversation
                    return EndReason.CALLER_HUNG_UP
            return EndReason.COMPLETED
        finally:
            port.capturing = False

    def hang_up(self, timeout: float = 5.0) -> None:
        state = self._call
        if state is None or state.gone.is_set():
            return
        code = 200 if state.answered.is_set() else 480
        self._endpoint.submit(lambda: self._endpoint.hang_up_call(state, code), timeout)
        if not state.gone.wait(timeout):
            log.warning("%s: call not confirmed ended %.1fs after hang-up", self.name, timeout)

    # ---- call routing (screening.core.line.CallRouting) ----------------------------

    def reject_unanswered(self, timeout: float = 5.0) -> bool:
        """Decline without answering where that stops the call (hgw/trunk); False on an FXO adapter."""
        if not self.settings.rejects_without_ringing:
            return False
        self.reject(timeout=timeout)
        return True

    def ring_household(self, timeout: float = 5.0) -> bool:
        """An allowed call: 180 Ringing, and the household phone rings (True) if one is configured."""
        state = self._decided()
        if state is None:
            return False

        def ring() -> bool:
            self._endpoint.ring_call(state)
            return self._endpoint.call_household(state, answer_caller=True)

        return bool(self._endpoint.submit(ring, timeout))

    def connect_household(self, timeout: float = 5.0) -> bool:
        """A warned, answered call: ring the household phone and join it to the call when picked up."""
        state = self._call
        if state is None or state.gone.is_set() or self.settings.household is None:
            return False
        return bool(self._endpoint.submit(lambda: self._endpoint.call_household(state, answer_caller=False),
                                          timeout))

    # ---- screening: the household leg alone (screening.core.line.HouseholdLeg) -------------

    def ring_household_leg(self, timeout: float = 5.0) -> bool:
        """Ring the household phone for a screened caller; it is not joined to the caller when picked up."""
        state = self._call
        if state is None or state.gone.is_set() or self.settings.household is None:
            return False
        state.household_key.clear()
        return bool(self._endpoint.submit(
            lambda: self._endpoint.call_household(state, answer_caller=False, screening=True), timeout))

    def household_state(self) -> HouseholdLegState:
        state = self._call
        if state is None:
            return HouseholdLegState.NONE
        if state.household_ended.is_set():
            return HouseholdLegState.ENDED
        if state.household_up.is_set():
            return HouseholdLegState.PICKED_UP
        if state.household_rung_at is not None:
            return HouseholdLegState.RINGING
        return HouseholdLegState.NONE

    def play_to_household(self, clip: AudioClip, timeout: float | None = None) -> EndReason:
        """Our prompts go to the household leg alone while it is apart from the caller; a key from the
        household cuts the clip short (COMPLETED: it has heard enough)."""
        state, port = self._call, self._slot.port
        if state is None or port is None or state.gone.is_set():
            return EndReason.CALLER_HUNG_UP
        if self.household_state() is not HouseholdLegState.PICKED_UP or not state.screening:
            return EndReason.HANDSET_ON_HOOK
        pcm = clip.pcm16 if clip.sample_rate == SAMPLE_RATE else \
            resample_pcm16(clip.pcm16, clip.sample_rate, SAMPLE_RATE)
        deadline = time.monotonic() + (timeout if timeout is not None else clip.duration_s + 5.0)
        state.household_key.clear()  # keys before this clip are queued for the flow already
        port.feed(pcm)
        while not port.wait_drained(0.02):
            if state.household_key.is_set():  # answered while listening: the rest is not needed
                port.flush()
                return EndReason.COMPLETED
            if state.gone.is_set() or state.household_ended.is_set():
                port.flush()
                return EndReason.CALLER_HUNG_UP if state.gone.is_set() else EndReason.HANDSET_ON_HOOK
            if time.monotonic() > deadline:
                port.flush()
                return EndReason.TIMEOUT
        time.sleep(settle_s())
        return EndReason.COMPLETED

    def join_household(self, timeout: float = 5.0) -> bool:
        state = self._call
        if state is None or state.gone.is_set():
            return False
        return bool(self._endpoint.submit(lambda: self._endpoint.join_household(state), timeout))

    def drop_household(self, timeout: float = 5.0) -> None:
        state = self._call
        if state is None or state.household is None or state.household_ended.is_set():
            return
        self._endpoint.submit(lambda: self._endpoint.drop_household(state), timeout)
        if not state.household_ended.wait(timeout):
            log.warning("%s: household leg not confirmed ended %.1fs after hang-up", self.name, timeout)

    def can_dial(self) -> bool:
        """Whether calls can be placed at all (``[sip] outbound``, or registered with a registrar)."""
        return self.settings.outbound_uri("0") is not None

    def dial(self, number: str, timeout: float) -> DialResult:
        """Phone ``number`` (digits) through the upstream; ANSWERED when the far end picked up.

        The call goes to ``[sip] outbound`` or, when registered, to the registrar. Afterwards
        play/listen/hang_up work on it as on an answered call; digits arrive as Dtmf events.
        """
        digits = "".join(ch for ch in number if ch.isdigit() or ch in "*#")
        uri = self.settings.outbound_uri(digits) if digits else None
        if uri is None:
            log.error("%s: cannot place a call: no [sip] outbound and not registered", self.name)
            return DialResult.FAILED
        if self._slot.busy():
            return DialResult.NO_DIALTONE
        state = self._endpoint.submit(lambda: self._endpoint.place_call(self._slot, uri), 5.0)
        assert isinstance(state, CallState)
        self._call = state
        if not _wait_any((state.answered, state.gone), timeout):
            self.hang_up()
            return DialResult.NO_ANSWER
        if state.answered.is_set() and not state.gone.is_set():
            if not _wait_any((state.media_up, state.gone), 5.0) or state.gone.is_set():
                return DialResult.FAILED
            return DialResult.ANSWERED
        code = state.final_code or 0
        if code in (486, 600):
            return DialResult.BUSY
        if code in (408, 480, 487) or 300 <= code < 400:
            return DialResult.NO_ANSWER
        return DialResult.FAILED

    def reject(self, code: int | None = None, timeout: float = 5.0) -> None:
        """Decline an unanswered call with a final response (default ``settings.reject_code``)."""
        status = code or self.settings.reject_code
        if not 400 <= status <= 699:
            raise ValueError(f"reject code must be a 4xx-6xx final response, not {status}")
        state = self._decided()
        if state is None:
            return
        if state.answered.is_set():
            raise LineError(f"{self.name}: cannot reject an answered call")
        self._endpoint.submit(lambda: self._endpoint.hang_up_call(state, status), timeout)
        state.gone.wait(timeout)

    def live_call(self) -> CallState | None:
        """The answered call this slot is on now, if any (a relative may be phoned beside it)."""
        state = self._slot.current
        if state is None or state.gone.is_set() or state.outgoing or not state.answered.is_set():
            return None
        return state

    def _decided(self) -> CallState | None:
        """This loop's call, marked as decided (no more Ring events); None if the caller left."""
        state = self._call
        if state is None or state.gone.is_set():
            return None
        state.decided = True
        return state


def _wait_any(events: tuple, timeout: float) -> bool:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.is_set() for e in events):
            return True
        time.sleep(0.01)
    return any(e.is_set() for e in events)


_QUERY_KEYS = ("trusted", "reject", "ring_timeout", "upstream", "household", "max_calls", "bind", "expires", "retry",
               "outbound")


def sip_settings_from_uri(uri: str, defaults: SipDefaults | None = None,
                          env: dict[str, str] | None = None) -> SipSettings:
    """``sip://HOST:PORT`` (take INVITEs) or ``sip://USER@REGISTRAR[:PORT]`` (register) → settings.

    ``[sip]`` gives the defaults; the URI's query (``trusted``, ``reject``, ``ring_timeout``,
    ``upstream``, ``household``, ``max_calls``, ``bind``, ``expires``, ``retry``) overrides them.
    The registration password comes from ``$MAMORU_SIP_PASSWORD`` or ``[sip] password_file``,
    never from the URI (it would show in ``ps`` and in logs).
    """
    parts = urlsplit(uri)
    if parts.scheme != "sip" or not parts.hostname:
        raise ValueError(f"not a sip://HOST:PORT line: {uri!r}")
    if parts.password is not None:
        raise ValueError("put the SIP password in [sip] password_file or $MAMORU_SIP_PASSWORD, not in the URI")
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - set(_QUERY_KEYS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} in {uri!r} (known: {', '.join(_QUERY_KEYS)})")
    sip = defaults
    env = dict(os.environ) if env is None else env

    def number(key: str, default: float, kind: type = float) -> float:
        try:
            return kind(query[key]) if key in query else default
        except ValueError:
            raise ValueError(f"{key} must be a number in {uri!r}") from None

    trusted = frozenset(ip.strip() for ip in query["trusted"].split(",") if ip.strip()) if "trusted" in query \
        else frozenset(sip.trusted_upstreams if sip else ())
    try:
        upstream = SipUpstream(query.get("upstream", sip.upstream.value if sip else "fxo"))
    except ValueError:
        raise ValueError(f"upstream must be one of {', '.join(u.value for u in SipUpstream)} in {uri!r}") from None
    host, port = parts.hostname, parts.port or 5060
    registrar = user = password = None
    if parts.username:  # register as an extension: the URI's host is the registrar
        user = unquote(parts.username)
        registrar = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
        bind = query.get("bind", "0.0.0.0:5060")
        bind_host, _, bind_port = bind.rpartition(":")
        if not bind_host or not bind_port.isdigit():
            raise ValueError(f"bind must be HOST:PORT in {uri!r}")
        host, port = bind_host.strip("[]"), int(bind_port)
        password = env.get(PASSWORD_ENV)
        if password is None and sip is not None and sip.password_file is not None:
            password = _read_secret(Path(sip.password_file))
        if not trusted and _is_ip(parts.hostname):
            trusted = frozenset({parts.hostname})  # the registrar relays the calls: believe its PAI
    elif sip is not None and sip.user:
        user = sip.user
    reject = int(number("reject", sip.reject_code if sip else 603, int))
    if not 400 <= reject <= 699:
        raise ValueError(f"reject must be a 4xx-6xx response code in {uri!r}")
    return SipSettings(
        host=host, port=port, trusted_upstreams=trusted,
        home_region=sip.home_region if sip else "JP",
        upstream=upstream, reject_code=reject,
        ring_timeout_s=number("ring_timeout", float(sip.ring_timeout_s) if sip else 60.0),
        max_calls=max(1, int(number("max_calls", sip.max_calls if sip else 1, int))),
        household=query.get("household", sip.household if sip else None) or None,
        registrar=registrar, user=user, password=password,
        register_expires_s=int(number("expires", sip.register_expires_s if sip else 300, int)),
        register_retry_s=max(1, int(number("retry", 30, int))),
        outbound=query.get("outbound", sip.outbound if sip else None) or None,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _read_secret(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the SIP password file {path}: {exc.strerror or exc}") from None
    secret = text.strip("\r\n")
    if not secret:
        raise ValueError(f"the SIP password file {path} is empty")
    return secret


def sip_lines_from_uri(uri: str, defaults: SipDefaults | None = None, *, caller_id: CallerIdFn | None = None,
                       env: dict[str, str] | None = None) -> list[SipLine]:
    """The ``max_calls`` lines (slots) of one endpoint; no I/O until a line is opened."""
    settings = sip_settings_from_uri(uri, defaults, env)
    endpoint = SipEndpoint(settings, caller_id, name=f"sip:{settings.host}:{settings.port}")
    return [SipLine(settings, endpoint=endpoint, slot=i) for i in range(len(endpoint.slots))]


def sip_line_from_uri(uri: str, defaults: SipDefaults | None = None, *,
                      caller_id: CallerIdFn | None = None) -> SipLine:
    """The first line of ``sip_lines_from_uri`` (one call at a time unless more lines are opened)."""
    return sip_lines_from_uri(uri, defaults, caller_id=caller_id)[0]
