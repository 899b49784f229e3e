"""Caller ID from the headers of a SIP INVITE.

Pure: no I/O, no clock. The SIP line hands over the INVITE's headers as
received (name, value) pairs plus the packet's source address, and gets back
the same :class:`~screening.core.model.CallerID` the modem path produces, so the
rules cannot tell a SIP call from a modem call.

Identity, in order of trust (the first identity that gives a number or a
reason decides):

1. ``P-Asserted-Identity`` and 2. ``Remote-Party-ID``: only when the packet
   came from a configured upstream (RFC 3325 trust domain). Anyone else can
   write these headers, so from elsewhere they are ignored and noted.
3. ``From`` (compact form ``f``): whatever the caller claims.

Withheld (:attr:`Reason.WITHHELD`) wins over any number when:

* a ``Privacy`` header asks for ``id``, ``header`` or ``user`` (honoured from
  anyone: it can only make screening stricter, never bypass it);
* a trusted ``Remote-Party-ID`` carries ``privacy=full`` / ``uri``;
* the deciding URI is ``anonymous`` (any case) or its host is
  ``anonymous.invalid`` (RFC 3323) -- unless its display name gives another
  Number Display reason (``"Coin line/payphone" <sip:anonymous@anonymous.invalid>``
  is a payphone: the HGW is understood to write the anonymous URI for every
  number-less call).

Gateway reason forms map like the modem's reason codes: URI users
``unavailable``, ``out-of-area``, ``O``, ``P``, ``C``, ``S`` … and, when the
URI carries no number, reason words in the display name.
Assumption (from NTT's published Hikari Denwa UNI spec as we remember it, not
verified against a live HGW): NTT sends the Number Display "reason for absence
of number" as the From display name -- ``Anonymous`` (P), ``Unavailable`` (O),
``Coin line/payphone`` (C), ``Interaction with other service`` (S). Japanese
words (非通知, 公衆電話, 表示圏外, サービス競合) are accepted too.

Hostile input: header count, header length and list lengths are capped, the
scanner is linear, and any surprise ends in a CallerID with no number and a
``note:`` line in ``raw_lines`` -- this function never raises.
"""

from __future__ import annotations

import ipaddress
import logging
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from urllib.parse import unquote

from screening.core.callerid import normalise_number, reason_from_code
from screening.core.model import CallerID, Reason

log = logging.getLogger(__name__)

MAX_HEADERS = 128  # an INVITE with more headers than this is not a phone calling
MAX_VALUE_CHARS = 2048  # per header value; the rest is cut (and noted)
MAX_IDENTITIES = 4  # comma-separated entries read per identity header
MAX_RAW_CHARS = 256  # per raw_lines entry (raw_lines go to the log)
MAX_NAME_CHARS = 64
MAX_NUMBER_CHARS = 32

_PAI = "p-asserted-identity"
_RPID = "remote-party-id"
_FROM = "from"
_PRIVACY = "privacy"
_COMPACT = {"f": _FROM}  # RFC 3261 compact form; the others have none
_WANTED = (_PAI, _RPID, _FROM, _PRIVACY)

_WITHHOLDING_PRIVACY = frozenset({"id", "header", "user"})  # RFC 3323/3325
_WITHHOLDING_RPID = frozenset({"full", "uri"})  # draft-ietf-sip-privacy-04
_ANONYMOUS_HOST = "anonymous.invalid"
_VISUAL_SEPARATORS = str.maketrans("", "", "-.() ")  # RFC 3966 visual separators

# SIP gateway spellings the modem table (callerid._REASON_WORDS) does not know.
_SIP_REASON_WORDS: dict[str, Reason] = {
    "ANONYMOUS": Reason.WITHHELD,
    "COIN LINE/PAYPHONE": Reason.PAYPHONE,
    "COIN LINE PAYPHONE": Reason.PAYPHONE,
    "INTERACTION WITH OTHER SERVICE": Reason.SERVICE_CONFLICT,
    "OUT OF AREA": Reason.OUT_OF_AREA,
    "NOT AVAILABLE": Reason.OUT_OF_AREA,
}


@dataclass(frozen=True, slots=True)
class _Identity:
    """One parsed name-addr / addr-spec."""

    display: str | None
    scheme: str
    user: str | None  # percent-decoded, user-params removed
    host: str | None
    params: dict[str, str]  # header params after the URI (RPID privacy=, party= …)


def caller_id_from_sip(
    headers: Iterable[tuple[str, str]],
    *,
    source_ip: str,
    trusted_upstreams: Iterable[str],
    home_region: str,
) -> CallerID:
    """Caller ID for one INVITE; never raises (see the module docstring)."""
    try:
        return _caller_id(headers, source_ip, trusted_upstreams, home_region)
    except Exception as exc:  # noqa: BLE001 -- hostile input must never stop screening
        log.warning("SIP caller ID: unparsable INVITE headers (%s); treating as no caller ID", type(exc).__name__)
        return CallerID(raw_lines=(f"note: unparsable headers ({type(exc).__name__})",))


def _caller_id(
    headers: Iterable[tuple[str, str]],
    source_ip: str,
    trusted_upstreams: Iterable[str],
    home_region: str,
) -> CallerID:
    raw: list[str] = []
    identity_lines: list[int] = []  # indexes into raw of identity headers (redacted if withheld)
    found: dict[str, list[str]] = {name: [] for name in _WANTED}
    count = 0
    for item in islice(iter(headers), MAX_HEADERS + 1):
        count += 1
        if count > MAX_HEADERS:
            raw.append(f"note: more than {MAX_HEADERS} headers; the rest ignored")
            break
        name, value = _header(item)
        if name is None or name not in found:
            continue
        if len(value) > MAX_VALUE_CHARS:
            raw.append(f"note: {name} value of {len(value)} chars cut to {MAX_VALUE_CHARS}")
            value = value[:MAX_VALUE_CHARS]
        found[name].append(value)
        raw.append(_bounded(f"{name}: {value}"))
        if name != _PRIVACY:
            identity_lines.append(len(raw) - 1)

    trusted = is_trusted(source_ip, trusted_upstreams)
    privacy = {tok.strip().lower() for value in found[_PRIVACY] for tok in value.split(";")[:16]}
    withheld = bool(privacy & _WITHHOLDING_PRIVACY) and "none" not in privacy

    ordered: list[tuple[str, list[_Identity]]] = []
    for name in (_PAI, _RPID):
        if not found[name]:
            continue
        if trusted:
            ordered.append((name, _identities(found[name])))
        else:
            raw.append(f"note: {name} ignored: {source_ip!r} is not a trusted upstream")
    if found[_FROM]:
        ordered.append((_FROM, _identities(found[_FROM][:1])))  # one From; extras are malformed

    raw_number: str | None = None
    reason: Reason | None = None
    name_text: str | None = None
    for header, identities in ordered:
        for ident in identities:
            if header == _RPID and ident.params.get("privacy", "").lower() in _WITHHOLDING_RPID:
                withheld = True
            number, ident_reason = _number_or_reason(ident)
            if number is None and ident_reason is None:
                continue
            raw_number, reason = number, ident_reason
            name_text = ident.display
            break
        if raw_number is not None or reason is not None:
            break
    if not ordered or all(not ids for _, ids in ordered):
        raw.append("note: no usable identity header")

    if withheld:
        reason = Reason.WITHHELD
        for index in identity_lines:  # raw_lines are stored and shown: keep a withheld identity out
            raw[index] = raw[index].split(":", 1)[0] + ": (withheld on request)"
    if reason is not None:
        raw_number = None
    name = None if withheld else _clean_name(name_text)  # a privacy request hides the name too
    if name is not None and _reason_word(name) is not None:
        name = None  # a reason word is not somebody's name
    if raw_number is None and reason is None:
        return CallerID(name=name, raw_lines=tuple(raw))
    return CallerID(
        raw_number=raw_number,
        number_e164=normalise_number(raw_number, home_region),
        name=name,
        reason=reason,
        raw_lines=tuple(raw),
    )


# ---- headers -------------------------------------------------------------------


def _header(item: object) -> tuple[str | None, str]:
    """(canonical lower-case name, value) or (None, '') for anything not a header pair."""
    if not isinstance(item, tuple | list) or len(item) != 2:
        return None, ""
    name, value = item
    if isinstance(name, bytes):
        name = name.decode("utf-8", errors="replace")
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(name, str) or not isinstance(value, str):
        return None, ""
    key = name[:64].strip().lower()
    return _COMPACT.get(key, key), value


def _bounded(text: str) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in text[: MAX_RAW_CHARS + 1])
    return text if len(text) <= MAX_RAW_CHARS else text[: MAX_RAW_CHARS - 1] + "…"


def is_trusted(source_ip: str, trusted_upstreams: Iterable[str]) -> bool:
    """Source address in one of the upstreams (addresses or CIDR networks; bad entries ignored)."""
    try:
        address = ipaddress.ip_address(str(source_ip).strip().strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    for entry in islice(iter(trusted_upstreams), 256):
        try:
            if address in ipaddress.ip_network(str(entry).strip(), strict=False):
                return True
        except ValueError:
            log.debug("SIP caller ID: ignoring bad trusted upstream %r", entry)
    return False


# ---- name-addr parsing -----------------------------------------------------------


def _split_list(value: str) -> list[str]:
    """Split a header value at commas outside quotes and <…> (at most MAX_IDENTITIES parts)."""
    parts: list[str] = []
    start, quoted, angle, escaped = 0, False, False, False
    for pos, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            parts.append(value[start:pos])
            start = pos + 1
            if len(parts) >= MAX_IDENTITIES:
                return parts
    parts.append(value[start:])
    return parts


def _identities(values: list[str]) -> list[_Identity]:
    result: list[_Identity] = []
    for value in values:
        for part in _split_list(value):
            ident = _parse_name_addr(part)
            if ident is not None:
                result.append(ident)
            if len(result) >= MAX_IDENTITIES:
                return result
    return result


def _parse_name_addr(text: str) -> _Identity | None:
    """``"Name" <uri>;params``, ``Name <uri>``, or a bare ``uri;params``; None if malformed."""
    text = text.strip()
    display: str | None = None
    if text.startswith('"'):
        chars: list[str] = []
        pos, escaped = 1, False
        while pos < len(text):
            ch = text[pos]
            if escaped:
                chars.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                break
            else:
                chars.append(ch)
            pos += 1
        else:
            return None  # unterminated quoted display name
        display = "".join(chars)
        text = text[pos + 1 :].strip()
        if not text.startswith("<"):
            return None
    if "<" in text:
        before, _, rest = text.partition("<")
        uri, closed, after = rest.partition(">")
        if not closed:
            return None
        if display is None:
            display = before.strip() or None
    else:
        uri, _, after = text.partition(";")
        after = ";" + after if after else ""
    scheme, user, host = _parse_uri(uri.strip())
    if not scheme:
        return None
    return _Identity(display, scheme, user, host, _params(after))


def _parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    """(scheme, user, host) for sip:/sips:/tel: URIs; ('', None, None) for anything else."""
    scheme, colon, rest = uri.partition(":")
    scheme = scheme.strip().lower()
    if not colon or scheme not in ("sip", "sips", "tel"):
        return "", None, None
    if scheme == "tel":
        return scheme, _user_text(rest.split(";", 1)[0]), None
    userinfo, at, hostport = rest.rpartition("@")
    if not at:
        return scheme, None, _host(rest)
    user = userinfo.split(":", 1)[0]  # drop a password
    return scheme, _user_text(user.split(";", 1)[0]), _host(hostport)


def _user_text(user: str) -> str | None:
    text = unquote(user).strip()
    return text or None


def _host(hostport: str) -> str | None:
    host = hostport.split(";", 1)[0].split("?", 1)[0].strip().lower()
    return host or None


def _params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in text.split(";")[1:16]:
        key, _, value = item.partition("=")
        if key.strip():
            params.setdefault(key.strip().lower(), value.strip().strip('"'))
    return params


# ---- meaning ---------------------------------------------------------------------


def _reason_word(text: str | None) -> Reason | None:
    """A reason in any spelling: modem codes, SIP gateway words, Japanese."""
    if not text:
        return None
    folded = " ".join(unicodedata.normalize("NFKC", text).upper().replace("-", " ").replace("_", " ").split())
    return _SIP_REASON_WORDS.get(folded) or reason_from_code(text)


def _number_or_reason(ident: _Identity) -> tuple[str | None, Reason | None]:
    """The number this identity shows, or why it shows none; (None, None) if neither."""
    # A gateway with no number may write anonymous@anonymous.invalid for every ND reason (the HGW,
    # as we understand it), so a payphone, out-of-area or service-conflict display name is the better reason.
    shown = _reason_word(ident.display)
    if ident.host == _ANONYMOUS_HOST:
        return None, shown or Reason.WITHHELD
    user = ident.user
    if user is not None:
        reason = _reason_word(user)
        if reason is Reason.WITHHELD and shown is not None:
            return None, shown
        if reason is not None:
            return None, reason
        folded = unicodedata.normalize("NFKC", user).translate(_VISUAL_SEPARATORS)
        if any(ch.isdigit() for ch in folded):
            return folded[:MAX_NUMBER_CHARS], None
    return None, shown


def _clean_name(value: str | None) -> str | None:
    """Names go to logs and screens: printable characters only, bounded, None if blank."""
    if not value:
        return None
    text = "".join(ch for ch in value[: MAX_NAME_CHARS * 4] if ch.isprintable()).strip()
    return text[:MAX_NAME_CHARS] or None
