"""``mamoru sip probe``: register (or listen) like the SIP line, catch the next INVITE, and show its
headers (redacted) with the caller-ID source and reason words mamoru would use.

The INVITE is caught through the endpoint's caller-ID hook (the same headers the line reads), then
declined with 480 once it is offered: the probe never answers. Reporting is pure and separate
(:func:`invite_report`), so it is tested on header lists as well as on a SIPp INVITE.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from firmware.sip_headers import SipHeaders
from screening.core.line import CallOffered, LineAdapter
from screening.core.model import CallerID, Reason
from screening.core.sip_callerid import caller_id_from_sip, is_trusted

__all__ = ["InviteCapture", "InviteSeen", "invite_report", "probe_sip", "redact_header"]

_IDENTITY = ("P-Asserted-Identity", "Remote-Party-ID", "From")
_REASON_WORDS = {Reason.WITHHELD: "withheld (P)", Reason.OUT_OF_AREA: "out of area (O)",
                 Reason.PAYPHONE: "payphone (C)", Reason.SERVICE_CONFLICT: "service conflict (S)"}
_DIGITS = re.compile(r"\d{4,}")
_DISPLAY = re.compile(r'^\s*"([^"]*)"|^\s*([^<"]+?)\s*<')
_SECRET_HEADERS = {"authorization", "proxy-authorization"}


@dataclass(frozen=True, slots=True)
class InviteSeen:
    headers: SipHeaders
    source_ip: str
    caller: CallerID


class InviteCapture:
    """A caller-ID function for the SIP endpoint that also keeps each INVITE's headers."""

    def __init__(self) -> None:
        self._seen: queue.Queue[InviteSeen] = queue.Queue(maxsize=16)

    def __call__(self, headers: SipHeaders, *, source_ip: str, trusted_upstreams: frozenset[str],
                 home_region: str) -> CallerID:  # fmt: skip
        caller = caller_id_from_sip(headers, source_ip=source_ip, trusted_upstreams=trusted_upstreams,
                                    home_region=home_region)  # fmt: skip
        try:
            self._seen.put_nowait(InviteSeen(list(headers), source_ip, caller))
        except queue.Full:
            pass
        return caller

    def wait(self, timeout: float) -> InviteSeen | None:
        try:
            return self._seen.get(timeout=timeout)
        except queue.Empty:
            return None


def _reason_of(name: str, value: str, home_region: str) -> Reason | None:
    """The reason word this one identity header carries on its own (believed as from the gateway)."""
    return caller_id_from_sip([(name, value)], source_ip="127.0.0.1", trusted_upstreams=("127.0.0.1",),
                              home_region=home_region).reason  # fmt: skip


def redact_header(name: str, value: str, *, keep_numbers: bool, home_region: str) -> str:
    """Digits runs of 4 or more masked; an identity header's display name masked unless it is a reason word."""
    if name.lower() in _SECRET_HEADERS:
        return "(hidden)"
    if keep_numbers:
        return value
    if name in _IDENTITY:
        match = _DISPLAY.match(value)
        display = match.group(1) or match.group(2) if match else None
        if display and _reason_of(name, f'"{display}" <sip:x@invalid>', home_region) is None:
            value = value.replace(display, re.sub(r"\w", "x", display), 1)
    return _DIGITS.sub(lambda m: "X" * len(m.group(0)), value)


def invite_report(seen: InviteSeen, *, trusted_upstreams: Iterable[str], home_region: str,
                  keep_numbers: bool = False) -> list[str]:  # fmt: skip
    """What an installer needs to know about one INVITE, one line each."""
    out = [f"INVITE from {seen.source_ip}"]
    out += [f"  {n}: {redact_header(n, v, keep_numbers=keep_numbers, home_region=home_region)}" for n, v in seen.headers]
    trusted = is_trusted(seen.source_ip, trusted_upstreams)
    present = [n for n in _IDENTITY if any(h == n for h, _ in seen.headers)]
    believed = [n for n in present if n == "From" or trusted]
    ignored = [n for n in present if n not in believed]
    out.append(f"caller-ID source: {believed[0] if believed else 'none'}"
               + (f" ({', '.join(ignored)} ignored: {seen.source_ip} is not in [sip] trusted_upstreams)"
                  if ignored else ""))  # fmt: skip
    for name, value in seen.headers:
        if name in _IDENTITY:
            reason = _reason_of(name, value, home_region)
            if reason is not None:
                out.append(f"reason word in {name}: {_REASON_WORDS[reason]}")
        elif name == "Privacy":
            out.append(f"Privacy: {value} (withheld if it says id/header/user)")
    caller = seen.caller
    if caller.reason is not None:
        result = _REASON_WORDS[caller.reason]
    elif caller.number_e164:
        result = caller.number_e164 if keep_numbers else _DIGITS.sub(lambda m: "X" * len(m.group(0)), caller.number_e164)
    else:
        result = "no caller ID"
    out.append(f"mamoru reads: {result}")
    return out


def probe_sip(line: LineAdapter, capture: InviteCapture, *, seconds: float, stop: threading.Event) -> InviteSeen | None:
    """Open ``line`` (registering if its URI says so), wait for one INVITE, decline it, close."""
    line.open()
    try:
        deadline = time.monotonic() + seconds
        seen: InviteSeen | None = None
        while seen is None and not stop.is_set() and time.monotonic() < deadline:
            seen = capture.wait(timeout=0.5)
        if seen is None:
            return None
        end = time.monotonic() + 5.0
        while time.monotonic() < end:  # the call is offered right after caller ID: decline it
            if isinstance(line.next_event(timeout=0.5), CallOffered):
                line.hang_up()
                break
        return seen
    finally:
        line.close()
