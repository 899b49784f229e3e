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


CADENCE_PERIOD_S: dict[RingCadence, float] = {
    RingCadence.NORTH_AMERICA: 6.0,
    RingCadence.JAPAN: 3.0,
    RingCadence.UK: 3.0,
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


# Final result codes of a command in verbose mode (V.250 + V.253 VCON).
FINAL_REPLIES = frozenset({"OK", "ERROR", "CONNECT", "VCON", "NO CARRIER", "BUSY", "NO DIALTONE", "NO ANSWER"})
