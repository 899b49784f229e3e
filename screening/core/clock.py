"""Times as people read them: the unit's local time with its zone. Stored and JSON times stay UTC (``Z``).

The unit's zone comes from its home region (JP -> Asia/Tokyo), not from the
system's TZ setting: a Raspberry Pi image ships with a zone nobody chose. The
web page, ``mamoru calls``, the doctor and the recording folders all use this,
so a relative who reads "14:05 JST" on one finds the same call on the others.
Pure: no clock of its own.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from screening.core.numbers import region_time_zones

__all__ = ["iso_utc", "local_stamp", "parse_iso_utc", "region_zone", "utc_now"]

log = logging.getLogger(__name__)


@lru_cache(maxsize=64)
def region_zone(region: str) -> tzinfo:
    """The unit's local time zone, from its home region (JP -> Asia/Tokyo).

    phonenumbers knows each region's zones; for a region with several (US) the one
    of its example number is taken, as good a guess as any without a config key.
    """
    for name in region_time_zones(region):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    log.warning("no time zone known for region %s; showing times in UTC", region)
    return UTC


def local_stamp(moment: datetime, zone: tzinfo, *, seconds: bool = True) -> str:
    """'2026-12-06 06:31:12 JST' (a naive ``moment`` is taken as UTC)."""
    local = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(zone)
    clock = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return f"{clock} {local.tzname()}"


def iso_utc(moment: datetime, *, timespec: str = "milliseconds") -> str:
    """ISO-8601 UTC with 'Z' (a naive ``moment`` is taken as UTC): sorts as text, so SQL can compare it.

    Milliseconds for the store; ``timespec="seconds"`` (truncated) for files people read and sign.
    """
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso_utc(text: str) -> datetime:
    """Parse an ISO-8601 timestamp ('Z' or any offset) to aware UTC; naive values are taken as UTC. Raises ValueError."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    """Now, aware, in UTC: the one clock every stored timestamp is taken from."""
    return datetime.now(UTC)
