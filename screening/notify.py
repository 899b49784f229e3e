"""Sending one alert over one channel, with apprise, within a deadline.

Why one apprise plugin instance per send: an ``Apprise`` object holding every
URL reports a single bool for all of them, and the outbox needs each
channel's result separately to retry only what failed. A fresh instance also
means apprise's per-instance throttle (``request_rate_per_sec``) never delays
an alert.

Timeouts: apprise plugins take ``cto``/``rto`` (socket connect/read timeouts)
from the URL, default 4 s (15 s connect for SMTP); we lower both to the
per-send timeout, and on top run the send in a daemon thread that we wait for
at most ``timeout_s`` + a small grace — a plugin doing something slow that
the socket timeouts do not cover (DNS, TLS handshake, a retry loop) cannot
stall the dispatcher. A send that overran is reported failed and retried
later; the late thread is abandoned (its socket timeouts end it).

Secrets: URLs carry passwords and tokens. Only :func:`mask` output (apprise's
``url(privacy=True)``, query string dropped) is ever logged or stored; the
reason of a failure comes from apprise's own log records, which apprise
already writes with secrets masked.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, Protocol

from screening.core.model import Language

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
_GRACE_S = 1.0
UNPARSEABLE = "<URL apprise does not understand>"


class Level(StrEnum):
    """How alarming the message is; maps to apprise's notify types (colour/icon/priority)."""

    INFO = "info"
    WARNING = "warning"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ok: bool
    error: str | None = None
    acknowledged: bool = False  # the relative confirmed it (pressed 1 on a voice-call alert)


class Notifier(Protocol):
    """What the alert dispatcher needs; tests may pass a fake."""

    def send(self, url: str, title: str, body: str, level: Level = Level.WARNING) -> DeliveryResult: ...

    def mask(self, url: str) -> str: ...


class VoiceCaller(Protocol):
    """Phones a relative and speaks the alert: ``screening.voice_call.VoiceCallAlerter``.

    Returns a ``DeliveryResult`` or anything with ``status`` (a ``CallAlertStatus`` value) and
    ``detail``, as ``VoiceCallAlerter.call`` does; see :func:`voice_result`. It refuses at once
    while the household is on the line, and the dispatcher retries later.
    """

    def call(self, number: str, message_text: str, language: Language) -> Any: ...


def voice_result(result: Any) -> DeliveryResult:
    """A voice caller's answer as a delivery result: answered = delivered, pressed 1 = acknowledged."""
    if isinstance(result, DeliveryResult):
        return result
    status = str(getattr(result, "status", "failed"))
    detail = str(getattr(result, "detail", "") or status)
    if status == "acknowledged":
        return DeliveryResult(True, acknowledged=True)
    if status == "not_acknowledged":
        return DeliveryResult(True)
    return DeliveryResult(False, f"{status}: {detail}" if detail != status else status)


@lru_cache(maxsize=1)
def _apprise() -> Any:
    """Imported on first use: loading ~180 plugins takes a noticeable fraction of a second on a Pi."""
    import apprise

    return apprise


def _instantiate(url: str) -> Any | None:
    apprise = _apprise()
    quiet = logging.getLogger("apprise")
    was = quiet.disabled
    quiet.disabled = True  # a URL apprise cannot parse is logged verbatim, secret and all
    try:
        return apprise.Apprise.instantiate(url)
    except Exception:  # noqa: BLE001 -- a plugin's constructor may raise anything
        return None
    finally:
        quiet.disabled = was


def mask(url: str) -> str:
    """The URL as apprise shows it with secrets hidden, without the (long, default-laden) query."""
    plugin = _instantiate(url)
    if plugin is None:
        return UNPARSEABLE
    return str(plugin.url(privacy=True)).split("?", 1)[0]


class _ThreadCapture(logging.Handler):
    """Keeps apprise's warnings from one thread: apprise's send returns only a bool, the reason is logged."""

    def __init__(self, thread_id: int) -> None:
        super().__init__(logging.WARNING)
        self._thread_id = thread_id
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread_id:
            self.messages.append(record.getMessage())


class AppriseNotifier:
    """Sends with apprise, one channel at a time, each within ``timeout_s``."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    def mask(self, url: str) -> str:
        return mask(url)

    def send(self, url: str, title: str, body: str, level: Level = Level.WARNING) -> DeliveryResult:
        masked = mask(url)
        outcome: list[DeliveryResult] = []
        worker = threading.Thread(target=lambda: outcome.append(self._send_now(url, title, body, level)),
                                  name=f"apprise-send {masked}", daemon=True)  # fmt: skip
        worker.start()
        worker.join(self.timeout_s + _GRACE_S)
        if not outcome:
            log.warning("alert to %s: no answer within %.1f s", masked, self.timeout_s)
            return DeliveryResult(False, f"timed out after {self.timeout_s:g} s")
        result = outcome[0]
        if result.ok:
            log.info("alert sent to %s", masked)
        else:
            log.warning("alert to %s failed: %s", masked, result.error)
        return result

    def _send_now(self, url: str, title: str, body: str, level: Level) -> DeliveryResult:
        plugin = _instantiate(url)
        if plugin is None:
            return DeliveryResult(False, "not a notification URL apprise understands")
        for name in ("socket_connect_timeout", "socket_read_timeout"):
            if hasattr(plugin, name):
                setattr(plugin, name, min(float(getattr(plugin, name)), self.timeout_s))
        apprise = _apprise()
        capture = _ThreadCapture(threading.get_ident())
        apprise_log = logging.getLogger("apprise")
        apprise_log.addHandler(capture)
        try:
            ok = bool(plugin.notify(body=body, title=title, notify_type=apprise.NotifyType(level.value)))
        except Exception as exc:  # noqa: BLE001 -- a plugin bug is a failed delivery, not a dead dispatcher
            return DeliveryResult(False, f"{type(exc).__name__} in apprise plugin")
        finally:
            apprise_log.removeHandler(capture)
        if ok:
            return DeliveryResult(True)
        return DeliveryResult(False, "; ".join(capture.messages[-2:]) or "apprise reported failure")


ApprisNotifier = AppriseNotifier  # the name in the design brief
