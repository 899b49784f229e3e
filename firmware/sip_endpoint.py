"""SipEndpoint: the one pjsua2 endpoint of a SIP line, owned by one thread.

One thread creates, polls and destroys the pjsua2 endpoint; every other thread talks
to it through a command queue, because pjsua2 objects are not safe to drive from
several Python threads. The endpoint has ``max_calls`` call slots; each slot is the
seat of one :class:`firmware.sip_line.SipLine` (one daemon loop) and holds at most one
call. An INVITE goes to a free slot that has a line attached, or gets 486 Busy Here.

Nothing is sent to the caller before the daemon has decided (pjsua's automatic
100 Trying aside): a rejected call never rings, an allowed call hears 180 Ringing and,
when ``household`` is configured, is connected to the household phone by a second
call leg. A warned call is answered, warned, then connected the same way, and the
household's voice is mixed into what the voice pipeline receives.

Registration (``registrar`` set): the endpoint registers as an extension with digest
credentials; a failed or lost registration is a ``LineFault``, its recovery a
``LineRestored`` (pjsua retries every ``register_retry_s``).

The endpoint's parts run on its owner thread: INVITE admission and refusal in
:mod:`firmware.sip_invites`, registration in :mod:`firmware.sip_registration`, the pjsua2
subclasses in :mod:`firmware.sip_pjsua`.
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
from typing import Any

import pjsua2 as pj  # type: ignore[import-untyped]

from firmware.sip_admission import Admission
from firmware.sip_calls import CallState, Leg, Slot
from firmware.sip_headers import CallerIdFn, sip_user
from firmware.sip_invites import InviteDesk
from firmware.sip_media import FRAME_MS, FramePort
from firmware.sip_pjsua import (
    CallAccount,
    PjEndpoint,
    RefusalAccount,
    SipCall,
    account_config,
    endpoint_config,
    prefer_codecs,
    refusal_config,
)
from firmware.sip_registration import Registration
from firmware.sip_settings import SipSettings
from screening.core.line import Dtmf, LineError, Ring, RingingStopped
from screening.core.model import CallerID
from screening.core.sip_callerid import caller_id_from_sip

log = logging.getLogger(__name__)

_POLL_MS = 10
_FAST_POLL_MS = 1  # while a call waits for the daemon's decision
_SESSION_TERMINATED = 171140  # PJSIP_ESESSIONTERMINATED: the caller left while we acted
# An answer whose ACK has not come by then (retransmissions lost for this long) is given up on:
# pjsip itself waits 64*T1 = 32 s, then sends a BYE that waits 32 s more -- a minute of a slot.
_ACK_TIMEOUT_S = 8.0


class SipEndpoint:
    """The pjsua2 endpoint and its owner thread, shared by the SipLines of its slots."""

    def __init__(self, settings: SipSettings, caller_id: CallerIdFn | None = None,
                 name: str | None = None) -> None:
        self.settings = settings
        self.name = name or f"sip:{settings.host}:{settings.port}"
        self.slots = [Slot(i) for i in range(max(1, settings.max_calls))]
        self._commands: queue.Queue[tuple[Callable[[], object], concurrent.futures.Future[object]]] = \
            queue.Queue()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._start_error: str | None = None
        self._thread: threading.Thread | None = None
        self._account: CallAccount | None = None
        self._refusals: RefusalAccount | None = None
        self.admission = Admission(settings.trusted_upstreams)  # owner thread only
        # Calls we are done with, waiting for pjsua's DISCONNECTED, with their caller's admission key:
        # they still take one of pjsua's calls, so they count as that caller's one call.
        self._lingering: dict[int, tuple[Any, str | None]] = {}
        self._dead_calls: list[Any] = []  # deleted outside pjsua2 callbacks
        self._dead_accounts: list[Any] = []  # shut down, kept until libDestroy
        self._users = 0
        self._users_lock = threading.Lock()
        self.registration = threading.Event()  # set while registered (tests and doctor read it)
        self._registering = Registration(self, self.name, settings, self.slots, self.registration,
                                         dead_accounts=self._dead_accounts)
        self._invites = InviteDesk(self, self.name, settings, self.slots, self.admission,
                                   caller_id or caller_id_from_sip,
                                   dead_calls=self._dead_calls, lingering=self._lingering, bury=self._bury)

    # ---- lifecycle (any thread) ---------------------------------------------------

    def acquire(self) -> None:
        """Open on first use; every acquire() needs a release()."""
        with self._users_lock:
            if self._users == 0:
                self._open()
            self._users += 1

    def release(self) -> None:
        with self._users_lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users == 0:
                self._close()

    def _open(self) -> None:
        self._stop.clear()
        self._started.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._run, name=f"sip-{self.settings.port}", daemon=True)
        self._thread.start()
        if not self._started.wait(self.settings.start_timeout_s):
            self._stop.set()
            raise LineError(f"{self.name}: SIP endpoint did not start in time")
        if self._start_error is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
            raise LineError(f"{self.name}: {self._start_error}")
        how = f"registering as {self.settings.user} at {self.settings.registrar}" if self.settings.registrar \
            else "listening for INVITEs"
        log.info("%s: %s (%d call slots, upstream %s)", self.name, how, len(self.slots),
                 self.settings.upstream.value)

    def _close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():
                log.error("%s: SIP thread did not stop", self.name)
            self._thread = None

    def submit(self, fn: Callable[[], object], timeout: float) -> object:
        """Run ``fn`` on the owner thread and wait for its result."""
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

    # ---- owner thread: the loop ---------------------------------------------------

    def _run(self) -> None:
        endpoint = PjEndpoint(self)
        try:
            endpoint.libCreate()
            self._start(endpoint)
        except pj.Error as exc:
            self._start_error = exc.info()
            self._started.set()
            self._account = self._refusals = None
            for slot in self.slots:
                slot.port = None
            endpoint.libDestroy()
            return
        self._started.set()
        try:
            while not self._stop.is_set():
                endpoint.libHandleEvents(_FAST_POLL_MS if self._decision_pending() else _POLL_MS)
                self._invites.unclaimed_admission()
                self._run_commands()
                self._tick()
                self._bury()
        except Exception:  # noqa: BLE001 -- logged; teardown still runs
            log.error("%s: SIP thread failed:\n%s", self.name, traceback.format_exc())
        finally:
            self._shutdown(endpoint)

    def _bury(self) -> None:
        """Free the pjsua2 objects of ended calls, before pjsua can give their call id to a new call.

        ``~Call`` clears the user data of its call id and hangs up whatever call is active under
        that id: run after the id went to a new call, it silently kills that call (seen under a
        flood, where one poll took more INVITEs than pjsua has call ids). So the dead go before
        every new call id is handed out (account selection, makeCall) and after every poll.
        """
        self._dead_calls.clear()

    def _decision_pending(self) -> bool:
        """A call waits for the daemon's answer/reject: poll fast so the command goes out at once.

        The daemon decides within milliseconds; a 10 ms poll would add up to 10 ms to every
        INVITE -> final response (measured: two clusters, 3-4 ms and 12-14 ms).
        """
        return not self._commands.empty() or any(
            s.current is not None and not s.current.answered.is_set() and not s.current.ringing_sent
            and not s.current.gone.is_set() and not s.current.outgoing for s in self.slots)

    def _start(self, endpoint: Any) -> None:
        endpoint.libInit(endpoint_config())
        transport = pj.TransportConfig()
        transport.port = self.settings.port
        transport.boundAddress = self.settings.host
        endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        endpoint.libStart()
        endpoint.audDevManager().setNullDev()  # the clock for the bridge; no sound card
        prefer_codecs(endpoint)
        for slot in self.slots:
            slot.port = FramePort()
            slot.port.create(f"mamoru-{slot.index}")
        self._account = CallAccount(self)
        self._account.create(account_config(self.settings), True)
        self._refusals = RefusalAccount(self)
        self._refusals.create(refusal_config(self.settings), False)

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
        now = time.monotonic()
        if self._account is not None and self._registering.retry_due(now) \
                and not any(slot.busy() for slot in self.slots):
            self._account = self._registering.renew(self._account, now)
        for slot in self.slots:
            state = slot.current
            if state is not None and state.household_rung_at is not None and not state.household_up.is_set() \
                    and not state.household_ended.is_set() \
                    and now - state.household_rung_at > self.settings.ring_timeout_s:
                log.info("%s: the household phone was not picked up in %.0fs", self.name, self.settings.ring_timeout_s)
                self._hang_up_household(state)
            if state is not None and state.answered_at is not None and not state.acked and not state.outgoing \
                    and not state.gone.is_set() and now - state.answered_at > _ACK_TIMEOUT_S:
                log.warning("%s: no ACK %.0fs after our answer: ending the call", self.name, _ACK_TIMEOUT_S)
                try:
                    self.hang_up_call(state, 200)
                except pj.Error as exc:  # the slot is freed all the same; the loop must go on
                    log.warning("%s: hang-up without ACK: %s", self.name, exc.info())
                    self._let_go(state)
                continue
            if state is None or state.answered.is_set() or state.gone.is_set() or state.outgoing:
                continue
            elapsed = now - state.offered_at
            if elapsed > self.settings.ring_timeout_s:
                log.info("%s: unanswered for %.0fs, declining with 480", self.name, elapsed)
                self.hang_up_call(state, 480)
            elif not state.decided and elapsed >= state.rings * self.settings.ring_period_s:
                state.rings += 1
                slot.events.put((Ring(state.rings, now), state))

    def _shutdown(self, endpoint: Any) -> None:
        for slot in self.slots:
            state = slot.current
            if state is not None and not state.gone.is_set():
                try:
                    self.hang_up_call(state, 200 if state.answered.is_set() else 503)
                except pj.Error as exc:
                    log.warning("%s: hang-up on close failed: %s", self.name, exc.info())
        try:
            endpoint.libHandleEvents(50)
        except pj.Error:
            pass
        for slot in self.slots:
            slot.current = None
        self._dead_calls.clear()
        self._lingering.clear()
        self._account = self._refusals = None
        self._dead_accounts.clear()
        try:
            endpoint.audDevManager().setNoDev()  # stop the bridge clock before the ports go
            for slot in self.slots:
                slot.port = None
            # A pjsua2 Call freed after libDestroy aborts the process: collect any still held
            # by reference cycles (e.g. a logged exception's frames) while the library is up.
            gc.collect()
            endpoint.libDestroy()
        except pj.Error as exc:
            log.warning("%s: endpoint teardown: %s", self.name, exc.info())

    # ---- owner thread: actions (submitted by SipLine) ------------------------------

    def answer_call(self, state: CallState) -> None:
        if state.gone.is_set() or state.answered.is_set():
            return
        prm = pj.CallOpParam()
        prm.statusCode = 200
        try:
            state.call.answer(prm)
        except pj.Error as exc:
            if exc.status != _SESSION_TERMINATED:
                raise
            log.info("%s: the caller left just before the answer", self.name)  # play() will see it
            return
        state.answered_at = time.monotonic()
        state.answered.set()

    def ring_call(self, state: CallState) -> None:
        """180 Ringing to the caller (an allowed call)."""
        if state.gone.is_set() or state.ringing_sent or state.answered.is_set():
            return
        prm = pj.CallOpParam()
        prm.statusCode = 180
        state.call.answer(prm)
        state.ringing_sent = True

    def hang_up_call(self, state: CallState, code: int) -> None:
        if state.household is not None and not state.household_ended.is_set():
            self._hang_up_household(state)
        if state.gone.is_set():
            return
        prm = pj.CallOpParam()
        prm.statusCode = code
        try:
            state.call.hangup(prm)
        except pj.Error as exc:
            if exc.status != _SESSION_TERMINATED:
                raise
            log.info("%s: the call had already ended", self.name)
        if state.answered.is_set() and not state.acked and not state.outgoing and not state.gone.is_set():
            # pjsua keeps it until the ACK or BYE timers run out (up to a minute); the slot need not wait.
            self._let_go(state)

    def _let_go(self, state: CallState) -> None:
        """We are done with a call pjsua still holds (its answer never ACKed): free its slot now."""
        call, slot = state.call, self._slot_of(state)
        if call is None or slot is None:
            return
        log.info("%s: call slot freed; the unacknowledged call is left to pjsua's timers", self.name)
        if slot.port is not None and state.media is not None:
            try:  # the next call in this slot must not hear (or record) this one
                state.media.stopTransmit(slot.port)
                slot.port.stopTransmit(state.media)
            except pj.Error as exc:
                log.debug("%s: unhooking the unacknowledged call's audio: %s", self.name, exc.info())
        call.slot = None
        self._lingering[id(call)] = (call, slot.last_key)  # freed on DISCONNECTED, on this thread
        self._end(slot, state, 408)

    def call_household(self, state: CallState, *, answer_caller: bool, screening: bool = False) -> bool:
        """Place the household leg (the phone rings); False when no household phone is configured.

        ``screening``: the leg is not joined to the caller when picked up; it hears our prompts
        alone until ``join_household`` (or ``drop_household``).
        """
        target = self.settings.household
        if target is None or state.gone.is_set() or self._account is None:
            return False
        if state.household is not None:
            return True
        if state.household_ended.is_set():
            return False  # one household leg per call: the phone was already rung and let go
        state.screening = screening
        if not self.admission.has_room(time.monotonic()):
            log.error("%s: too many calls at once to ring the household phone", self.name)
            return False
        leg = SipCall(self, self._account, leg=Leg.HOUSEHOLD)
        leg.slot = self._slot_of(state)
        prm = pj.CallOpParam(True)
        headers = pj.SipHeaderVector()
        who = state.caller.number_e164 or state.caller.raw_number
        if who:  # the phone's own display shows who is calling
            header = pj.SipHeader()
            header.hName, header.hValue = "P-Asserted-Identity", f"<sip:{sip_user(who)}@{self.settings.host}>"
            headers.append(header)
        prm.txOption.headers = headers
        state.answer_when_household_answers = answer_caller
        state.household = leg
        state.household_rung_at = time.monotonic()
        self._invites.hold_media(leg)
        self._bury()
        try:
            leg.makeCall(target, prm)
        except pj.Error as exc:
            log.warning("%s: could not call the household phone %s: %s", self.name, target, exc.info())
            self._invites.release_media(leg)
            state.household = None
            state.household_ended.set()
            self._dead_calls.append(leg)
            return False
        log.info("%s: ringing the household phone %s", self.name, target)
        return True

    def place_call(self, slot: Slot, uri: str) -> CallState:
        """An outgoing call from ``slot`` (phoning a relative); its state, or LineError."""
        if slot.busy() or self._account is None or not self.admission.has_room(time.monotonic()):
            raise LineError(f"{self.name}: the line is busy")
        call = SipCall(self, self._account)
        call.slot = slot
        slot.last_key = None
        state = CallState(call, CallerID(), time.monotonic(), decided=True, outgoing=True)
        slot.current = state
        self._invites.hold_media(call)
        self._bury()
        try:
            call.makeCall(uri, pj.CallOpParam(True))
        except pj.Error as exc:
            self._invites.release_media(call)
            slot.current = None
            self._dead_calls.append(call)
            raise LineError(f"{self.name}: could not call {uri}: {exc.info()}") from None
        return state

    def call_account(self) -> Any:
        """The account outgoing calls go out on (owner thread; a relative's leg, firmware.sip_relative)."""
        self._bury()
        return self._account

    def bury_later(self, *objects: Any) -> None:
        """Free pjsua2 objects after the next poll (owner thread), never from a callback."""
        self._dead_calls.extend(o for o in objects if o is not None)

    def _on_dtmf(self, call: Any, digit: str) -> None:
        slot = getattr(call, "slot", None)
        state = self._state_of(call)
        if slot is not None and state is not None and digit:
            slot.events.put((Dtmf(digit, time.monotonic(), household=call.leg is Leg.HOUSEHOLD), slot.current))
            if call.leg is Leg.HOUSEHOLD:
                state.household_key.set()  # a prompt to the household stops: it has answered

    # ---- screening: the household leg alone, then joined (owner thread) ------------------

    def _screening_apart(self, state: CallState) -> bool:
        return state.screening and not state.screening_joined

    def _prompts_to(self, state: CallState, household: bool) -> None:
        """Route our announcements to the household leg alone, or back to the caller."""
        slot = self._slot_of(state)
        port = slot.port if slot is not None else None
        if port is None:
            return
        to, away = (state.household_media, state.media) if household else (state.media, state.household_media)
        if away is not None:
            try:
                port.stopTransmit(away)
            except pj.Error as exc:
                log.debug("%s: unrouting prompts: %s", self.name, exc.info())
        if to is not None:
            port.startTransmit(to)

    def join_household(self, state: CallState) -> bool:
        """The household pressed "talk": join the two legs; our prompts go to the caller again."""
        if state.gone.is_set() or not state.household_up.is_set() or state.household_ended.is_set():
            return False
        state.screening_joined = True
        self._prompts_to(state, household=False)
        if state.media is not None and state.household_media is not None:
            state.media.startTransmit(state.household_media)
            state.household_media.startTransmit(state.media)
        return True

    def drop_household(self, state: CallState) -> None:
        """End the household leg of a screened call; the caller stays (refusal, message)."""
        if self._screening_apart(state):
            self._prompts_to(state, household=False)
        self._hang_up_household(state)

    def _hang_up_household(self, state: CallState) -> None:
        leg = state.household
        if leg is None or state.household_ended.is_set():
            return
        try:
            leg.hangup(pj.CallOpParam())
        except pj.Error as exc:
            log.debug("%s: household leg hang-up: %s", self.name, exc.info())

    # ---- pjsua2 callbacks (owner thread) --------------------------------------
    # pjsua2's subclasses call the endpoint (sip_pjsua.CallbackOwner); INVITEs are the InviteDesk's.

    def _select_account(self, prm: Any) -> None:
        self._invites.select_account(prm, self._account, self._refusals)

    def _on_incoming(self, account: Any, prm: Any) -> None:
        self._invites.on_incoming(account, prm)

    def _on_refused_incoming(self, account: Any, prm: Any) -> None:
        self._invites.on_refused_incoming(account, prm)

    def _state_of(self, call: Any) -> CallState | None:
        slot = getattr(call, "slot", None)
        state = slot.current if slot is not None else None
        if state is None:
            return None
        if call is state.call or call is state.household:
            return state
        return None

    def _slot_of(self, state: CallState) -> Slot | None:
        return next((s for s in self.slots if s.current is state), None)

    def _on_media_active(self, call: Any, media: Any) -> None:
        state = self._state_of(call)
        slot = getattr(call, "slot", None)
        if state is None or slot is None or slot.port is None:
            return
        # On a re-INVITE the media may be new: (re)connect; startTransmit twice is harmless.
        media.startTransmit(slot.port)  # both voices reach the recorder/recogniser
        if call.leg is Leg.CALLER:
            state.media = media
            if not (self._screening_apart(state) and state.household_up.is_set()):
                slot.port.startTransmit(media)  # our announcements go to the caller only
            state.media_up.set()
        else:
            state.household_media = media
            if self._screening_apart(state):
                self._prompts_to(state, household=True)  # the household hears the caller's name, alone
        if self._screening_apart(state):
            return
        if state.media is not None and state.household_media is not None and state.household_up.is_set():
            state.media.startTransmit(state.household_media)
            state.household_media.startTransmit(state.media)

    def _on_call_state(self, call: Any, inv_state: int, code: int) -> None:
        if inv_state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._invites.release_media(call)
            if self._lingering.pop(id(call), None) is not None:
                self._dead_calls.append(call)
                return
        if call.leg is Leg.HOUSEHOLD:
            self._on_household_state(call, inv_state, code)
            return
        if inv_state == pj.PJSIP_INV_STATE_CONFIRMED:
            state = self._state_of(call)
            if state is not None:
                state.acked = True
                if state.outgoing:
                    state.answered.set()
            return
        if inv_state != pj.PJSIP_INV_STATE_DISCONNECTED:
            return
        slot = getattr(call, "slot", None)
        state = self._state_of(call)
        if slot is None or state is None:
            return
        self._dead_calls.append(call)
        self._end(slot, state, code)

    def _end(self, slot: Slot, state: CallState, code: int) -> None:
        """The call is over for its slot (pjsua's DISCONNECTED, or we let it go)."""
        state.final_code = code
        state.gone.set()
        slot.current = None
        if state.household is not None and not state.household_ended.is_set():
            self._hang_up_household(state)
        # Call loops keep this CallState after the call (and an exception's traceback keeps frames
        # that hold it): the pjsua2 objects must not go with it, or ~Call runs on a thread pjlib
        # does not know and the process aborts. They are freed here, on the owner thread.
        self._dead_calls.extend(o for o in (state.household, state.media, state.household_media) if o is not None)
        state.call = state.media = state.household = state.household_media = None
        if slot.port is not None:
            slot.port.flush()
        log.info("%s: call ended (%s)", self.name, code)
        if state.outgoing:
            return  # our own call: the alerter sees the end through dial/play/listen
        if not state.answered.is_set() or state.answer_when_household_answers:
            # Allowed calls end here, not in the session: the daemon's ringing is over.
            slot.events.put((RingingStopped(time.monotonic()), state))

    def _on_household_state(self, leg: Any, inv_state: int, code: int) -> None:
        state = self._state_of(leg)
        if state is None:
            if inv_state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self._dead_calls.append(leg)
            return
        if inv_state == pj.PJSIP_INV_STATE_CONFIRMED and not state.household_up.is_set():
            log.info("%s: the household picked up", self.name)
            state.household_up.set()
            if state.answer_when_household_answers:
                self.answer_call(state)
            if self._screening_apart(state):
                if state.household_media is not None:
                    self._prompts_to(state, household=True)
                return
            if state.media is not None and state.household_media is not None:
                state.media.startTransmit(state.household_media)
                state.household_media.startTransmit(state.media)
        elif inv_state == pj.PJSIP_INV_STATE_DISCONNECTED:
            state.household_ended.set()
            self._dead_calls.append(leg)
            if state.gone.is_set():
                return
            if self._screening_apart(state):
                log.info("%s: the household leg ended (%s) before joining; the caller stays", self.name, code)
                if state.household_media is not None:  # gone with its call: never touched again
                    self._dead_calls.append(state.household_media)
                    state.household_media = None
                self._prompts_to(state, household=False)
                return
            if state.household_up.is_set():
                log.info("%s: the household hung up (%s): ending the call", self.name, code)
                self.hang_up_call(state, 200)
            elif state.answer_when_household_answers:
                log.info("%s: the household phone did not answer (%s): declining", self.name, code)
                self.hang_up_call(state, 480)
            else:
                log.info("%s: the household phone did not answer (%s); staying on the call", self.name, code)

    def _on_reg_state(self, code: int, reason: str, expiration: int) -> None:
        self._registering.on_state(code, reason, expiration)


def settle_s() -> float:
    """Last frames still in the conference bridge after a port's buffer drains."""
    return 2 * FRAME_MS / 1000
