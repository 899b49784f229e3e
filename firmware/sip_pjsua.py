"""The pjsua2 side of a SIP endpoint: its subclasses (callbacks, handed to the owner) and configs.

pjsua2 calls these on the endpoint's owner thread (the log writer on any pj thread). Each only
forwards to its :class:`CallbackOwner` (the :class:`firmware.sip_endpoint.SipEndpoint`), through
:func:`guarded` so that no exception unwinds into C++. The owner is a protocol here, not the
class, so that this module need not import the endpoint that imports it.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any, Protocol

import pjsua2 as pj  # type: ignore[import-untyped]

from firmware.sip_calls import Leg, Slot
from firmware.sip_media import SAMPLE_RATE
from firmware.sip_settings import SipSettings

# Under the endpoint's name, as before these classes left it: log filters and readers keep working.
log = logging.getLogger("firmware.sip_endpoint")

_QUIET_PJ_LOGS = ("RTP socket bind()", "RTCP socket bind()")  # pjsua just takes the next port
_PJ_LEVELS = {0: logging.ERROR, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}
_CODECS = ("PCMU/8000", "PCMA/8000")
# pjsua's call table: refused INVITEs (for an instant) and calls waiting for their last ACK/BYE need
# room besides the slots' caller and household legs. pjsua caps it at its build's PJSUA_MAX_CALLS,
# silently: 4 in the x86_64 wheel (measured), 32 in scripts/build_pjproject.sh's build.
_PJSUA_MAX_CALLS = 32


class CallbackOwner(Protocol):
    """What the pjsua2 callbacks call: the endpoint, on its owner thread."""

    def _on_call_state(self, call: Any, inv_state: int, code: int) -> None: ...

    def _on_dtmf(self, call: Any, digit: str) -> None: ...

    def _on_media_active(self, call: Any, media: Any) -> None: ...

    def _on_incoming(self, account: Any, prm: Any) -> None: ...

    def _on_refused_incoming(self, account: Any, prm: Any) -> None: ...

    def _on_reg_state(self, code: int, reason: str, expiration: int) -> None: ...

    def _select_account(self, prm: Any) -> None: ...


def guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """An exception must not leave a pjsua2 callback: it would unwind through C++."""

    def run(self: Any, *args: Any) -> None:
        try:
            callback(self, *args)
        except Exception:  # noqa: BLE001 -- must not unwind into pjsua2
            # Text only: a LogRecord holding exc_info would keep this Call alive past libDestroy.
            log.error("pjsua2 callback %s failed:\n%s", callback.__name__, traceback.format_exc())

    run.__name__ = callback.__name__
    return run


class SipCall(pj.Call):  # type: ignore[misc]
    """One pjsua2 call of a slot: the caller's leg, or the household phone's."""

    def __init__(self, endpoint: CallbackOwner, account: Any, call_id: int = pj.PJSUA_INVALID_ID,
                 leg: Leg = Leg.CALLER) -> None:
        super().__init__(account, call_id)
        self._endpoint = endpoint
        self.leg = leg
        self.slot: Slot | None = None
        self.holds_media = False  # counted in Admission until pjsua reports it disconnected

    @guarded
    def onCallState(self, prm: Any) -> None:
        info = self.getInfo()
        self._endpoint._on_call_state(self, info.state, info.lastStatusCode)

    @guarded
    def onDtmfDigit(self, prm: Any) -> None:
        self._endpoint._on_dtmf(self, str(prm.digit)[:1])

    @guarded
    def onCallMediaState(self, prm: Any) -> None:
        info = self.getInfo()
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status in (
                    pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                self._endpoint._on_media_active(self, self.getAudioMedia(media.index))


class PjLogWriter(pj.LogWriter):  # type: ignore[misc]
    """pjsip's own log into ours (any pj thread may call it; logging is thread-safe)."""

    @guarded
    def write(self, entry: Any) -> None:
        message = entry.msg.rstrip()
        level = logging.DEBUG if any(q in message for q in _QUIET_PJ_LOGS) else \
            _PJ_LEVELS.get(entry.level, logging.DEBUG)
        log.log(level, "pjsip: %s", message)


class CallAccount(pj.Account):  # type: ignore[misc]
    """The account calls are taken on (and, with a registrar, registered with)."""

    def __init__(self, endpoint: CallbackOwner) -> None:
        super().__init__()
        self._endpoint = endpoint

    @guarded
    def onIncomingCall(self, prm: Any) -> None:
        self._endpoint._on_incoming(self, prm)

    @guarded
    def onRegState(self, prm: Any) -> None:
        self._endpoint._on_reg_state(prm.code, prm.reason, prm.expiration)


class RefusalAccount(pj.Account):  # type: ignore[misc]
    """Where INVITEs that are not admitted go: its calls get a loopback media transport (no socket)."""

    def __init__(self, endpoint: CallbackOwner) -> None:
        super().__init__()
        self._endpoint = endpoint

    @guarded
    def onIncomingCall(self, prm: Any) -> None:
        self._endpoint._on_refused_incoming(self, prm)


class PjEndpoint(pj.Endpoint):  # type: ignore[misc]
    def __init__(self, owner: CallbackOwner) -> None:
        super().__init__()
        self._owner = owner

    @guarded
    def onSelectAccount(self, prm: Any) -> None:
        self._owner._select_account(prm)


def endpoint_config() -> Any:
    """Polled from the owner thread, pjsip's log into ours, 8 kHz, no sound card."""
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0  # we poll from this thread; no pjsua worker threads
    config.uaConfig.mainThreadOnly = False
    config.uaConfig.userAgent = "mamoru"
    # Room for the slots' caller and household legs, refused INVITEs (they take a call for an
    # instant) and answered calls waiting for an ACK or BYE that never comes; pjsua answers
    # 486 itself, before opening anything, when every call is taken.
    config.uaConfig.maxCalls = _PJSUA_MAX_CALLS
    config.logConfig.level = 2
    config.logConfig.consoleLevel = 2
    config.logConfig.decor = 0  # no timestamps or colours: logging adds its own
    config.logConfig.writer = PjLogWriter().__disown__()  # the endpoint deletes it in libDestroy
    config.medConfig.clockRate = SAMPLE_RATE
    config.medConfig.sndClockRate = SAMPLE_RATE
    config.medConfig.noVad = True
    return config


def prefer_codecs(endpoint: Any) -> None:
    """G.711 only: what the gateways speak, and no transcoding in the bridge."""
    for codec in endpoint.codecEnum2():
        endpoint.codecSetPriority(codec.codecId, 200 if codec.codecId.startswith(_CODECS) else 0)


def account_config(s: SipSettings) -> Any:
    """The account calls are taken on: registered at ``s.registrar`` when there is one."""
    config = pj.AccountConfig()
    config.mediaConfig.transportConfig.boundAddress = s.host
    if s.registrar is None:
        config.idUri = f"sip:mamoru@{s.host}:{s.port}"
        return config
    config.idUri = f"sip:{s.user}@{s.registrar}"
    config.regConfig.registrarUri = f"sip:{s.registrar}"
    config.regConfig.timeoutSec = s.register_expires_s
    # We retry ourselves (see firmware.sip_registration): pjsua's own retry can collide with the failed
    # transaction still being torn down (PJSIP_EBUSY) and then never try again.
    config.regConfig.retryIntervalSec = 0
    config.regConfig.delayBeforeRefreshSec = min(5, max(1, s.register_expires_s // 4))
    if s.password is not None:
        config.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", s.user, 0, s.password))
    return config


def refusal_config(settings: SipSettings) -> Any:
    """The socketless account refused INVITEs are taken on."""
    config = pj.AccountConfig()
    config.idUri = f"sip:refused@{settings.host}:{settings.port}"
    config.mediaConfig.useLoopMedTp = True  # no RTP/RTCP sockets for a call we refuse anyway
    return config
