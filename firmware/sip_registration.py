"""Registration: a SIP endpoint's REGISTER with its registrar, watched and retried.

Owned by a :class:`firmware.sip_endpoint.SipEndpoint` and run on its owner thread only (pjsua2
must be driven by that one thread). A failed or lost registration is a ``LineFault`` on the
first attached slot's events, its recovery a ``LineRestored``; a failed one is tried again
every ``register_retry_s`` with a new account (see :meth:`Registration.renew`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pjsua2 as pj  # type: ignore[import-untyped]

from firmware.sip_calls import Slot
from firmware.sip_pjsua import CallAccount, CallbackOwner, account_config
from firmware.sip_settings import SipSettings
from screening.core.line import LineFault, LineRestored

# Under the endpoint's name, as before this left it: log filters, readers and tests keep working.
log = logging.getLogger("firmware.sip_endpoint")


class Registration:
    """Whether the endpoint is registered, and when a failed registration is tried again."""

    def __init__(self, owner: CallbackOwner, name: str, settings: SipSettings, slots: list[Slot],
                 registered: threading.Event, *, dead_accounts: list[Any]) -> None:
        self._owner = owner  # the endpoint: a new account's callbacks go to it
        self._name = name
        self._settings = settings
        self._slots = slots
        self._event = registered  # the endpoint's ``registration``: set while registered
        self._dead_accounts = dead_accounts  # the endpoint's (never rebound): kept until libDestroy
        self._registered: bool | None = None  # None: not registering, or no answer yet
        self._next_register_at = 0.0  # monotonic; when a failed registration is tried again

    def retry_due(self, now: float) -> bool:
        return self._registered is False and now >= self._next_register_at

    def renew(self, old: Any, now: float) -> Any:
        """Register again with a new account; the account to use from now on (``old`` if that failed).

        Only between calls: the calls belong to the old one. After a failed refresh pjsua's
        registration client can stay busy (PJSIP_EBUSY) and never send again, and ``modify()``
        with unchanged settings sends nothing.
        """
        self._next_register_at = now + self._settings.register_retry_s
        self._dead_accounts.append(old)
        try:
            old.shutdown()
            account = CallAccount(self._owner)
            account.create(account_config(self._settings), True)
        except pj.Error as exc:
            log.warning("%s: registration retry: %s", self._name, exc.info())
            return old  # the next retry starts again from the account we have
        return account

    def on_state(self, code: int, reason: str, expiration: int) -> None:
        ok = 200 <= code < 300 and expiration > 0
        if ok:
            self._event.set()
        else:
            self._event.clear()
        if ok == self._registered:
            return
        was, self._registered = self._registered, ok
        slot = next((s for s in self._slots if s.attached), self._slots[0])
        settings = self._settings
        if ok:
            log.info("%s: registered at %s (expires %ss)", self._name, settings.registrar, expiration)
            if was is False:
                slot.events.put((LineRestored(f"registered again at {settings.registrar}", time.monotonic()), None))
        elif expiration == 0 and 200 <= code < 300:
            self._registered = None  # our own un-REGISTER at shutdown
        else:
            self._next_register_at = time.monotonic() + settings.register_retry_s
            log.error("%s: registration at %s failed: %s %s (trying again in %ss)", self._name,
                      settings.registrar, code, reason, settings.register_retry_s)
            slot.events.put((LineFault(f"SIP registration at {settings.registrar} failed: {code} {reason}",
                                       time.monotonic()), None))
