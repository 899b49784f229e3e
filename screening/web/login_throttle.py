"""Login throttling that an attacker can neither race nor turn against the owner.

- **Atomic.** :meth:`LoginLimiter.begin` checks the lock *and* reserves the attempt in one
  step under one lock: an attempt still being checked (argon2 takes a while) already counts,
  so 60 parallel guesses get at most ``max_failures`` password checks, not 60.
- **Per source.** Failures lock the source address (an IPv6 client by its /64, which one
  household or one attacker gets whole), with a lock that doubles each time.
- **Never the owner.** A name is not locked for everybody because one source guessed it.
  Guesses at one name spread over many sources do lock that name, but only for browsers
  that never logged in as it: a successful login leaves a *device token* (a cookie bound to
  the name), and a browser showing it is counted on its own, apart from its address and
  from the name. The owner's phone keeps working while the name is under attack.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger(__name__)

DEVICE_COOKIE = "mamoru_device"
DEVICE_COOKIE_MAX_AGE = 365 * 24 * 3600
IPV6_SOURCE_PREFIX = 64  # one customer gets a whole /64: counting single addresses would be free to dodge


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """``max_failures`` wrong logins lock a source for ``lock_s``; each further lock doubles, up to ``max_lock_s``.

    ``name_max_failures`` wrong logins for one name from all sources together lock that name, for
    browsers without its device token only.
    """

    max_failures: int = 5
    lock_s: float = 60.0
    max_lock_s: float = 900.0
    forget_s: float = 24 * 3600.0  # a quiet day clears the doubling
    max_keys: int = 10000
    name_max_failures: int = 20


class KeyKind(StrEnum):
    SOURCE = "source"
    NAME = "name"
    DEVICE = "device"


@dataclass(slots=True)
class _Strikes:
    failures: int = 0
    pending: int = 0  # attempts reserved and not yet finished: they count against the limit already
    locks: int = 0
    locked_until: float = 0.0
    last: float = 0.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One reserved login attempt; hand it back to :meth:`LoginLimiter.finish` exactly once."""

    keys: tuple[tuple[KeyKind, str], ...]


def source_of(address: str) -> str:
    """The unit a source is counted by: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_SOURCE_PREFIX}", strict=False))
    return str(ip)


class LoginLimiter:
    """Failures per source, per name (for unknown browsers) and per device token; see the module doc."""

    def __init__(self, limits: LoginLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._strikes: OrderedDict[tuple[KeyKind, str], _Strikes] = OrderedDict()
        self._device_key = secrets.token_bytes(32)  # per process: a restart only costs the exemption

    # -- device tokens --

    def device_token(self, name: str) -> str:
        nonce = secrets.token_urlsafe(12)
        return f"{nonce}.{self._device_mac(nonce, name)}"

    def _device_mac(self, nonce: str, name: str) -> str:
        message = f"{nonce}\0{name.casefold()}".encode()
        return hmac.new(self._device_key, message, hashlib.sha256).hexdigest()[:32]

    def _device_valid(self, token: str | None, name: str) -> bool:
        if not token or not name or "." not in token:
            return False
        nonce, mac = token.split(".", 1)
        return hmac.compare_digest(mac.encode(), self._device_mac(nonce, name).encode())

    def keys(self, address: str, name: str, device: str | None) -> tuple[tuple[KeyKind, str], ...]:
        """What one attempt counts against."""
        if self._device_valid(device, name):
            assert device is not None
            return ((KeyKind.DEVICE, device.split(".", 1)[0]),)
        keys = [(KeyKind.SOURCE, source_of(address))]
        if name:
            keys.append((KeyKind.NAME, name.casefold()[:64]))
        return tuple(keys)

    # -- the check and the count, together --

    def _max(self, kind: KeyKind) -> int:
        return self.limits.name_max_failures if kind is KeyKind.NAME else self.limits.max_failures

    def begin(self, keys: tuple[tuple[KeyKind, str], ...]) -> Attempt | float:
        """Reserve an attempt, or the seconds to wait (> 0) when a key is locked or its budget is in use."""
        now = self._clock()
        with self._lock:
            wait = 0.0
            for key in keys:
                strikes = self._current(key, now)
                if strikes.locked_until > now:
                    wait = max(wait, strikes.locked_until - now)
                elif strikes.failures + strikes.pending >= self._max(key[0]):
                    # The rest of this budget is being checked right now: wait for the outcome.
                    wait = max(wait, self.limits.lock_s)
            if wait > 0:
                return wait
            for key in keys:
                strikes = self._current(key, now)
                strikes.pending += 1
                self._put(key, strikes)
            return Attempt(keys)

    def finish(self, attempt: Attempt, *, ok: bool | None) -> None:
        """``ok`` None: the password was never checked (every hash slot busy), so nothing is counted."""
        now = self._clock()
        with self._lock:
            for key in attempt.keys:
                strikes = self._current(key, now)
                strikes.pending = max(0, strikes.pending - 1)
                if ok and key[0] is not KeyKind.NAME:  # a name under attack stays watched
                    strikes.failures, strikes.locks = 0, 0
                elif ok is False:
                    self._fail(key, strikes, now)
                self._put(key, strikes)

    def _current(self, key: tuple[KeyKind, str], now: float) -> _Strikes:
        strikes = self._strikes.get(key) or _Strikes(last=now)
        if strikes.pending == 0 and strikes.locked_until <= now and now - strikes.last > self.limits.forget_s:
            strikes = _Strikes(last=now)
        return strikes

    def _fail(self, key: tuple[KeyKind, str], strikes: _Strikes, now: float) -> None:
        strikes.failures += 1
        strikes.last = now
        if strikes.failures >= self._max(key[0]):
            lock = min(self.limits.lock_s * 2**strikes.locks, self.limits.max_lock_s)
            strikes.locked_until, strikes.failures = now + lock, 0
            strikes.locks += 1
            log.warning("web login: %s %s locked for %.0f s after repeated failures", key[0].value, key[1], lock)

    def _put(self, key: tuple[KeyKind, str], strikes: _Strikes) -> None:
        self._strikes.pop(key, None)
        self._strikes[key] = strikes
        while len(self._strikes) > self.limits.max_keys:
            self._strikes.popitem(last=False)
