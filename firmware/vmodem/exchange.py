"""The telephone line behind the modem: incoming calls (caller ID, rings, answer, hang-up) and dialled calls."""

from __future__ import annotations

import functools
import logging
import time

from firmware.dialects import (
    CADENCE_PERIOD_S,
    DEFAULT_NO_ANSWER_S,
    DIAL_TONE_WAIT_S,
    RINGBACK_GOES_AWAY_S,
    RingCadence,
)
from firmware.dle import DleEvent
from firmware.scenarios import (
    CalleeBehaviour,
)
from firmware.virtual_nd import NdLineOutcome, nd_frame_for, nd_line_audio
from firmware.vmodem.at import (
    BUSY,
    NO_ANSWER,
    NO_CARRIER,
    NO_DIALTONE,
    OK,
    RING,
    VOICE_CLASS,
    format_cid_block,
)
from firmware.vmodem.base import (
    BUSY_DETECT_S,
    CALL_SETUP_S,
    CALL_WAITING_CID_DELAY_S,
    CID_BEFORE_RING_S,
    DIAL_TONE_DETECT_S,
    DTMF_DIGIT_S,
    HANGUP_EVENT,
    HOUSEHOLD_TALK_S,
    NA_CID_AFTER_RING_S,
    RINGBACK_ON_S,
    ModemBase,
)
from firmware.vmodem.records import (
    CallOutcome,
    DialOutcome,
    _Call,
    _Mode,
    _OutCall,
    _Phase,
)

# Every part logs as the one emulator it is (``mamoru modem emulate`` quietens this name).
log = logging.getLogger("firmware.virtual_modem")


class Exchange(ModemBase):
    """Scripted incoming and outgoing calls, driven by timers."""

    def _maybe_start_next(self, now: float) -> None:
        if self._live is not None or not self._pending:
            return
        if self._next_start_at is None:
            if self._off_hook:
                return  # the gap starts once the modem is back on-hook
            self._next_start_at = now + self._real(self._pending[0][0].script.gap_s)
        if now < self._next_start_at:
            return
        self._next_start_at = None
        record, audio = self._pending.popleft()
        record.started_at = now
        if self._off_hook:
            log.info("virtual modem: call %d hears busy (modem off-hook)", record.index)
            record.outcome, record.ended_at = CallOutcome.LINE_BUSY, now
            self._cond.notify_all()
            return
        self._begin_call(_Call(record=record, audio=audio), now)

    def _begin_call(self, call: _Call, now: float) -> None:
        script = call.record.script
        self._live = call
        log.info("virtual modem: incoming call %d %s (%s)", call.record.index, script.nmbr, script.label)
        waiting = self._handset or script.call_waiting
        if script.call_waiting and not self._handset:
            call.handset_by_script = True
            self._set_handset(True, now)
        if self.cadence is RingCadence.JAPAN_ND:
            if not waiting:
                self._begin_car(call, now)
                return
            call.record.nd_outcome = NdLineOutcome.NOT_SENT  # no CAR to an off-hook line
        if self.cadence is RingCadence.NORTH_AMERICA and not waiting:
            call.first_ring_due = now
            cid_at = now + self._real(NA_CID_AFTER_RING_S)
        else:
            call.first_ring_due = now + self._real(CID_BEFORE_RING_S)
            cid_at = now + self._real(CALL_WAITING_CID_DELAY_S if waiting else 0.0)
        if self.cadence is not RingCadence.JAPAN_ND:  # no modem prints Japanese ND
            self._schedule(call, cid_at, lambda at: self._send_cid(call))
        period = self._real(CADENCE_PERIOD_S[self.cadence])
        if waiting:
            call.phase = _Phase.WAITING
            give_up_at = call.first_ring_due + script.max_rings * period
            self._schedule(call, give_up_at, lambda at: self._give_up(call, at))
        else:
            self._start_ringing(call, call.first_ring_due)

    def _start_ringing(self, call: _Call, first_ring_at: float) -> None:
        script = call.record.script
        call.phase = _Phase.ALERTING
        call.first_ring_due = first_ring_at
        self._schedule(call, first_ring_at, lambda at: self._ring(call, 0, at))
        if script.handset_off_hook_at_s is not None and script.handset_off_hook_at_s > 0:
            pickup_at = call.first_ring_due + self._real(script.handset_off_hook_at_s)
            self._schedule(call, pickup_at, lambda at: self._household_picks_up(call, at))

    # ---- Japanese Number Display (jp_nd): CAR, primary response, FSK, then ringing ----

    def _begin_car(self, call: _Call, now: float) -> None:
        call.phase = _Phase.CAR
        call.record.first_car_at = now
        self._schedule(call, now, lambda at: self._car_ring(call, at))
        timeout = now + self._real(self.number_display.primary_response_timeout_s)
        self._schedule(call, timeout, lambda at: self._car_timed_out(call, at))

    def _car_ring(self, call: _Call, at: float) -> None:
        if call.phase is not _Phase.CAR:
            return
        if not self._off_hook and self._mode is _Mode.COMMAND:
            self._unsolicited(RING)
        call.record.car_rings += 1
        self._schedule(call, at + self._real(self.number_display.car_period_s), lambda t: self._car_ring(call, t))

    def _car_timed_out(self, call: _Call, at: float) -> None:
        """No primary response: a non-ND terminal, so the exchange rings normally without caller ID."""
        if call.phase is not _Phase.CAR:
            return
        log.info("virtual modem: call %d: no primary response to CAR; ringing without caller ID", call.record.index)
        self._cancel_timers(call)
        call.record.nd_outcome = NdLineOutcome.NO_PRIMARY_RESPONSE
        self._start_ringing(call, at)

    def _primary_response(self, call: _Call, now: float) -> None:
        self._cancel_timers(call)
        script = call.record.script
        frame = nd_frame_for(script.nmbr, script.nd_frame)
        call.phase = _Phase.ND_DATA
        call.nd_epoch = now
        call.nd_audio = nd_line_audio(frame, self.number_display)
        call.record.primary_response_at = now
        call.record.nd_frame = frame
        self._line_call = call

    def _nd_on_hook(self, call: _Call, now: float) -> None:
        call.record.nd_on_hook_at = now
        call.record.nd_outcome = NdLineOutcome.SENT
        self._start_ringing(call, now + self._real(self.number_display.ring_after_on_hook_s))

    def _send_cid(self, call: _Call) -> None:
        if call.phase not in (_Phase.ALERTING, _Phase.WAITING) or not self._settings.caller_id:
            return
        if self._mode is not _Mode.COMMAND:
            return
        block = format_cid_block(call.record.script.cid_lines(time.strftime("%m%d"), time.strftime("%H%M")))
        flushed_before = not self._out
        if self._emit(block):
            call.record.cid_written_at = time.monotonic()
            call.record.cid_bytes = block
            if not flushed_before:
                log.debug("virtual modem: caller ID queued behind %d bytes", len(self._out))

    def _ring(self, call: _Call, k: int, at: float) -> None:
        if call.phase is not _Phase.ALERTING:
            return
        if not self._off_hook and self._mode is _Mode.COMMAND:
            self._unsolicited(RING)
        call.record.rings += 1
        if k == 0:
            call.record.first_ring_at = time.monotonic()
        period = self._real(CADENCE_PERIOD_S[self.cadence])
        if k + 1 < call.record.script.max_rings:
            self._schedule(call, at + period, lambda t: self._ring(call, k + 1, t))
        else:
            self._schedule(call, at + period, lambda t: self._give_up(call, t))

    def _give_up(self, call: _Call, at: float) -> None:
        if call.phase is _Phase.ALERTING:
            self._end_call(call, CallOutcome.GAVE_UP, time.monotonic())
        elif call.phase is _Phase.WAITING:
            self._end_call(call, CallOutcome.LINE_IN_USE, time.monotonic())

    def _answer(self, call: _Call, now: float) -> None:
        """The modem took the ringing call: caller's audio, DTMF and hang-up clocks start."""
        script = call.record.script
        self._cancel_timers(call)
        call.phase = _Phase.CONNECTED
        call.answered_at = now
        call.record.answered_at = now
        self._line_call = call
        if script.hang_up_after_s is not None:
            self._schedule(call, now + self._real(script.hang_up_after_s), lambda at: self._caller_hangs_up(call, at))
        for offset, digit in script.dtmf:
            self._schedule(call, now + self._real(offset), functools.partial(self._dtmf, call, digit))
        pickup = script.handset_off_hook_at_s
        if pickup is not None and pickup > 0:
            pickup_at = call.first_ring_due + self._real(pickup)
            self._schedule(call, max(now, pickup_at), lambda at: self._household_picks_up(call, at))

    def _household_picks_up(self, call: _Call, at: float) -> None:
        """Scripted pick-up: takes a ringing call, or joins an answered one as an extension."""
        now = time.monotonic()
        if call.phase is _Phase.ALERTING:
            talk = call.record.script.hang_up_after_s
            self._household_answers(call, now, talk_s=HOUSEHOLD_TALK_S if talk is None else talk)
        elif call.phase is not _Phase.CONNECTED or self._handset:
            return
        call.handset_by_script = True
        self._set_handset(True, now)

    def _household_answers(self, call: _Call, now: float, talk_s: float | None) -> None:
        """The household's phone took the call (``answered_at`` stays None: the host did not).

        With ``talk_s`` the household hangs up after that long; without it (a
        manual ``set_handset``) the call lasts until the handset is replaced.
        """
        self._cancel_timers(call)
        call.phase = _Phase.HOUSEHOLD
        if talk_s is not None:
            self._schedule(call, now + self._real(talk_s),
                           lambda at: self._end_call(call, CallOutcome.HOUSEHOLD_ANSWERED, time.monotonic()))

    def _caller_hangs_up(self, call: _Call, at: float) -> None:
        if call.phase is not _Phase.CONNECTED:
            return
        now = time.monotonic()
        call.hangup_at = at
        call.record.caller_hung_up_at = now
        self._end_call(call, CallOutcome.CALLER_HUNG_UP, now)
        if self._off_hook and self._line_call is call:
            self._send_dle_event(HANGUP_EVENT[self.cadence].value, now)

    def _dtmf(self, call: _Call, digit: str, at: float) -> None:
        if call.phase is _Phase.CONNECTED and self._off_hook and self._line_call is call:
            self._send_dle_event(digit, time.monotonic())

    def _end_call(self, call: _Call, outcome: CallOutcome, now: float) -> None:
        if call.phase is _Phase.ENDED:
            return
        call.phase = _Phase.ENDED
        self._cancel_timers(call)
        call.record.outcome = outcome
        call.record.ended_at = now
        log.info("virtual modem: call %d ended: %s", call.record.index, outcome.value)
        if self._live is call:
            self._live = None
        if call.handset_by_script and self._handset:
            self._set_handset(False, now)
        self._cond.notify_all()


    # ---- outgoing calls ----------------------------------------------------------------------

    def _start_dial(self, call: _OutCall, now: float) -> None:
        """Off-hook, wait for dial tone, send the digits, then let the exchange decide.

        No dial tone when the household's handset is up or an incoming call
        holds the line: the modem would hear their conversation or the caller,
        so it gives NO DIALTONE after S6 (the host should never get here).
        """
        record = call.record
        self._off_hook = True
        self._line_call = call
        self._mode = _Mode.DIALING
        self._swallow_lf = True
        if self._command_log:
            record.commands.append(self._command_log[-1])
        log.info("virtual modem: dialling %s (%s)", record.number, record.script.behaviour.value)
        if self._handset or self._live is not None:
            no_tone_at = now + self._real(DIAL_TONE_WAIT_S)
            self._schedule(call, no_tone_at, lambda at: self._dial_result(call, DialOutcome.NO_DIALTONE, NO_DIALTONE))
            return
        dialled_at = now + self._real(DIAL_TONE_DETECT_S + DTMF_DIGIT_S * len(record.number))
        if record.return_after_dial:
            self._schedule(call, dialled_at, lambda at: self._dial_returned(call))
        self._schedule(call, dialled_at + self._real(CALL_SETUP_S), lambda at: self._call_progress(call, at))

    def _dial_returned(self, call: _OutCall) -> None:
        """``ATD…;``: the digits are out; OK now, no answer/busy detection follows."""
        call.reported = True
        call.record.final = OK
        call.record.reported_at = time.monotonic()
        self._mode = _Mode.COMMAND
        self._final(OK)

    def _call_progress(self, call: _OutCall, at: float) -> None:
        """The exchange has routed the call: busy tone, or ringback until answer or S7."""
        record = call.record
        record.ringback_at = time.monotonic()
        behaviour = record.script.behaviour
        if behaviour is CalleeBehaviour.BUSY:
            self._schedule(call, at + self._real(BUSY_DETECT_S),
                           lambda t: self._dial_result(call, DialOutcome.BUSY, BUSY))
            return
        s7 = self._settings.s_registers.get(7) or DEFAULT_NO_ANSWER_S
        answer_after = record.script.answer_after_s
        if behaviour is CalleeBehaviour.ANSWERS and isinstance(answer_after, float | int) and answer_after < s7:
            self._schedule(call, at + self._real(answer_after), lambda t: self._callee_answers(call, t, at))
        else:
            self._schedule(call, at + self._real(s7), lambda t: self._dial_result(call, DialOutcome.NO_ANSWER, NO_ANSWER))

    def _callee_answers(self, call: _OutCall, at: float, ringback_from: float) -> None:
        """Pick-up: their audio, DTMF and hang-up clocks start; the modem notices later (+VRA)."""
        script = call.record.script
        call.phase = _Phase.CONNECTED
        call.answered_at = at
        call.record.answered_at = time.monotonic()
        for offset, digit in script.dtmf:
            self._schedule(call, at + self._real(offset), functools.partial(self._dtmf_timer, call, digit))
        if script.hang_up_after_s is not None:
            self._schedule(call, at + self._real(script.hang_up_after_s), lambda t: self._callee_hangs_up(call, t))
        if not call.reported:
            self._schedule(call, self._answer_detected_at(ringback_from, at), lambda t: self._report_answer(call))

    def _answer_detected_at(self, ringback_from: float, answered: float) -> float:
        """When ringback has been silent for +VRA: counted from the end of the last burst heard."""
        period = self._real(CADENCE_PERIOD_S[self.cadence])
        on = self._real(RINGBACK_ON_S[self.cadence])
        into = (answered - ringback_from) % period
        silent_from = answered if into < on else answered - (into - on)
        return max(answered, silent_from + self._real(RINGBACK_GOES_AWAY_S))

    def _report_answer(self, call: _OutCall) -> None:
        if call.phase is not _Phase.CONNECTED or call.reported:
            return
        if self._settings.fclass != VOICE_CLASS:
            self._dial_result(call, DialOutcome.NO_CARRIER, NO_CARRIER)
            return
        call.reported = True
        code = self.dialect.dial_answered_replies[0]
        call.record.final = code
        call.record.reported_at = time.monotonic()
        self._mode = _Mode.COMMAND
        self._final(code)
        self._cond.notify_all()

    def _dtmf_timer(self, call: _OutCall, digit: str, at: float) -> None:
        self._callee_dtmf(call, digit)

    def _callee_dtmf(self, call: _OutCall, digit: str) -> None:
        if call.phase is not _Phase.CONNECTED:
            return
        now = time.monotonic()
        call.record.dtmf_sent.append((now, digit))
        if call.reported and self._off_hook and self._line_call is call and self._mode is not _Mode.DIALING:
            self._send_dle_event(digit, now)

    def _callee_hangs_up(self, call: _OutCall, at: float) -> None:
        if call.phase is not _Phase.CONNECTED:
            return
        now = time.monotonic()
        call.record.callee_hung_up_at = now
        if not call.reported:  # gone before the modem noticed the answer: it hears busy tone
            self._dial_result(call, DialOutcome.CALLEE_HUNG_UP, BUSY)
            return
        call.hangup_at = at
        self._end_dial(call, DialOutcome.CALLEE_HUNG_UP, now)
        if self._off_hook and self._line_call is call:
            self._send_dle_event(HANGUP_EVENT[self.cadence].value, now)

    def _dial_result(self, call: _OutCall, outcome: DialOutcome, final: str) -> None:
        """Call progress ended the dial: final reply and back on-hook (or, after ';', a DLE code)."""
        now = time.monotonic()
        if call.reported:
            if outcome is DialOutcome.BUSY:
                call.hangup_at = now
                self._send_dle_event(DleEvent.BUSY.value, now)
            self._end_dial(call, outcome, now)
            return
        call.reported = True
        call.record.final = final
        call.record.reported_at = now
        self._mode = _Mode.COMMAND
        self._final(final)
        if self._line_call is call:
            self._off_hook = False
            self._line_call = None
            call.record.hung_up_at = now
        self._end_dial(call, outcome, now)

    def _feed_dialing(self, data: bytes, now: float) -> bytes:
        """V.250: any character while dialling aborts; the modem says NO CARRIER, on-hook."""
        data = self._skip_lf(data)
        if not data:
            return b""
        call = self._line_call
        if isinstance(call, _OutCall):
            log.info("virtual modem: host aborted dialling %s", call.record.number)
            self._dial_result(call, DialOutcome.ABORTED, NO_CARRIER)
        else:  # pragma: no cover - DIALING always has an outgoing call
            self._mode = _Mode.COMMAND
        return data[1:]

    def _end_dial(self, call: _OutCall, outcome: DialOutcome, now: float) -> None:
        if call.phase is _Phase.ENDED:
            return
        call.phase = _Phase.ENDED
        self._cancel_timers(call)
        call.record.outcome = outcome
        call.record.ended_at = now
        log.info("virtual modem: dial %d to %s ended: %s", call.record.index, call.record.number, outcome.value)
        self._cond.notify_all()

