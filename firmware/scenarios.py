"""Scripted incoming calls for the virtual modem: ``CallScript``, TOML scenarios, the demo.

A scenario is what the telephone network does to the household's line: who
calls, what their caller ID says, how long they let it ring, what they say and
when they hang up. The virtual modem (``firmware/virtual_modem.py``) plays
scripts; this module only describes them and turns caller audio into the
modem's line format (unsigned 8-bit linear, 8 kHz), so it does no pty I/O.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal

from firmware.audio_format import wav_to_line_u8
from firmware.dialects import RingCadence
from firmware.dle import DTMF_DIGITS
from screening.core.audio import WavError
from screening.core.model import Reason

LINE_SAMPLE_RATE = 8000  # both emulated dialects stream 8 kHz u8 (firmware/dialects.py)
SILENCE_U8 = 0x80
REASON_CODES = frozenset(r.value for r in Reason)

# ---- demo numbers, written the way a Japanese modem prints them (no separators) ----
FAMILY_NUMBER = "0312345678"
BLOCKED_NUMBER = "0398765432"
WITHHELD = Reason.WITHHELD.value
INTERNATIONAL_NUMBER = "010442079460000"
OUT_OF_AREA = Reason.OUT_OF_AREA.value
PAYPHONE = Reason.PAYPHONE.value
POLICE_LOOKALIKE_NUMBER = "0335810110"
UNKNOWN_NUMBER = "0662223333"

DEMO_GAP_S = 3.0
DEMO_PATIENCE_S = 40.0  # a screened caller stays this long after answer (longer than any prompt at demo speed)
DEFAULT_AUDIO_S = 3.0


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the key."""


def _check_text(field_name: str, value: object) -> None:
    """Caller-ID text must be a string without CR/LF, or the modem's framing would break."""
    if value is None:
        return
    if not isinstance(value, str):
        raise ValueError(f"{field_name} must be a string, got {type(value).__name__}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"{field_name} must not contain CR or LF: {value!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class CallScript:
    """One incoming call as the network delivers it.

    Times are *line* seconds; the virtual modem multiplies them by its
    ``time_scale``. ``handset_off_hook_at_s`` is relative to the first ring:
    ``<= 0`` means the household's phone was already in use when the call came
    (call-waiting: caller ID only, no RING); ``> 0`` means someone picks up then.
    ``hang_up_after_s`` counts from whoever answered (modem or household).
    ``date``/``time`` default to the current MMDD/HHMM when the block is sent.
    """

    nmbr: str | None = None
    name: str | None = None
    date: str | None = None
    time: str | None = None
    mesg: str | None = None
    raw_cid_lines: tuple[str, ...] | None = None
    max_rings: int = 6
    caller_audio: bytes | Path | None = None
    hang_up_after_s: float | None = None
    dtmf: tuple[tuple[float, str], ...] = ()
    handset_off_hook_at_s: float | None = None
    gap_s: float = 0.0
    label: str = ""
    # jp_nd lines: the exact Number Display frame to send instead of one built from nmbr
    # (e.g. with a corrupted CRC); hex text is accepted, as scenario files write it.
    nd_frame: bytes | None = None

    def __post_init__(self) -> None:
        for name in ("nmbr", "name", "date", "time", "mesg", "label"):
            _check_text(name, getattr(self, name))
        if self.raw_cid_lines is not None:
            lines = tuple(self.raw_cid_lines)
            for line in lines:
                _check_text("raw_cid_lines[]", line)
            object.__setattr__(self, "raw_cid_lines", lines)
        if isinstance(self.max_rings, bool) or not isinstance(self.max_rings, int) or self.max_rings < 1:
            raise ValueError(f"max_rings must be an integer >= 1, got {self.max_rings!r}")
        object.__setattr__(self, "caller_audio", _normalise_audio_ref(self.caller_audio))
        for name in ("hang_up_after_s", "gap_s"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or value < 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.handset_off_hook_at_s is not None and not _is_number(self.handset_off_hook_at_s):
            raise ValueError(f"handset_off_hook_at_s must be a number, got {self.handset_off_hook_at_s!r}")
        object.__setattr__(self, "dtmf", _normalise_dtmf(self.dtmf))
        if isinstance(self.nd_frame, str):
            object.__setattr__(self, "nd_frame", bytes.fromhex(self.nd_frame))
        elif self.nd_frame is not None and not isinstance(self.nd_frame, bytes):
            raise ValueError(f"nd_frame must be bytes or hex text, got {type(self.nd_frame).__name__}")

    @property
    def call_waiting(self) -> bool:
        """True when the household's phone is already off-hook as the call arrives."""
        return self.handset_off_hook_at_s is not None and self.handset_off_hook_at_s <= 0

    def cid_lines(self, default_date: str, default_time: str) -> tuple[str, ...]:
        """The ``KEY = VALUE`` lines a modem prints for this call, in modem order."""
        if self.raw_cid_lines is not None:
            return self.raw_cid_lines
        lines: list[str] = []
        if self.mesg is not None:
            lines.append(f"MESG = {self.mesg}")
        lines.append(f"DATE = {self.date if self.date is not None else default_date}")
        lines.append(f"TIME = {self.time if self.time is not None else default_time}")
        if self.nmbr is not None:
            lines.append(f"NMBR = {self.nmbr}")
        if self.name is not None:
            lines.append(f"NAME = {self.name}")
        return tuple(lines)


class CalleeBehaviour(StrEnum):
    """What the far end of an outgoing call does when its phone rings."""

    ANSWERS = "answers"
    BUSY = "busy"
    NO_ANSWER = "no_answer"


BUSY: Final = "busy"  # CalleeScript(answer_after_s=BUSY): the dialled line is engaged


@dataclass(frozen=True, slots=True)
class CalleeScript:
    """The person (or line) at the far end of a call the modem dials out.

    Registered per dialled number with ``VirtualModem.expect_dial``.
    ``answer_after_s`` counts line seconds from the first ringback: a number
    means they pick up then, ``None`` means nobody answers (the modem's S7
    timer gives NO ANSWER), ``"busy"`` means the line is engaged. ``dtmf`` and
    ``hang_up_after_s`` count from the moment they picked up; ``audio`` is what
    they say (u8 8 kHz bytes or a WAV path; silence by default).
    """

    answer_after_s: float | Literal["busy"] | None = 2.0
    dtmf: tuple[tuple[float, str], ...] = ()
    hang_up_after_s: float | None = None
    audio: bytes | Path | None = None
    label: str = ""

    def __post_init__(self) -> None:
        answer = self.answer_after_s
        bad_text = isinstance(answer, str) and answer != BUSY
        bad_number = not isinstance(answer, str) and answer is not None and (not _is_number(answer) or answer < 0)
        if bad_text or bad_number:
            raise ValueError(f"answer_after_s must be a number >= 0, None or 'busy', got {answer!r}")
        if self.hang_up_after_s is not None and (not _is_number(self.hang_up_after_s) or self.hang_up_after_s < 0):
            raise ValueError(f"hang_up_after_s must be a number >= 0, got {self.hang_up_after_s!r}")
        _check_text("label", self.label)
        object.__setattr__(self, "audio", _normalise_audio_ref(self.audio))
        object.__setattr__(self, "dtmf", _normalise_dtmf(self.dtmf))

    @classmethod
    def busy(cls, label: str = "") -> CalleeScript:
        return cls(answer_after_s=BUSY, label=label)

    @classmethod
    def no_answer(cls, label: str = "") -> CalleeScript:
        return cls(answer_after_s=None, label=label)

    @property
    def behaviour(self) -> CalleeBehaviour:
        if self.answer_after_s is None:
            return CalleeBehaviour.NO_ANSWER
        if self.answer_after_s == BUSY:
            return CalleeBehaviour.BUSY
        return CalleeBehaviour.ANSWERS


def callee_audio_u8(script: CalleeScript) -> bytes:
    """What the callee says after answering, u8 at 8 kHz (silence if nothing is scripted)."""
    ref = script.audio
    if ref is None:
        return b""
    if isinstance(ref, bytes):
        return ref
    return load_wav_u8(ref)


def _normalise_audio_ref(value: object) -> bytes | Path | None:
    if value is None or isinstance(value, Path):
        return value
    if isinstance(value, str):
        return Path(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise ValueError(f"caller_audio must be bytes, a WAV path or None, got {type(value).__name__}")


def _normalise_dtmf(value: object) -> tuple[tuple[float, str], ...]:
    out: list[tuple[float, str]] = []
    for item in value or ():  # type: ignore[attr-defined]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ValueError(f"dtmf entries must be (seconds, digit) pairs, got {item!r}")
        at, digit = item
        if not _is_number(at) or at < 0:
            raise ValueError(f"dtmf time must be a number >= 0, got {at!r}")
        if not isinstance(digit, str) or len(digit) != 1 or digit.upper() not in DTMF_DIGITS:
            raise ValueError(f"dtmf digit must be one of 0-9 * # A-D, got {digit!r}")
        out.append((float(at), digit.upper()))
    return tuple(sorted(out))


# ---- caller audio -------------------------------------------------------------------


def caller_audio_u8(script: CallScript) -> bytes:
    """The caller's voice as the modem streams it: u8 linear at 8 kHz."""
    ref = script.caller_audio
    if ref is None:
        return default_caller_audio()
    if isinstance(ref, bytes):
        return ref
    return load_wav_u8(ref)


def _tone_u8(samples: list[float]) -> bytes:
    return bytes(max(0, min(255, round(SILENCE_U8 + 127 * s))) for s in samples)


# (duration s, pause after s, f0 Hz, two formants Hz): a vowel-ish syllable pattern.
_SYLLABLES: tuple[tuple[float, float, float, tuple[float, float]], ...] = (
    (0.20, 0.06, 190.0, (700.0, 1200.0)),
    (0.16, 0.05, 175.0, (300.0, 2300.0)),
    (0.24, 0.25, 160.0, (500.0, 900.0)),
    (0.18, 0.07, 185.0, (400.0, 2000.0)),
    (0.22, 0.35, 150.0, (650.0, 1100.0)),
)


def _syllable(duration: float, f0: float, formants: tuple[float, float]) -> list[float]:
    n = int(duration * LINE_SAMPLE_RATE)
    harmonics = range(1, int(3400 / f0) + 1)
    weights = [
        sum(math.exp(-(((h * f0 - f) / 180.0) ** 2)) for f in formants) + 0.08 / h for h in harmonics
    ]
    norm = 0.45 / sum(weights)
    phase = 0.0
    out: list[float] = []
    for i in range(n):
        phase += 2 * math.pi * f0 * (1.0 - 0.15 * i / n) / LINE_SAMPLE_RATE
        env = math.sin(math.pi * i / n)
        out.append(env * norm * sum(w * math.sin(h * phase) for h, w in zip(harmonics, weights)))
    return out


@lru_cache(maxsize=1)
def default_caller_audio() -> bytes:
    """~3 s of voiced, syllable-shaped bursts with pauses, deterministic.

    Speech-shaped rather than a steady tone so consumers (speech detection,
    silence detection, recording) see realistic energy gaps; pure Python so the
    emulator runs without numpy.
    """
    total = int(DEFAULT_AUDIO_S * LINE_SAMPLE_RATE)
    samples: list[float] = []
    i = 0
    while len(samples) < total - int(0.3 * LINE_SAMPLE_RATE):
        duration, pause, f0, formants = _SYLLABLES[i % len(_SYLLABLES)]
        samples += _syllable(duration, f0, formants)
        samples += [0.0] * int(pause * LINE_SAMPLE_RATE)
        i += 1
    samples = (samples + [0.0] * total)[:total]
    return _tone_u8(samples)


# (frequencies, on s, off s) of the tone a line plays once the far end has hung up.
_BUSY_TONES: dict[RingCadence, tuple[tuple[float, ...], float, float]] = {
    RingCadence.JAPAN: ((400.0,), 0.5, 0.5),
    RingCadence.NORTH_AMERICA: ((480.0, 620.0), 0.5, 0.5),
    RingCadence.UK: ((400.0,), 0.375, 0.375),
    RingCadence.JAPAN_ND: ((400.0,), 0.5, 0.5),
}


@lru_cache(maxsize=len(_BUSY_TONES))
def busy_tone(cadence: RingCadence) -> bytes:
    """One on/off period of the local busy tone, u8 at 8 kHz (streamed after a hang-up)."""
    freqs, on_s, off_s = _BUSY_TONES[cadence]
    on = int(on_s * LINE_SAMPLE_RATE)
    amp = 0.35 / len(freqs)
    tone = [
        sum(amp * math.sin(2 * math.pi * f * i / LINE_SAMPLE_RATE) for f in freqs) for i in range(on)
    ]
    return _tone_u8(tone) + bytes([SILENCE_U8]) * int(off_s * LINE_SAMPLE_RATE)


def load_wav_u8(path: Path) -> bytes:
    """Read any PCM WAV (8/16/24/32-bit, mono or multi-channel, any rate) as 8 kHz u8."""
    try:
        return wav_to_line_u8(path, LINE_SAMPLE_RATE)
    except WavError as exc:
        raise ValueError(f"{path}: cannot read caller audio WAV: {exc}") from exc


# ---- scenario files -----------------------------------------------------------------

_TOP_LEVEL_KEYS = frozenset({"call", "description", "name"})
_TEXT_KEYS = frozenset({"nmbr", "name", "date", "time", "mesg", "label"})
_NUMBER_KEYS = frozenset({"hang_up_after_s", "handset_off_hook_at_s", "gap_s"})
_SCRIPT_KEYS = frozenset(f.name for f in fields(CallScript))


def load_scenario(path: str | Path) -> list[CallScript]:
    """Read ``[[call]]`` tables from a TOML file; relative WAV paths are relative to it."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: invalid TOML: {exc}") from exc
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown:
        raise ScenarioError(f"{path}: unknown top-level key {unknown[0]!r}; expected [[call]] tables")
    calls = data.get("call", [])
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise ScenarioError(f"{path}: 'call' must be an array of tables ([[call]])")
    return [_script_from_table(path, i, table) for i, table in enumerate(calls)]


def _script_from_table(path: Path, index: int, table: dict[str, Any]) -> CallScript:
    where = f"{path}: call[{index}]"
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        kwargs[key] = _convert_key(path, f"{where}.{key}", key, value)
    try:
        return CallScript(**kwargs)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from exc


def _convert_key(path: Path, where: str, key: str, value: Any) -> Any:
    if key not in _SCRIPT_KEYS:
        raise ScenarioError(f"{where}: unknown key {key!r}; expected one of {', '.join(sorted(_SCRIPT_KEYS))}")
    if key in _TEXT_KEYS:
        if key == "nmbr" and isinstance(value, int):
            raise ScenarioError(f"{where}: must be a quoted string (a bare number loses its leading 0)")
        if not isinstance(value, str):
            raise ScenarioError(f"{where}: must be a string, got {type(value).__name__}")
        return value
    if key in _NUMBER_KEYS:
        if not _is_number(value):
            raise ScenarioError(f"{where}: must be a number, got {type(value).__name__}")
        return float(value)
    if key == "max_rings":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{where}: must be an integer, got {type(value).__name__}")
        return value
    if key == "raw_cid_lines":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ScenarioError(f"{where}: must be an array of strings")
        return tuple(value)
    if key == "nd_frame":
        if not isinstance(value, str):
            raise ScenarioError(f"{where}: must be hex text")
        return value
    if key == "caller_audio":
        if not isinstance(value, str):
            raise ScenarioError(f"{where}: must be a WAV file path string")
        audio = Path(value).expanduser()
        return audio if audio.is_absolute() else path.parent / audio
    if key == "dtmf":
        if not isinstance(value, list) or not all(isinstance(v, list) and len(v) == 2 for v in value):
            raise ScenarioError(f"{where}: must be an array of [seconds, \"digit\"] pairs")
        return tuple((v[0], v[1]) for v in value)
    raise ScenarioError(f"{where}: unsupported key")  # pragma: no cover - keys above are exhaustive


def demo_scenario() -> list[CallScript]:
    """The calls ``mamoru modem emulate`` plays: one of each thing the screener handles.

    Screened callers (not family) hang up ``DEMO_PATIENCE_S`` after being
    answered so the demo keeps moving even if the host never hangs up; the family
    call is picked up by the household if the screener lets it ring.
    """
    patient = DEMO_PATIENCE_S
    return [
        CallScript(label="family (allowlisted)", nmbr=FAMILY_NUMBER, gap_s=1.0,
                   handset_off_hook_at_s=7.0, hang_up_after_s=3.0),
        CallScript(label="blocklisted", nmbr=BLOCKED_NUMBER, gap_s=DEMO_GAP_S, hang_up_after_s=patient),
        CallScript(label="withheld", nmbr=WITHHELD, gap_s=DEMO_GAP_S, hang_up_after_s=patient),
        CallScript(label="international", nmbr=INTERNATIONAL_NUMBER, gap_s=DEMO_GAP_S, hang_up_after_s=patient),
        CallScript(label="out of area", nmbr=OUT_OF_AREA, gap_s=DEMO_GAP_S, hang_up_after_s=patient),
        CallScript(label="payphone", nmbr=PAYPHONE, gap_s=DEMO_GAP_S, hang_up_after_s=patient),
        CallScript(label="police look-alike", nmbr=POLICE_LOOKALIKE_NUMBER, gap_s=DEMO_GAP_S,
                   hang_up_after_s=patient),
        CallScript(label="unknown caller", nmbr=UNKNOWN_NUMBER, gap_s=DEMO_GAP_S, hang_up_after_s=60.0),
    ]
