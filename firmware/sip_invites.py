"""InviteDesk: a SIP endpoint's incoming INVITEs, admitted to a call slot or refused.

Owned by a :class:`firmware.sip_endpoint.SipEndpoint` and run on its owner thread only (pjsua2
must be driven by that one thread). It picks the account an INVITE goes to before pjsua opens
its media sockets, hands an admitted call to a free slot, refuses the rest, and counts the
calls holding media sockets in the endpoint's :class:`Admission`.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

import pjsua2 as pj  # type: ignore[import-untyped]

from firmware.sip_admission import Admission, Refusal
from firmware.sip_calls import CallState, Slot
from firmware.sip_headers import CallerIdFn, parse_sip_headers
from firmware.sip_pjsua import CallbackOwner, SipCall
from firmware.sip_settings import SipSettings
from screening.core.line import CallOffered, Ring
from screening.core.model import CallerID

# Under the endpoint's name, as before this left it: log filters, readers and tests keep working.
log = logging.getLogger("firmware.sip_endpoint")


class InviteDesk:
    """Admission and refusal of incoming INVITEs, and the count of calls holding media sockets."""

    def __init__(self, owner: CallbackOwner, name: str, settings: SipSettings, slots: list[Slot],
                 admission: Admission, caller_id: CallerIdFn, *, dead_calls: list[Any],
                 lingering: dict[int, tuple[Any, str | None]], bury: Callable[[], None]) -> None:
        self._owner = owner  # the endpoint: the pjsua2 callbacks of the calls made here go to it
        self._name = name
        self._settings = settings
        self._slots = slots
        self._admission = admission
        self._caller_id = caller_id
        # The endpoint's, shared (never rebound): pjsua2 objects to free, calls we let go.
        self._dead_calls = dead_calls
        self._lingering = lingering
        self._bury = bury
        self._refusal: Refusal | None = None  # the last selected INVITE's, for on_refused_incoming
        self._admitted: tuple[str, CallerID] | None = None  # its key and caller, until it becomes a call
        self._refusal_logged_at: dict[Refusal, float] = {}

    def select_account(self, prm: Any, account: Any, refusals: Any) -> None:
        """pjsua's account choice for a new request: an INVITE we refuse goes to the socketless one.

        This runs before pjsua opens the call's media sockets, the only place it can be refused
        without them (see ``firmware/sip_admission.py``).
        """
        self._refusal = None
        self._bury()  # pjsua has picked this INVITE's call id but not yet made the call active
        message = prm.rdata.wholeMsg
        if account is None or refusals is None or not message.startswith("INVITE "):
            return  # only an INVITE opens media; pjsua's choice stands
        source_ip = prm.rdata.srcAddress.rsplit(":", 1)[0].strip("[]")
        now = time.monotonic()
        key: str | None = None
        caller = CallerID()
        if self._admission.refuses_source(source_ip):
            # Only the gateway/adapter sends us calls: anyone else on the network could claim the
            # family's number (From is the caller's word) and ring straight through.
            refusal: Refusal | None = self._admission.refuse_source()
        else:
            # Caller ID before the Call object exists: no traceback logged here can hold the call.
            caller = self._caller_from(message, prm.rdata.srcAddress)
            key = self._admission.key_for(source_ip, caller.number_e164 or caller.raw_number)
            slot_free = any(s.attached and not s.busy() for s in self._slots)
            held = sum(1 for s in self._slots
                       if s.current is not None and not s.current.gone.is_set() and s.last_key == key)
            held += sum(1 for _, k in self._lingering.values() if k == key)
            holds = held >= self._admission.slots_for(key, sum(1 for s in self._slots if s.attached))
            refusal = self._admission.decide(key, now, slot_free=slot_free, key_holds_slot=holds)
        if refusal is None:
            assert key is not None  # only the branch that worked out the caller's key admits
            self._admission.media_opened()
            self._admitted = (key, caller)
            prm.accountIndex = account.getId()
            return
        self._refusal = refusal
        self._log_refusal(refusal, source_ip, now)
        prm.accountIndex = refusals.getId()

    def _log_refusal(self, refusal: Refusal, source_ip: str, now: float) -> None:
        """At most one line a second per kind of refusal: a flood must not become a logging flood."""
        if now - self._refusal_logged_at.get(refusal, -1.0) < 1.0:
            return
        self._refusal_logged_at[refusal] = now
        why = {Refusal.NOT_UPSTREAM: "not an upstream", Refusal.BUSY: "every call slot busy, or the caller "
               "already holds one", Refusal.OVERLOADED: "too many calls, too fast"}[refusal]
        slots = " ".join(f"{s.index}:{'busy' if s.busy() else 'free'}/{s.last_key}" for s in self._slots)
        log.warning("%s: INVITE from %s refused with %d: %s (%d such so far; slots %s)", self._name, source_ip,
                    int(refusal), why, self._admission.refused[refusal], slots)

    def on_refused_incoming(self, account: Any, prm: Any) -> None:
        refusal, self._refusal = self._refusal or Refusal.OVERLOADED, None
        self._refuse(SipCall(self._owner, account, prm.callId), int(refusal))

    def unclaimed_admission(self) -> None:
        """An admitted INVITE pjsua ended itself (bad SDP …) before it became a call: sockets closed."""
        if self._admitted is not None:
            self._admitted = None
            self._admission.media_closed(time.monotonic())

    def hold_media(self, call: Any) -> None:
        call.holds_media = True
        self._admission.media_opened()

    def release_media(self, call: Any) -> None:
        if getattr(call, "holds_media", False):
            call.holds_media = False
            self._admission.media_closed(time.monotonic())

    def on_incoming(self, account: Any, prm: Any) -> None:
        admitted, self._admitted = self._admitted, None
        call = SipCall(self._owner, account, prm.callId)
        call.holds_media = True  # pjsua opened its sockets before this callback
        if admitted is None:  # not through select_account (it failed): counted all the same
            self._admission.media_opened()
            source_ip = prm.rdata.srcAddress.rsplit(":", 1)[0].strip("[]")
            if self._admission.refuses_source(source_ip):
                log.warning("%s: INVITE from %s, not an upstream: 403", self._name, source_ip)
                self._refuse(call, 403)
                return
            caller = self._caller_from(prm.rdata.wholeMsg, prm.rdata.srcAddress)
            key = self._admission.key_for(source_ip, caller.number_e164 or caller.raw_number)
        else:
            key, caller = admitted
        slot = next((s for s in self._slots if s.attached and not s.busy()), None)
        if slot is None:
            log.info("%s: every call slot busy, 486", self._name)
            self._refuse(call, 486)
            return
        call.slot = slot
        slot.last_key = key
        now = time.monotonic()
        slot.current = state = CallState(call, caller, now)
        # Caller ID first: the daemon screens on it; the Ring is what a no-CID call is screened by.
        slot.events.put((CallOffered(caller, now), state))
        slot.events.put((Ring(1, now), state))

    def _refuse(self, call: Any, code: int) -> None:
        self._dead_calls.append(call)
        reply = pj.CallOpParam()
        reply.statusCode = code
        call.hangup(reply)

    def _caller_from(self, message: str, source: str) -> CallerID:
        headers = parse_sip_headers(message)
        source_ip = source.rsplit(":", 1)[0].strip("[]")
        try:
            caller = self._caller_id(headers, source_ip=source_ip,
                                     trusted_upstreams=self._settings.trusted_upstreams,
                                     home_region=self._settings.home_region)
        except Exception:  # noqa: BLE001 -- bad headers must not stop screening: the rings decide
            # Text only: a LogRecord holding exc_info would keep the frames (and a Call) alive.
            log.error("%s: caller ID from %s could not be read:\n%s", self._name, source_ip,
                      traceback.format_exc())
            caller = CallerID(raw_lines=tuple(f"{n}: {v}"[:256] for n, v in headers[:32]))
        log.debug("%s: INVITE from %s: %s", self._name, source_ip, caller)
        return caller
