"""The NCID server as a feature of ``mamoru run``: settings from ``[ncid]``, the call log from the
store, each decided call from the event bus."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit

from blocklist.store import Store
from blocklist.store.rows import CallRow
from screening.config import Config
from screening.core.clock import parse_iso_utc, region_zone, utc_now
from screening.core.line import SipUpstream
from screening.core.model import Action, CallerID, Reason
from screening.events import CallDecided, EventBus
from screening.ncid.lines import NO_NAME, CallLabel, NcidCall, call_from_decision, reason_number
from screening.ncid.server import NcidServer, NcidSettings

__all__ = ["call_from_row", "ncid_settings", "refused_label", "run_ncid"]

log = logging.getLogger(__name__)


def _mamoru_version() -> str:
    try:
        return version("mamoru")
    except PackageNotFoundError:
        return "0"


def ncid_settings(cfg: Config) -> NcidSettings | None:
    """``[ncid]`` as the server's settings; None when ``listen`` is not set (the default)."""
    n = cfg.ncid
    if n.listen is None:
        return None
    return NcidSettings(host=n.listen.host, port=n.listen.port, line_id=n.line_id, replay_calls=n.replay_calls,
                        max_clients=n.max_clients, zone=region_zone(cfg.line.home_region),
                        version=_mamoru_version())  # fmt: skip


def refused_label(cfg: Config) -> CallLabel:
    """BLK where a blocked call is rejected before the phone rings (SIP hgw/trunk), else HUP."""
    sip = urlsplit(cfg.line.uri).scheme == "sip"
    return CallLabel.BLK if sip and cfg.sip.upstream in (SipUpstream.HGW, SipUpstream.TRUNK) else CallLabel.HUP


def call_from_row(row: CallRow, line_id: str, refused: CallLabel) -> NcidCall:
    """A stored call as a call-log line (what NCID's ``cidcall.log`` would hold)."""
    label = CallLabel.CID
    if row.action is Action.REQUEST_NUMBER:
        label = CallLabel.HUP
    elif row.action is Action.BLOCK:
        label = refused
    try:
        reason = Reason(row.reason_code) if row.reason_code else None
    except ValueError:
        reason = None
    number = reason_number(CallerID(raw_number=row.raw_number, reason=reason))
    return NcidCall(label, parse_iso_utc(row.started_at), line_id, number, row.name or NO_NAME)


@contextmanager
def run_ncid(cfg: Config, store: Store, bus: EventBus) -> Iterator[NcidServer | None]:
    """Serve NCID clients while screening (``[ncid] listen``); a port in use is logged, not fatal."""
    settings = ncid_settings(cfg)
    if settings is None:
        yield None
        return
    refused = refused_label(cfg)
    rows = store.recent_calls(limit=settings.replay_calls) if settings.replay_calls else []
    server = NcidServer(settings, [call_from_row(row, settings.line_id, refused) for row in reversed(rows)])
    try:
        server.start()
    except OSError as exc:  # screening matters more than the pop-ups
        log.error("NCID server not started on %s:%d: %s", settings.host, settings.port, exc)
        yield None
        return

    def announce(event: CallDecided) -> None:
        server.publish(call_from_decision(event.caller, event.decision, utc_now(), line_id=settings.line_id,
                                          refused_label=refused))

    unsubscribe = bus.subscribe(CallDecided, announce)
    try:
        yield server
    finally:
        unsubscribe()
        server.stop()
