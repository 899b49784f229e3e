"""Voice-modem dialects as frozen data: command strings, replies, audio format.

A dialect is chosen by config (``line.modem``) or, with ``auto``, from the
modem's own ``ATI3`` identification reply -- never by probing every tty.
The virtual modem (``firmware/virtual_modem.py``) answers exactly as these
describe, so the data here is the contract between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AudioFormat(StrEnum):
    UNSIGNED_8BIT_LINEAR = "u8"  # 0x80 = silence; what both supported modems stream in +VSM below


class RingCadence(StrEnum):
    """When RING lines come and where the caller ID block sits."""

    NORTH_AMERICA = "na"  # 2 s on / 4 s off; caller ID between 1st and 2nd ring (Bellcore)
    JAPAN = "jp"  # 1 s on / 2 s off; Number Display sent before the 1st ring
    UK = "uk"  # 0.4/0.2/0.4 on, 2 s off; caller ID before the 1st ring, often no NAME/DATE
    # Japan with Number Display decoded by us: CAR (0.5 s on / 0.5 s off) first, the primary
    # response, V.23 FSK caller ID, then normal 1 s on / 2 s off ringing (firmware/number_display.py).
    JAPAN_ND = "jp_nd"


CADENCE_PERIOD_S: dict[RingCadence, float] = {
    RingCadence.NORTH_AMERICA: 6.0,
    RingCadence.JAPAN: 3.0,
    RingCadence.UK: 3.0,
    RingCadence.JAPAN_ND: 3.0,  # the normal ringing after CAR
}


@dataclass(frozen=True, slots=True)
class ModemDialect:
    key: str  # config value: "usr", "conexant"
    description: str
    ati3_signatures: tuple[str, ...]  # substrings of the ATI3 reply identifying the chipset
    ati0_reply: str  # product code printed by ATI0
    ati3_reply: str  # what a real unit prints for ATI3 (virtual modem uses it)
    init_commands: tuple[str, ...]  # run in order after reset; each must answer OK
    voice_mode: str  # enter voice mode
    voice_format: str  # select 8 kHz audio format
    audio_format: AudioFormat
    sample_rate: int
    silence_detection: str  # report DLE s after ~5 s of silence while receiving
    off_hook: str  # go off-hook in voice mode (answer)
    off_hook_replies: tuple[str, ...]  # final replies that mean success
    transmit: str  # start playing: modem answers CONNECT, then takes shielded audio
    receive: str  # start recording: CONNECT, then modem streams shielded audio
    hang_up: str
    reset: str = "ATZ"
    echo_off: str = "ATE0"
    verbose_on: str = "ATV1"
    # Dialling out in voice mode (see "Dialling" below): format with number=<digits only>.
    dial: str = "ATDT{number}"
    dial_answered_replies: tuple[str, ...] = ("OK",)  # final replies meaning "the far end picked up"
    no_answer_timer: str = "ATS7={seconds}"  # S7: how long the modem lets it ring before NO ANSWER

    def matches(self, ati3_reply: str) -> bool:
        text = ati3_reply.lower()
        return any(sig.lower() in text for sig in self.ati3_signatures)


USR_5637 = ModemDialect(
    key="usr",
    description="U.S. Robotics USR5637 56K USB voice/fax modem",
    ati3_signatures=("U.S. Robotics", "USRobotics"),
    ati0_reply="5601",
    ati3_reply="U.S. Robotics 56K FAX USB V1.2.23",
    init_commands=("ATV1", "ATE0", "AT+VCID=1"),
    voice_mode="AT+FCLASS=8",
    voice_format="AT+VSM=128,8000",
    audio_format=AudioFormat.UNSIGNED_8BIT_LINEAR,
    sample_rate=8000,
    silence_detection="AT+VSD=128,50",
    off_hook="AT+VLS=1",
    off_hook_replies=("VCON", "OK"),
    transmit="AT+VTX",
    receive="AT+VRX",
    hang_up="ATH0",
    dial_answered_replies=("VCON", "OK"),
)

CONEXANT_CX93001 = ModemDialect(
    key="conexant",
    description="Conexant CX93001 USB modems (Zoom 3095, StarTech USB56KEMH2, Trendnet, generic)",
    ati3_signatures=("CX93001",),
    ati0_reply="56000",
    ati3_reply="CX93001-EIS_V0.2002-V92",
    init_commands=("ATV1", "ATE0", "AT+VCID=1"),
    voice_mode="AT+FCLASS=8",
    voice_format="AT+VSM=1,8000,0,0",
    audio_format=AudioFormat.UNSIGNED_8BIT_LINEAR,
    sample_rate=8000,
    silence_detection="AT+VSD=128,50",
    off_hook="AT+VLS=1",
    off_hook_replies=("OK",),
    transmit="AT+VTX",
    receive="AT+VRX",
    hang_up="ATH0",
)

DIALECTS: dict[str, ModemDialect] = {d.key: d for d in (USR_5637, CONEXANT_CX93001)}


def dialect_for_ati3(reply: str) -> ModemDialect | None:
    for dialect in DIALECTS.values():
        if dialect.matches(reply):
            return dialect
    return None


# ---- Dialling ----------------------------------------------------------------
#
# Both chipsets originate a voice call with a plain ``ATDT<digits>`` after
# ``AT+FCLASS=8`` (what vgetty's IS-101/V.253 driver sends). In voice mode the
# D command does call progress instead of a data handshake:
#
# * dial tone missing (S6 ~2 s) -> ``NO DIALTONE``, back on-hook;
# * busy tone -> ``BUSY``, back on-hook;
# * ringback for longer than S7 seconds -> ``NO ANSWER`` (some firmware says
#   ``NO CARRIER``), back on-hook;
# * ringback stops and stays away for the +VRA time (default 50 = 5.0 s) ->
#   the far end is presumed off-hook: ``VCON`` (USR) / ``OK`` (Conexant), and
#   the modem stays off-hook in voice command state, exactly like after
#   ``AT+VLS=1`` on an incoming call, so +VTX/+VRX/ATH0 work as usual.
#
# We do not use ``ATDT<digits>;``: in voice mode the ';' makes the modem say OK
# as soon as the digits are out, with no answer/busy detection at all, so the
# host could not tell a relative who picked up from a ringing empty house.
# Nor ``AT+VLS=1`` then ``ATDT``: dialling from the off-hook voice command
# state only sends DTMF on the existing loop (no call progress); the emulator
# answers it with ERROR rather than pretend.
# Any character sent while the modem dials aborts the call (V.250): it answers
# ``NO CARRIER`` and goes on-hook, which is how the host gives up early.
# The host sets S7 from its own ring timeout before each dial, so the modem
# reports NO ANSWER itself instead of ringing for its default 50-60 s.

RINGBACK_GOES_AWAY_S = 5.0  # +VRA default: silence after a ringback that counts as "answered"
DEFAULT_NO_ANSWER_S = 50  # S7 default (Conexant; USR ships 60)
DIAL_TONE_WAIT_S = 2.0  # S6: how long the modem waits for dial tone before NO DIALTONE

# Final result codes of a command in verbose mode (V.250 + V.253 VCON).
FINAL_REPLIES = frozenset({"OK", "ERROR", "CONNECT", "VCON", "NO CARRIER", "BUSY", "NO DIALTONE", "NO ANSWER"})
