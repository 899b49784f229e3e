"""NCID protocol lines (NCID API, Feature Set 1), pure: no sockets, no clock of its own.

A call line is ``CID: *DATE*mmddyyyy*TIME*hhmm*LINE*id*NMBR*number*MESG*NONE*NAME*name*``. A call
mamoru refused carries ``HUP:`` (answered, announced, hung up: NCID's "blacklisted call hangup")
or ``BLK:`` (refused without the phone ringing, a SIP gateway's 603), the same fields after it.
The call log replayed to a client on connect prefixes the same lines with ``CIDLOG:``,
``HUPLOG:``, ``BLKLOG:``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from enum import StrEnum

from screening.core.model import Action, CallerID, Decision, ListKind, Reason

__all__ = ["API_LINE", "CallLabel", "NcidCall", "STARTUP_END", "call_from_decision", "call_line",
           "greeting", "log_lines", "reason_number"]

API_LINE = "210 API: 1.0 Feature Set 1"
LOG_START = "254 Start of call log"
LOG_END = "250 End of call log"
LOG_NOT_SENT = "251 Call log not sent"
LOG_EMPTY = "252 Call log empty"
STARTUP_END = "300 End of connection startup"
NO_NAME = "NO NAME"
NO_NUMBER = "NO-NUMBER"
MAX_FIELD_CHARS = 64  # NCID clients show a name in one popup line; a hostile SIP display name is longer

# What NCID clients show for a call without a number (the modem's reason letters spelled out).
_REASON_NUMBERS = {Reason.WITHHELD: "PRIVATE", Reason.OUT_OF_AREA: "OUT-OF-AREA",
                   Reason.PAYPHONE: "PAYPHONE", Reason.SERVICE_CONFLICT: "-"}
# '*' separates fields and a line break ends the line: neither may come from a caller.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f*\u2028\u2029]")


class CallLabel(StrEnum):
    CID = "CID"  # offered: the phone rings or mamoru answers with a warning
    HUP = "HUP"  # refused: answered, announced, hung up
    BLK = "BLK"  # refused: rejected without ringing (SIP hgw/trunk)


@dataclass(frozen=True, slots=True)
class NcidCall:
    """One call as NCID clients see it."""

    label: CallLabel
    when: datetime  # aware
    line_id: str
    number: str
    name: str


def _field(text: str | None, empty: str) -> str:
    cleaned = _UNSAFE.sub(" ", text or "").strip()[:MAX_FIELD_CHARS].strip()
    return cleaned or empty


def call_from_decision(caller: CallerID, decision: Decision, when: datetime, *, line_id: str,
                       refused_label: CallLabel = CallLabel.HUP) -> NcidCall:  # fmt: skip
    """The NCID view of a decided call: refused calls (block, number request) get ``refused_label``."""
    refused = decision.action in (Action.BLOCK, Action.REQUEST_NUMBER)
    label = (CallLabel.HUP if decision.action is Action.REQUEST_NUMBER else refused_label) if refused else CallLabel.CID
    matched = decision.matched
    note = matched.note if matched is not None and matched.list is ListKind.ALLOW else None
    return NcidCall(label, when, line_id, reason_number(caller), caller.name or note or NO_NAME)


def reason_number(caller: CallerID) -> str:
    """The NMBR field: the number as the line sent it, or the reason there is none, spelled out."""
    if caller.raw_number:
        return caller.raw_number
    if caller.reason is not None:
        return _REASON_NUMBERS[caller.reason]
    return NO_NUMBER


def call_line(call: NcidCall, zone: tzinfo, *, log: bool = False) -> str:
    """``CID: *DATE*…*`` (or ``CIDLOG:`` … with ``log``), in the unit's local time; no line ending."""
    local = (call.when if call.when.tzinfo else call.when.replace(tzinfo=UTC)).astimezone(zone)
    label = f"{call.label.value}{'LOG' if log else ''}:"
    return (f"{label} *DATE*{local:%m%d%Y}*TIME*{local:%H%M}*LINE*{_field(call.line_id, '-')}"
            f"*NMBR*{_field(call.number, NO_NUMBER)}*MESG*NONE*NAME*{_field(call.name, NO_NAME)}*")


def greeting(version: str) -> str:
    return f"200 Server: mamoru (NCID) {_field(version, '0')}"


def log_lines(calls: list[NcidCall], zone: tzinfo, *, replay: bool) -> list[str]:
    """The call-log part of a client's start-up: 254, the log lines oldest first, 250 (or 251/252)."""
    if not replay:
        return [LOG_NOT_SENT]
    if not calls:
        return [LOG_EMPTY]
    return [LOG_START, *(call_line(call, zone, log=True) for call in calls), LOG_END]
