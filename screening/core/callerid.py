"""Caller ID parsing: what voice modems print in formatted mode (``AT+VCID=1``).

Pure functions and one small accumulator; no I/O. The modem reader feeds every
line it reads through :func:`parse_cid_line`, adds the fields to a
:class:`CallerIdBuilder`, and builds a :class:`~screening.core.model.CallerID` once
the block looks complete or the line has been quiet for a moment.

What real modems print (USRobotics 5637, Conexant CX93001, and friends)::

    DATE = 0321            MMDD (some firmware: ``DATE=0321``; JP may send MMDDHHMM)
    TIME = 1405            HHMM
    NMBR = 0312345678      the number, or a reason code instead of it
    DDN_NMBR = ...         "dialable directory number" -- used like NMBR
    NAME = YAMADA TARO     Bellcore name, or a reason code (``O``/``P``)
    MESG = 080150          parameters the modem did not decode, hex TLV

Reason codes (Japan Number Display "reason for absence of number" and Bellcore)
are single letters ``P`` (withheld), ``O`` (out of area), ``C`` (payphone),
``S`` (service conflict), or words some firmware prints instead (``PRIVATE``,
``ANONYMOUS``, ``OUT-OF-AREA`` ...). They all become :class:`Reason`.

Everything here must survive whatever a flaky line or modem produces: no input
string makes these functions raise. Impossible dates/times are dropped (the raw
text stays in ``CallerID.raw_lines``), unparsable numbers keep ``raw_number``.
"""

from __future__ import annotations

import calendar
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from enum import StrEnum

from screening.core.model import CallerID, Reason
from screening.core.numbers import try_parse_number

log = logging.getLogger(__name__)


class CidField(StrEnum):
    """Caller ID field names as the modem prints them (upper case)."""

    DATE = "DATE"
    TIME = "TIME"
    NMBR = "NMBR"
    DDN_NMBR = "DDN_NMBR"  # dialable directory number (Rockwell/Conexant MDMF type 3)
    NAME = "NAME"
    MESG = "MESG"  # undecoded parameters as hex, e.g. 080150 = "name withheld"


# Spellings some firmware uses for the same fields (the NCID/mgetty tables
# match ``NU?M?BE?R``). Keys are compared upper-cased.
_FIELD_ALIASES: dict[str, CidField] = {
    **{f.value: f for f in CidField},
    "NMR": CidField.NMBR,
    "NBR": CidField.NMBR,
    "NUMBER": CidField.NMBR,
    "DDN": CidField.DDN_NMBR,
}

# Fields that carry the calling number (or a reason code in its place), in
# order of preference when more than one is present.
NUMBER_FIELDS: tuple[CidField, ...] = (CidField.NMBR, CidField.DDN_NMBR)

# ASCII-only key so that e.g. a stray non-ASCII letter never upper-cases into a
# field name; value is everything after the first '='.
_LINE_RE = re.compile(r"^([A-Za-z][A-Za-z_]*)[ \t]*=[ \t]*(.*)$", re.DOTALL)

# Every way a reason for "no number" shows up, after _normalise_code().
_REASON_WORDS: dict[str, Reason] = {
    "P": Reason.WITHHELD,
    "PRIVATE": Reason.WITHHELD,
    "PRIVATE NUMBER": Reason.WITHHELD,
    "ANONYMOUS": Reason.WITHHELD,
    "WITHHELD": Reason.WITHHELD,
    "RESTRICTED": Reason.WITHHELD,
    "BLOCKED": Reason.WITHHELD,
    "非通知": Reason.WITHHELD,
    "O": Reason.OUT_OF_AREA,
    "OUT OF AREA": Reason.OUT_OF_AREA,
    "OUTOFAREA": Reason.OUT_OF_AREA,
    "UNAVAILABLE": Reason.OUT_OF_AREA,
    "UNKNOWN": Reason.OUT_OF_AREA,
    "表示圏外": Reason.OUT_OF_AREA,
    "C": Reason.PAYPHONE,
    "PAYPHONE": Reason.PAYPHONE,
    "PAY PHONE": Reason.PAYPHONE,
    "PUBLIC PHONE": Reason.PAYPHONE,
    "COIN": Reason.PAYPHONE,
    "公衆電話": Reason.PAYPHONE,
    "S": Reason.SERVICE_CONFLICT,
    "SERVICE CONFLICT": Reason.SERVICE_CONFLICT,
    "サービス競合": Reason.SERVICE_CONFLICT,
}

# MESG TLV parameter types (Bellcore GR-30 MDMF / NTT Number Display).
_MESG_NUMBER_ABSENT = 0x04  # reason for absence of number
_MESG_NAME_ABSENT = 0x08  # reason for absence of name
_MESG_DATETIME = 0x01  # MMDDHHMM


# ---- single lines ----------------------------------------------------------


def parse_cid_line(line: str) -> tuple[CidField, str] | None:
    """Split one modem line into (field, value), or None if it is not caller ID.

    Accepts ``KEY = VALUE`` and ``KEY=VALUE``, any case for the key, and any
    surrounding whitespace including the modem's CR/LF framing. ``RING``,
    ``OK``, empty lines and garbage return None. The value is stripped but
    otherwise kept exactly (it may be empty or non-ASCII).
    """
    match = _LINE_RE.match(line.strip())
    if match is None:
        return None
    key, value = match.groups()
    cid_field = _FIELD_ALIASES.get(key.upper())
    if cid_field is None:
        return None
    return cid_field, value.strip()


def reason_from_code(value: str | None) -> Reason | None:
    """Map a reason code in any form modems print (``P``, ``Private``, ``OUT-OF-AREA``)."""
    if not value:
        return None
    return _REASON_WORDS.get(_normalise_code(value))


def _normalise_code(value: str) -> str:
    """Fold width/case and treat '-' and '_' like spaces, so spellings compare equal."""
    text = unicodedata.normalize("NFKC", value).upper()
    text = text.replace("-", " ").replace("_", " ")
    return " ".join(text.split())


# ---- dates, names, MESG -----------------------------------------------------


def valid_date(value: str | None) -> str | None:
    """Return MMDD if it is a real calendar day (29 Feb allowed: the year is unknown)."""
    if value is None or len(value) != 4 or not value.isascii() or not value.isdigit():
        if value:
            log.debug("caller ID: ignoring malformed DATE %r", value)
        return None
    month, day = int(value[:2]), int(value[2:])
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(2000, month)[1]:
        log.debug("caller ID: ignoring impossible DATE %r", value)
        return None
    return value


def valid_time(value: str | None) -> str | None:
    """Return HHMM if it is a real time of day."""
    if value is None or len(value) != 4 or not value.isascii() or not value.isdigit():
        if value:
            log.debug("caller ID: ignoring malformed TIME %r", value)
        return None
    if int(value[:2]) > 23 or int(value[2:]) > 59:
        log.debug("caller ID: ignoring impossible TIME %r", value)
        return None
    return value


def _split_date_time(date: str | None, time: str | None) -> tuple[str | None, str | None]:
    """Some firmware prints Number Display's MMDDHHMM as one DATE; split it."""
    if date and len(date) == 8 and date.isascii() and date.isdigit():
        return valid_date(date[:4]), valid_time(time) or valid_time(date[4:])
    return valid_date(date), valid_time(time)


def _clean_name(value: str | None) -> str | None:
    """Names go to logs and screens: drop control characters and blank names."""
    if not value:
        return None
    text = "".join(ch for ch in value if ch.isprintable()).strip()
    return text or None


def decode_mesg(value: str | None) -> dict[int, bytes]:
    """Decode a MESG hex payload as type/length/value parameters.

    Modems print parameters they do not understand this way, e.g. ``080150``
    is type 0x08 (reason for absence of name), length 1, value ``P``. Stops
    quietly at the first malformed parameter; never raises.
    """
    if not value:
        return {}
    text = "".join(value.split())
    try:
        data = bytes.fromhex(text)
    except ValueError:
        log.debug("caller ID: MESG %r is not hex", value)
        return {}
    params: dict[int, bytes] = {}
    pos = 0
    while pos + 2 <= len(data):
        kind, length = data[pos], data[pos + 1]
        payload = data[pos + 2 : pos + 2 + length]
        if len(payload) != length:
            log.debug("caller ID: MESG %r truncated", value)
            break
        params.setdefault(kind, payload)
        pos += 2 + length
    return params


def _mesg_reason(params: Mapping[int, bytes], kind: int) -> Reason | None:
    payload = params.get(kind)
    if payload is None:
        return None
    return reason_from_code(payload.decode("ascii", errors="replace"))


# ---- numbers -----------------------------------------------------------------

# What may appear in a caller ID number besides digits: a leading '+' and the
# separators people and some firmware use. Anything else ('#', letters, noise)
# means the line sent something that is not a number -- we must not let the
# digit-extracting normaliser turn "12#45" into 1245.
_NUMBER_CHARS = frozenset("0123456789+-() ./")


def normalise_number(raw: str | None, home_region: str) -> str | None:
    """E.164 for a caller ID number, or None if it is not a plausible number."""
    if not raw:
        return None
    text = unicodedata.normalize("NFKC", raw).strip()
    if not set(text) <= _NUMBER_CHARS or "+" in text[1:]:
        log.debug("caller ID: %r has characters a number cannot have", raw)
        return None
    parsed = try_parse_number(text, home_region)
    if parsed is None:
        log.debug("caller ID: number %r does not parse for %s", raw, home_region)
        return None
    return parsed.e164


# ---- whole blocks -----------------------------------------------------------


def _field_lookup(fields: Mapping[str, str]) -> dict[CidField, str]:
    """Accept CidField or plain-string keys in any case; ignore unknown keys."""
    result: dict[CidField, str] = {}
    for key, value in fields.items():
        cid_field = _FIELD_ALIASES.get(str(key).strip().upper())
        if cid_field is None:
            log.debug("caller ID: ignoring unknown field %r", key)
            continue
        result.setdefault(cid_field, "" if value is None else str(value).strip())
    return result


def _number_and_reason(found: Mapping[CidField, str]) -> tuple[str | None, Reason | None]:
    """First number and first reason code among the number fields.

    A reason code wins over a number: if any number field says ``P`` the call
    is withheld, whatever else was printed.
    """
    raw_number: str | None = None
    reason: Reason | None = None
    for cid_field in NUMBER_FIELDS:
        value = found.get(cid_field)
        if not value:
            continue
        code = reason_from_code(value)
        if code is not None:
            reason = reason or code
        elif raw_number is None:
            raw_number = value
    return raw_number, reason


def caller_id_from_fields(
    fields: Mapping[str, str],
    home_region: str,
    raw_lines: Iterable[str] = (),
) -> CallerID:
    """Turn one caller ID block's fields into a :class:`CallerID`.

    Rules, in order:

    * a reason code in a number field (or in MESG) wins over a number;
    * otherwise a NAME that is a reason code gives the reason when there is no
      number (Bellcore ``NAME = P``); with a number it just means "no name";
    * a number that cannot be parsed keeps ``raw_number``, ``number_e164=None``;
    * a block with no number field and no reason anywhere is "no caller ID":
      every field is None (only ``raw_lines`` is kept, for the log).
    """
    lines = tuple(raw_lines)
    found = _field_lookup(fields)
    raw_number, reason = _number_and_reason(found)
    mesg = decode_mesg(found.get(CidField.MESG))
    reason = reason or _mesg_reason(mesg, _MESG_NUMBER_ABSENT)

    name_value = found.get(CidField.NAME)
    name_reason = reason_from_code(name_value) or _mesg_reason(mesg, _MESG_NAME_ABSENT)
    name = None if reason_from_code(name_value) else _clean_name(name_value)
    if reason is None and raw_number is None:
        reason = name_reason

    has_number_field = any(f in found for f in NUMBER_FIELDS)
    if not has_number_field and reason is None:
        return CallerID(raw_lines=lines)

    date_text = found.get(CidField.DATE)
    time_text = found.get(CidField.TIME)
    if date_text is None and CidField.TIME not in found and _MESG_DATETIME in mesg:
        date_text = mesg[_MESG_DATETIME].decode("ascii", errors="replace")
    date, time = _split_date_time(date_text, time_text)

    if reason is not None:
        raw_number = None
    return CallerID(
        raw_number=raw_number,
        number_e164=normalise_number(raw_number, home_region),
        name=name,
        reason=reason,
        date=date,
        time=time,
        message=found.get(CidField.MESG) or None,
        raw_lines=lines,
    )


def caller_id_for_check(
    number: str,
    reason: Reason | None,
    name: str | None,
    home_region: str,
) -> CallerID:
    """Caller ID for ``mamoru check NUMBER [--reason P] [--name ...]``.

    Uses the same rules as the modem path, so a check behaves like a real
    call: an empty number with a reason means "no number, because ..."; an
    empty number without one means "no caller ID"; a reason wins over a number;
    ``PRIVATE`` typed as the number counts as the reason it names.
    """
    fields: dict[str, str] = {}
    if number.strip():
        fields[CidField.NMBR] = number.strip()
    if reason is not None:
        if number.strip():
            log.debug("check: reason %s given, ignoring number %r", reason.name, number)
        fields[CidField.NMBR] = reason.value
    if name:
        fields[CidField.NAME] = name
    return caller_id_from_fields(fields, home_region)


# ---- accumulator for the modem reader --------------------------------------


class CallerIdBuilder:
    """Collects the fields of one caller ID block as the modem prints them.

    Mutable on purpose: the modem reader owns one, adds lines as they arrive,
    calls :meth:`build` when :attr:`looks_complete` or after a short quiet gap
    (Japan and UK blocks often have no NAME), then :meth:`reset`.
    """

    def __init__(self) -> None:
        self._fields: dict[CidField, str] = {}
        self._raw_lines: list[str] = []
        self._name_after_number = False

    def add(self, field: CidField, value: str, raw_line: str) -> None:
        """Record one field. A later non-empty value replaces an earlier one."""
        if value or field not in self._fields:
            if field is CidField.MESG and self._fields.get(field):
                value = f"{self._fields[field]} {value}"  # several MESG lines: keep all
            self._fields[field] = value
        self._raw_lines.append(raw_line.rstrip("\r\n"))
        if field is CidField.NAME and self.has_number_field:
            self._name_after_number = True

    def add_line(self, line: str) -> bool:
        """Parse and add a raw modem line; False (nothing added) if it is not caller ID."""
        parsed = parse_cid_line(line)
        if parsed is None:
            return False
        self.add(parsed[0], parsed[1], line)
        return True

    @property
    def started(self) -> bool:
        """Any caller ID field seen since the last reset."""
        return bool(self._fields)

    @property
    def has_number_field(self) -> bool:
        """A number field (possibly empty or a reason code) has been seen."""
        return any(f in self._fields for f in NUMBER_FIELDS)

    @property
    def looks_complete(self) -> bool:
        """NAME arrived after the number (Bellcore order): nothing more will follow."""
        return self._name_after_number

    def fields(self) -> dict[CidField, str]:
        """A copy of the fields collected so far (for logging and tests)."""
        return dict(self._fields)

    def build(self, home_region: str) -> CallerID:
        """The CallerID for what has been collected; does not reset."""
        return caller_id_from_fields({str(k): v for k, v in self._fields.items()}, home_region, self._raw_lines)

    def reset(self) -> None:
        self._fields.clear()
        self._raw_lines.clear()
        self._name_after_number = False
