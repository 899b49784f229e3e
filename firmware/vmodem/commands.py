"""The AT command interpreter: bytes from the host, command lines, one handler per command, hook state."""

from __future__ import annotations

import logging
from collections.abc import Callable

from firmware.dle import DleEvent
from firmware.scenarios import (
    CalleeScript,
)
from firmware.vmodem.at import (
    _DEFERRED,
    BS,
    CONNECT,
    ERROR,
    FCLASS_VALUES,
    LF,
    NO_CARRIER,
    OK,
    VOICE_CLASS,
    AtCommand,
    _CommandError,
    _int_arg,
    _parse_dial_string,
    parse_at_body,
)
from firmware.vmodem.base import MAX_COMMAND_LEN, READ_SIZE, VTX_BUFFER_S, ModemBase
from firmware.vmodem.records import (
    CallOutcome,
    DialOutcome,
    DialRecord,
    _Call,
    _Mode,
    _OutCall,
    _Phase,
)

# Every part logs as the one emulator it is (``mamoru modem emulate`` quietens this name).
log = logging.getLogger("firmware.virtual_modem")


class AtCommands(ModemBase):
    """Reads the host's bytes and runs their commands."""

    def _command_handlers(self) -> dict[str, Callable[[AtCommand, list[str], float], str | None]]:
        """Each command's handler, by name (``&F`` is ``Z``; accepted-and-ignored ones just say OK)."""
        return {
            "E": self._cmd_echo, "V": self._cmd_verbose, "Q": self._cmd_quiet, "H": self._cmd_hook,
            "Z": self._cmd_reset, "&F": self._cmd_reset, "A": self._cmd_answer, "I": self._cmd_info,
            "S": self._cmd_s_register, "D": self._cmd_dial,
            "L": self._cmd_accept, "M": self._cmd_accept, "X": self._cmd_accept,
            "&C": self._cmd_accept, "&D": self._cmd_accept, "&K": self._cmd_accept,
            "+FCLASS": self._cmd_fclass, "+VCID": self._cmd_caller_id, "#CID": self._cmd_caller_id,
            "+VSM": self._cmd_vsm, "+VSD": self._cmd_vsd, "+VGT": self._cmd_gain,
            "+VGR": self._cmd_gain, "+VIT": self._cmd_gain, "+VLS": self._cmd_vls,
            "+VTX": self._cmd_vtx, "+VRX": self._cmd_vrx,
        }

    # ---- input -----------------------------------------------------------------------

    def _wants_read(self, now: float) -> bool:
        if self._mode is _Mode.VTX_DRAIN:
            return False
        if self._mode is _Mode.VTX and not self._silent:
            return self._play_clock - now < VTX_BUFFER_S * self.time_scale
        return True

    def _read_size(self, now: float) -> int:
        if self._mode is not _Mode.VTX or self._silent:
            return READ_SIZE
        room_s = VTX_BUFFER_S * self.time_scale - max(0.0, self._play_clock - now)
        return max(64, min(READ_SIZE, int(room_s * self._rate_real)))

    def _on_input(self, data: bytes, now: float) -> None:
        if self._silent:
            log.debug("virtual modem (silent): discarding %d bytes", len(data))
            return
        while data:
            if self._mode is _Mode.COMMAND:
                data = self._feed_command(data, now)
            elif self._mode is _Mode.VTX:
                data = self._feed_vtx(data, now)
            elif self._mode is _Mode.VRX:
                data = self._feed_vrx(data, now)
            elif self._mode is _Mode.DIALING:
                data = self._feed_dialing(data, now)
            else:
                self._deferred += data
                return

    def _feed_command(self, data: bytes, now: float) -> bytes:
        i = 0
        while i < len(data):
            j = data.find(b"\r", i)
            end = len(data) if j < 0 else j + 1
            piece = data[i:end]
            if self._settings.echo:
                self._emit(piece)  # a modem echoes what it receives, as it receives it
            self._buffer_line(piece if j < 0 else piece[:-1])
            i = end
            if j < 0:
                break
            line, overflow = bytes(self._line), self._overflow
            self._line.clear()
            self._overflow = False
            self._execute_line(line, overflow, now)
            if self._mode is not _Mode.COMMAND:
                return self._skip_lf(data[i:])
        return b""

    def _skip_lf(self, data: bytes) -> bytes:
        """A CRLF-terminated +VTX/+VRX: the LF is line ending, not the first audio byte."""
        if not self._swallow_lf or not data:
            return data
        self._swallow_lf = False
        return data[1:] if data[0] == LF else data

    def _buffer_line(self, piece: bytes) -> None:
        piece = piece.replace(b"\n", b"")
        if b"\x08" in piece:
            for byte in piece:
                if byte == BS:
                    if self._line:
                        self._line.pop()
                else:
                    self._append_line(bytes([byte]))
        else:
            self._append_line(piece)

    def _append_line(self, piece: bytes) -> None:
        room = MAX_COMMAND_LEN - len(self._line)
        if len(piece) > room:
            self._overflow = True
            piece = piece[: max(0, room)]
        self._line += piece


    # ---- command execution ----------------------------------------------------------------

    def _execute_line(self, line: bytes, overflow: bool, now: float) -> None:
        text = line.decode("latin-1")
        start = text.upper().find("AT")
        if start < 0:
            if text.strip():
                log.debug("virtual modem: ignoring line without AT: %r", text)
            return
        command = text[start:]
        self._note_command(now, command)
        if overflow or not (command.isascii() and command.isprintable()):
            log.info("virtual modem: rejecting %s command line", "overlong" if overflow else "non-ASCII")
            self._final(ERROR)
            return
        try:
            cmds = parse_at_body(command[2:])
        except ValueError as exc:
            log.info("virtual modem: malformed %r: %s", command, exc)
            self._final(ERROR)
            return
        self._run_commands(cmds, now)

    def _run_commands(self, cmds: list[AtCommand], now: float) -> None:
        info: list[str] = []
        final: str | None = None
        self._after_reply = None
        for cmd in cmds:
            handler = self._handlers.get(cmd.name)
            try:
                if handler is None:
                    raise _CommandError(f"unknown command {cmd.name}")
                final = handler(cmd, info, now)
            except _CommandError as exc:
                log.info("virtual modem: ERROR for %s%s%s: %s", cmd.name, cmd.op, cmd.arg, exc)
                final = ERROR
                self._after_reply = None
            if final is not None:
                break
        if final == _DEFERRED:  # the D command answers once call progress is known
            self._after_reply = None
            return
        self._final(final or OK, info)
        after, self._after_reply = self._after_reply, None
        if after is not None:
            after(now)

    def _note_command(self, now: float, command: str) -> None:
        entry = (now, command.strip())
        self._command_log.append(entry)
        call = self._live or self._line_call
        if call is not None:
            call.record.commands.append(entry)

    def _require_voice(self) -> None:
        if self._settings.fclass != VOICE_CLASS:
            raise _CommandError("voice command outside +FCLASS=8")

    @staticmethod
    def _flag(cmd: AtCommand) -> bool:
        if cmd.arg not in ("", "0", "1"):
            raise _CommandError(f"bad flag {cmd.arg!r}")
        return cmd.arg == "1"

    def _off_hook_final(self) -> str | None:
        """The dialect's reply to going off-hook in voice mode (None = plain OK)."""
        final = self.dialect.off_hook_replies[0]
        return None if final == OK else final

    # basic commands

    def _cmd_echo(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._settings.echo = self._flag(cmd)
        return None

    def _cmd_verbose(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._settings.verbose = self._flag(cmd)
        return None

    def _cmd_quiet(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if self._flag(cmd):
            raise _CommandError("ATQ1 (quiet) is not emulated")
        return None

    def _cmd_hook(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if self._flag(cmd):
            self._go_off_hook(now)
        else:
            self._go_on_hook(now)
        return None

    def _cmd_reset(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if cmd.arg not in ("", "0", "1"):
            raise _CommandError("bad profile")
        self._go_on_hook(now)
        self._power_on()
        return None

    def _cmd_answer(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if self._settings.fclass == VOICE_CLASS:
            self._go_off_hook(now)
            return self._off_hook_final()
        # Data/fax answer: a voice caller never sends a carrier, so the handshake fails.
        self._go_off_hook(now)
        self._go_on_hook(now)
        return NO_CARRIER

    def _cmd_info(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if cmd.arg in ("", "0"):
            info.append(self.dialect.ati0_reply)
        elif cmd.arg == "3":
            info.append(self.dialect.ati3_reply)
        else:
            raise _CommandError(f"ATI{cmd.arg} not emulated")
        return None

    def _cmd_accept(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        """Settings with no effect on an emulated line (speaker, result set, DTR/DCD)."""
        return None

    def _cmd_dial(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        """``ATD[T|P]<digits>[;]``: seize the line, dial, then report call progress.

        Outcomes are timers (see ``_start_dial``); the final reply is deferred.
        """
        number, return_after_dial = _parse_dial_string(cmd.arg)
        if self._off_hook:
            raise _CommandError("dialling from the off-hook voice command state is not emulated")
        script, audio = self._next_callee(number)
        if script is None:
            log.warning("virtual modem: %s dialled with no expect_dial script; it will ring out", number)
            script = CalleeScript.no_answer(label="unscripted")
        raw = self._command_log[-1][1] if self._command_log else f"ATD{cmd.arg}"
        record = DialRecord(index=len(self._dials), dial_string=raw, number=number, script=script,
                            dialled_at=now, return_after_dial=return_after_dial)
        self._dials.append(record)
        self._start_dial(_OutCall(record=record, audio=audio), now)
        return _DEFERRED

    def _next_callee(self, number: str) -> tuple[CalleeScript | None, bytes]:
        queued = self._callees.get(number)
        if not queued:
            return None, b""
        return queued.popleft() if len(queued) > 1 else queued[0]

    def _cmd_s_register(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        reg_text, _, value = cmd.arg.partition(",")
        register = _int_arg(reg_text)
        if cmd.op == "?":
            info.append(f"{self._settings.s_registers.get(register, 0):03d}")
        elif cmd.op == "=":
            self._settings.s_registers[register] = _int_arg(value or "0")
        else:
            raise _CommandError("bare S-register")
        return None

    # extended commands

    def _cmd_fclass(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if cmd.op == "=":
            if cmd.arg not in FCLASS_VALUES:
                raise _CommandError(f"unsupported class {cmd.arg!r}")
            self._settings.fclass = cmd.arg
        elif cmd.op == "?":
            info.append(self._settings.fclass)
        elif cmd.op == "=?":
            info.append(",".join(FCLASS_VALUES))
        else:
            raise _CommandError("+FCLASS needs an operator")
        return None

    def _cmd_caller_id(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        if cmd.op == "=":
            if cmd.arg not in ("0", "1"):
                raise _CommandError(f"caller ID mode {cmd.arg!r} not emulated")
            self._settings.caller_id = cmd.arg == "1"
        elif cmd.op == "?":
            info.append("1" if self._settings.caller_id else "0")
        elif cmd.op == "=?":
            info.append("(0,1)")
        else:
            raise _CommandError(f"{cmd.name} needs an operator")
        return None

    def _cmd_vsm(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._require_voice()
        if cmd.op == "=":
            self._settings.vsm = self._check_vsm(cmd.arg)
        elif cmd.op == "?":
            info.append(self._settings.vsm or ",".join(self._vsm_args))
        elif cmd.op == "=?":
            info.append(f'{self._vsm_args[0]},"8-BIT LINEAR",(0),(0),({self.dialect.sample_rate})')
        else:
            raise _CommandError("+VSM needs an operator")
        return None

    def _check_vsm(self, arg: str) -> str:
        """Accept only the compression the dialect streams (u8 linear at its rate)."""
        args = [a.strip() for a in arg.split(",")]
        if len(args) > len(self._vsm_args) or not all(a.isdigit() for a in args):
            raise _CommandError(f"bad +VSM arguments {arg!r}")
        if args[0] != self._vsm_args[0]:
            raise _CommandError(f"compression {args[0]} not offered by {self.dialect.key}")
        if len(args) > 1 and int(args[1]) != self.dialect.sample_rate:
            raise _CommandError(f"sample rate {args[1]} not emulated")
        return ",".join(args)

    def _cmd_vsd(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._require_voice()
        if cmd.op == "=":
            parts = cmd.arg.split(",")
            if len(parts) != 2:
                raise _CommandError("+VSD takes sensitivity,duration")
            self._settings.vsd = (_int_arg(parts[0]), _int_arg(parts[1]))
        elif cmd.op == "?":
            info.append("{},{}".format(*self._settings.vsd))
        elif cmd.op == "=?":
            info.append("(0-255),(0-255)")
        else:
            raise _CommandError("+VSD needs an operator")
        return None

    def _cmd_gain(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        """+VGT, +VGR, +VIT: stored and reported; audio is not scaled by them."""
        self._require_voice()
        attr = {"+VGT": "vgt", "+VGR": "vgr", "+VIT": "vit"}[cmd.name]
        if cmd.op == "=":
            setattr(self._settings, attr, _int_arg(cmd.arg))
        elif cmd.op == "?":
            info.append(str(getattr(self._settings, attr)))
        elif cmd.op == "=?":
            info.append("(0-255)")
        else:
            raise _CommandError(f"{cmd.name} needs an operator")
        return None

    def _cmd_vls(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._require_voice()
        if cmd.op == "=":
            if cmd.arg == "0":
                self._go_on_hook(now)
                return None
            if cmd.arg == "1":
                self._go_off_hook(now)
                return self._off_hook_final()
            raise _CommandError(f"+VLS={cmd.arg} (local devices) not emulated")
        if cmd.op == "?":
            info.append("1" if self._off_hook else "0")
        elif cmd.op == "=?":
            info.append("0,1")
        else:
            raise _CommandError("+VLS needs an operator")
        return None

    def _cmd_vtx(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._require_data_state(cmd)
        self._after_reply = self._enter_vtx
        return CONNECT

    def _cmd_vrx(self, cmd: AtCommand, info: list[str], now: float) -> str | None:
        self._require_data_state(cmd)
        self._after_reply = self._enter_vrx
        return CONNECT

    def _require_data_state(self, cmd: AtCommand) -> None:
        self._require_voice()
        if cmd.op or cmd.arg:
            raise _CommandError(f"{cmd.name} takes no arguments")
        if not self._off_hook:
            raise _CommandError(f"{cmd.name} while on-hook")


    # ---- hook state --------------------------------------------------------------------

    def _go_off_hook(self, now: float) -> None:
        if self._off_hook:
            return
        self._off_hook = True
        call = self._live
        if call is None:
            log.debug("virtual modem: off-hook with no call (line seized)")
        elif call.phase is _Phase.ALERTING:
            self._answer(call, now)
        elif call.phase is _Phase.CAR:
            self._primary_response(call, now)
        else:
            log.info("virtual modem: off-hook during %s call; not answering it", call.phase.value)

    def _go_on_hook(self, now: float) -> None:
        if not self._off_hook:
            return
        self._off_hook = False
        self._mode = _Mode.COMMAND
        call, self._line_call = self._line_call, None
        if call is None:
            return
        if isinstance(call, _Call) and call.phase is _Phase.ND_DATA:
            self._nd_on_hook(call, now)
            return
        call.record.hung_up_at = now
        if isinstance(call, _OutCall):
            connected = call.phase is _Phase.CONNECTED
            self._end_dial(call, DialOutcome.ANSWERED if connected else DialOutcome.ABORTED, now)
        elif call.phase is _Phase.CONNECTED:
            self._end_call(call, CallOutcome.ANSWERED, now)
        self._cond.notify_all()

    def _set_handset(self, off_hook: bool, now: float) -> None:
        if off_hook == self._handset:
            return
        self._handset = off_hook
        code = DleEvent.HANDSET_OFF_HOOK if off_hook else DleEvent.HANDSET_ON_HOOK
        self._send_dle_event(code.value, now)

