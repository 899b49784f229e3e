"""SipLine: the line protocol on pjsua2, taking direct INVITEs from an adapter or trunk.

One thread owns the pjsua2 endpoint (creates it, polls it, destroys it); every other
thread talks to it through a command queue, because pjsua2 objects are not safe to
drive from several Python threads. Audio goes through ``sip_media.FramePort``.

Only one call at a time, like a landline: a second INVITE gets 486 Busy Here.

"Allow" has no phone leg yet: an allowed call is left ringing (180) until the caller
gives up or ``ring_timeout_s`` passes, then it is declined with 480 Temporarily
Unavailable. Either way the daemon sees ``RingingStopped``. Rings are emitted every
``ring_period_s`` while a call is unanswered, so a call whose caller ID is unusable is
still screened by ring count exactly as on the modem.
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import pjsua2 as pj  # type: ignore[import-untyped]

from firmware.audio_format import resample_pcm16
from firmware.sip_media import FRAME_MS, SAMPLE_RATE, FramePort
from screening.line import (
    AudioClip,
    AudioSink,
    CallOffered,
    EndReason,
    LineError,
    LineEvent,
    Ring,
    RingingStopped,
)
from screening.model import CallerID
from screening.sip_callerid import caller_id_from_sip

if TYPE_CHECKING:
    from screening.config import Config

log = logging.getLogger(__name__)

SipHeaders = list[tuple[str, str]]


class CallerIdFn(Protocol):
    def __call__(self, headers: SipHeaders, *, source_ip: str,
                 trusted_upstreams: frozenset[str], home_region: str) -> CallerID: ...


# RFC 3261 compact header forms we may see from gateways.
_COMPACT = {"f": "From", "t": "To", "i": "Call-ID", "m": "Contact", "v": "Via", "l": "Content-Length",
            "c": "Content-Type", "k": "Supported"}
_CANONICAL = {"p-asserted-identity": "P-Asserted-Identity", "remote-party-id": "Remote-Party-ID",
              "privacy": "Privacy", "from": "From"}
_CODECS = ("PCMU/8000", "PCMA/8000")
_POLL_MS = 10
_PJ_LEVELS = {0: logging.ERROR, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}
_SETTLE_S = 2 * FRAME_MS / 1000  # last frames still in the bridge after the buffer drains


def parse_sip_headers(message: str) -> SipHeaders:
    """Header (name, value) pairs of a SIP message, unfolded, compact names expanded, in order."""
    head = message.replace("\r\n", "\n").split("\n\n", 1)[0]
    lines = head.split("\n")[1:]  # skip the request line
    out: SipHeaders = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:  # folded continuation
            name, value = out[-1]
            out[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            log.debug("sip: malformed header line ignored: %r", line)
            continue
        name = name.strip()
        name = _COMPACT.get(name.lower(), name) if len(name) == 1 else _CANONICAL.get(name.lower(), name)
        out.append((name, value.strip()))
    return out


@dataclass(frozen=True, slots=True)
class SipSettings:
    host: str = "0.0.0.0"
    port: int = 5060
    trusted_upstreams: frozenset[str] = frozenset()  # source IPs whose PAI / RPID we believe
    home_region: str = "JP"
    reject_code: int = 603  # for reject(): 603 Decline, or 486 Busy Here for upstreams that retry on 603
    ring_timeout_s: float = 60.0  # an allowed call with no phone leg is declined after this
    ring_period_s: float = 3.0  # Ring events while unanswered, as a modem would see them
    start_timeout_s: float = 5.0


@dataclass(slots=True)
class _CallState:
    """One call; Events are read by any thread, ``call`` only by the owner thread."""

    call: Any
    caller: CallerID
    offered_at: float
    rings: int = 1
    answered: threading.Event = field(default_factory=threading.Event)
    media_up: threading.Event = field(default_factory=threading.Event)
    gone: threading.Event = field(default_factory=threading.Event)
    final_code: int | None = None


def _guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """An exception must not leave a pjsua2 callback: it would unwind through C++."""

    def run(self: Any, *args: Any) -> None:
        try:
            callback(self, *args)
        except Exception:  # noqa: BLE001 -- must not unwind into pjsua2
            # Text only: a LogRecord holding exc_info would keep this Call alive past libDestroy.
            log.error("pjsua2 callback %s failed:\n%s", callback.__name__, traceback.format_exc())

    run.__name__ = callback.__name__
    return run


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(self, line: SipLine, account: Any, call_id: int) -> None:
        super().__init__(account, call_id)
        self._line = line

    @_guarded
    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._line._on_disconnected(self, info.lastStatusCode)

    @_guarded
    def onCallMediaState(self, prm: Any) -> None:
        info = self.getInfo()
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self._line._on_media_active(self, self.getAudioMedia(media.index))


class _PjLog(pj.LogWriter):  # type: ignore[misc]
    """pjsip's own log into ours (any pj thread may call it; logging is thread-safe)."""

    @_guarded
    def write(self, entry: Any) -> None:
        log.log(_PJ_LEVELS.get(entry.level, logging.DEBUG), "pjsip: %s", entry.msg.rstrip())


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self, line: SipLine) -> None:
        super().__init__()
        self._line = line

    @_guarded
    def onIncomingCall(self, prm: Any) -> None:
        self._line._on_incoming(self, prm)


class SipLine:
    """A SIP trunk/adapter that sends INVITEs straight to us (no registrar)."""

    def __init__(self, settings: SipSettings, caller_id: CallerIdFn | None = None,
                 name: str | None = None) -> None:
        self.settings = settings
        self.name = name or f"sip:{settings.host}:{settings.port}"
        self._caller_id: CallerIdFn = caller_id or caller_id_from_sip
        self._events: queue.Queue[LineEvent] = queue.Queue()
        self._commands: queue.Queue[tuple[Callable[[], object], concurrent.futures.Future[object]]] = \
            queue.Queue()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._start_error: str | None = None
        self._thread: threading.Thread | None = None
        self._current: _CallState | None = None
        self._port: FramePort | None = None
        self._account: _Account | None = None
        self._dead_calls: list[Any] = []  # deleted outside pjsua2 callbacks

    # ---- lifecycle -------------------------------------------------------------

    def open(self) -> None:
        self._stop.clear()
        self._started.clear()
        self._thread = threading.Thread(target=self._run, name=f"sip-{self.settings.port}", daemon=True)
        self._thread.start()
        if not self._started.wait(self.settings.start_timeout_s):
            self._stop.set()
            raise LineError(f"{self.name}: SIP endpoint did not start in time")
        if self._start_error is not None:
            self._thread.join(timeout=5.0)
            raise LineError(f"{self.name}: {self._start_error}")
        log.info("%s: listening for INVITEs", self.name)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():
                log.error("%s: SIP thread did not stop", self.name)
            self._thread = None

    # ---- line protocol ------------------------------------------------------

    def next_event(self, timeout: float) -> LineEvent | None:
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def handset_off_hook(self) -> bool:
        return False  # no phone leg on a SIP line yet

    def answer(self, timeout: float = 5.0) -> None:
        state = self._current
        if state is None or state.gone.is_set():
            # The caller gave up between INVITE and decision; play/listen will report it.
            log.info("%s: nothing to answer, the caller already left", self.name)
            return
        self._submit(lambda: self._do_answer(state), timeout)
        if not _wait_any((state.media_up, state.gone), timeout):
            raise LineError(f"{self.name}: no audio path {timeout:.1f}s after answering")

    def play(self, clip: AudioClip, timeout: float | None = None) -> EndReason:
        state, port = self._current, self._port
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
        time.sleep(_SETTLE_S)
        return EndReason.CALLER_HUNG_UP if state.gone.is_set() else EndReason.COMPLETED

    def listen(self, seconds: float, sink: AudioSink | None = None) -> EndReason:
        state, port = self._current, self._port
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
                    return EndReason.CALLER_HUNG_UP
            return EndReason.COMPLETED
        finally:
            port.capturing = False

    def hang_up(self, timeout: float = 5.0) -> None:
        state = self._current
        if state is None or state.gone.is_set():
            return
        self._submit(lambda: self._do_hangup(state, 200 if state.answered.is_set() else 480), timeout)
        if not state.gone.wait(timeout):
            log.warning("%s: call not confirmed ended %.1fs after hang-up", self.name, timeout)

    def reject(self, code: int | None = None, timeout: float = 5.0) -> None:
        """Decline an unanswered call with a final response (default ``settings.reject_code``)."""
        status = code or self.settings.reject_code
        if not 400 <= status <= 699:
            raise ValueError(f"reject code must be a 4xx-6xx final response, not {status}")
        state = self._current
        if state is None or state.gone.is_set():
            return
        if state.answered.is_set():
            raise LineError(f"{self.name}: cannot reject an answered call")
        self._submit(lambda: self._do_hangup(state, status), timeout)
        state.gone.wait(timeout)

    # ---- owner thread ---------------------------------------------------------

    def _submit(self, fn: Callable[[], object], timeout: float) -> object:
        if self._thread is None or not self._thread.is_alive():
            raise LineError(f"{self.name}: line is not open")
        future: concurrent.futures.Future[object] = concurrent.futures.Future()
        self._commands.put((fn, future))
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            raise LineError(f"{self.name}: SIP thread did not respond in {timeout:.1f}s") from exc
        except pj.Error as exc:
            raise LineError(f"{self.name}: {exc.info()}") from exc

    def _run(self) -> None:
        endpoint = pj.Endpoint()
        try:
            endpoint.libCreate()
            self._start(endpoint)
        except pj.Error as exc:
            self._start_error = exc.info()
            self._started.set()
            endpoint.libDestroy()
            return
        self._started.set()
        try:
            while not self._stop.is_set():
                endpoint.libHandleEvents(_POLL_MS)
                self._run_commands()
                self._tick()
                self._dead_calls.clear()
        except Exception:  # noqa: BLE001 -- logged; teardown still runs
            log.error("%s: SIP thread failed:\n%s", self.name, traceback.format_exc())
        finally:
            self._shutdown(endpoint)

    def _start(self, endpoint: Any) -> None:
        config = pj.EpConfig()
        config.uaConfig.threadCnt = 0  # we poll from this thread; no pjsua worker threads
        config.uaConfig.mainThreadOnly = False
        config.uaConfig.userAgent = "mamoru"
        config.logConfig.level = 2
        config.logConfig.consoleLevel = 2
        config.logConfig.decor = 0  # no timestamps or colours: logging adds its own
        config.logConfig.writer = _PjLog().__disown__()  # the endpoint deletes it in libDestroy
        config.medConfig.clockRate = SAMPLE_RATE
        config.medConfig.sndClockRate = SAMPLE_RATE
        config.medConfig.noVad = True
        endpoint.libInit(config)
        transport = pj.TransportConfig()
        transport.port = self.settings.port
        transport.boundAddress = self.settings.host
        endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        endpoint.libStart()
        endpoint.audDevManager().setNullDev()  # the clock for the bridge; no sound card
        for codec in endpoint.codecEnum2():
            endpoint.codecSetPriority(codec.codecId, 200 if codec.codecId.startswith(_CODECS) else 0)
        self._port = FramePort()
        self._port.create("mamoru")
        account_config = pj.AccountConfig()
        account_config.idUri = f"sip:mamoru@{self.settings.host}:{self.settings.port}"
        account_config.mediaConfig.transportConfig.boundAddress = self.settings.host
        self._account = _Account(self)
        self._account.create(account_config, True)

    def _run_commands(self) -> None:
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except Exception as exc:  # noqa: BLE001 -- handed to the waiting thread
                future.set_exception(exc)

    def _tick(self) -> None:
        state = self._current
        if state is None or state.answered.is_set() or state.gone.is_set():
            return
        elapsed = time.monotonic() - state.offered_at
        if elapsed > self.settings.ring_timeout_s:
            log.info("%s: unanswered for %.0fs, declining with 480", self.name, elapsed)
            self._do_hangup(state, 480)
        elif elapsed >= state.rings * self.settings.ring_period_s:
            state.rings += 1
            self._events.put(Ring(state.rings, time.monotonic()))

    def _shutdown(self, endpoint: Any) -> None:
        state = self._current
        if state is not None and not state.gone.is_set():
            try:
                self._do_hangup(state, 200 if state.answered.is_set() else 503)
                endpoint.libHandleEvents(50)
            except pj.Error as exc:
                log.warning("%s: hang-up on close failed: %s", self.name, exc.info())
        self._current = None
        self._dead_calls.clear()
        self._account = None
        try:
            endpoint.audDevManager().setNoDev()  # stop the bridge clock before the port goes
            self._port = None
            # A pjsua2 Call freed after libDestroy aborts the process: collect any still held
            # by reference cycles (e.g. a logged exception's frames) while the library is up.
            gc.collect()
            endpoint.libDestroy()
        except pj.Error as exc:
            log.warning("%s: endpoint teardown: %s", self.name, exc.info())

    def _do_answer(self, state: _CallState) -> None:
        if state.gone.is_set():
            return
        prm = pj.CallOpParam()
        prm.statusCode = 200
        state.call.answer(prm)
        state.answered.set()

    def _do_hangup(self, state: _CallState, code: int) -> None:
        if state.gone.is_set():
            return
        prm = pj.CallOpParam()
        prm.statusCode = code
        state.call.hangup(prm)

    # ---- pjsua2 callbacks (owner thread) ------------------------------------

    def _on_incoming(self, account: Any, prm: Any) -> None:
        # Caller ID before the Call object exists: no traceback logged here can hold the call.
        caller = self._caller_from(prm.rdata.wholeMsg, prm.rdata.srcAddress)
        call = _Call(self, account, prm.callId)
        busy = self._current is not None and not self._current.gone.is_set()
        if busy:
            log.info("%s: second call while busy, 486", self.name)
            self._dead_calls.append(call)
            reply = pj.CallOpParam()
            reply.statusCode = 486
            call.hangup(reply)
            return
        ringing = pj.CallOpParam()
        ringing.statusCode = 180
        try:
            call.answer(ringing)
        except pj.Error as exc:  # the INVITE died under us (caller gone, transport error)
            log.warning("%s: could not send 180: %s", self.name, exc.info())
            self._dead_calls.append(call)
            return
        self._current = _CallState(call, caller, time.monotonic())
        now = time.monotonic()
        # Caller ID first: the daemon screens on it; the Ring is what a no-CID call is screened by.
        self._events.put(CallOffered(caller, now))
        self._events.put(Ring(1, now))

    def _caller_from(self, message: str, source: str) -> CallerID:
        headers = parse_sip_headers(message)
        source_ip = source.rsplit(":", 1)[0].strip("[]")
        try:
            caller = self._caller_id(headers, source_ip=source_ip,
                                     trusted_upstreams=self.settings.trusted_upstreams,
                                     home_region=self.settings.home_region)
        except Exception:  # noqa: BLE001 -- bad headers must not stop screening: the rings decide
            # Text only: a LogRecord holding exc_info would keep the frames (and a Call) alive.
            log.error("%s: caller ID from %s could not be read:\n%s", self.name, source_ip,
                      traceback.format_exc())
            caller = CallerID(raw_lines=tuple(f"{n}: {v}" for n, v in headers))
        log.debug("%s: INVITE from %s: %s", self.name, source_ip, caller)
        return caller

    def _on_media_active(self, call: Any, media: Any) -> None:
        state, port = self._current, self._port
        if state is None or state.call is not call or port is None:
            return
        media.startTransmit(port)
        port.startTransmit(media)
        state.media_up.set()

    def _on_disconnected(self, call: Any, code: int) -> None:
        state = self._current
        if state is None or state.call is not call:
            return
        state.final_code = code
        state.gone.set()
        self._current = None
        self._dead_calls.append(call)
        if self._port is not None:
            self._port.flush()
        log.info("%s: call ended (%s)", self.name, code)
        if not state.answered.is_set():
            self._events.put(RingingStopped(time.monotonic()))


def _wait_any(events: tuple[threading.Event, ...], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.is_set() for e in events):
            return True
        time.sleep(0.01)
    return any(e.is_set() for e in events)


def sip_line_from_uri(uri: str, cfg: Config | None = None, *, caller_id: CallerIdFn | None = None) -> SipLine:
    """``sip://HOST:PORT?trusted=IP,IP&reject=603&ring_timeout=60`` → SipLine (no I/O).

    ``home_region`` comes from ``cfg.line.home_region`` (JP without a config).
    """
    parts = urlsplit(uri)
    if parts.scheme != "sip" or not parts.hostname:
        raise ValueError(f"not a sip://HOST:PORT line: {uri!r}")
    query = dict(parse_qsl(parts.query))
    trusted = frozenset(ip.strip() for ip in query.get("trusted", "").split(",") if ip.strip())
    settings = SipSettings(host=parts.hostname, port=parts.port or 5060, trusted_upstreams=trusted,
                           home_region=cfg.line.home_region if cfg is not None else "JP",
                           reject_code=int(query.get("reject", "603")),
                           ring_timeout_s=float(query.get("ring_timeout", "60")))
    return SipLine(settings, caller_id)
