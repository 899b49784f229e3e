"""The hub's PostgreSQL store (psycopg 3): idempotent message inserts and the pages' queries.

A batch of messages is written in one transaction; every insert is ``ON CONFLICT DO NOTHING`` on
``(unit, id)``, so writing the same batch twice (QoS 1 redelivery, a spool replay after the
database came back) stores each message once. Unit rows only move forward in time: an old health
or status message replayed late never overwrites a newer one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.rows import dict_row

from blocklist.feed_breadth import DEFAULT_PROTECTED, OFFICIAL_SUFFIXES
from screening.core.numbers import is_fixed_line
from screening.hubwire import CallSummary, Command, CommandAck, FraudReport, Health, Message, Recording, Status

from .schema import migrate

log = logging.getLogger(__name__)

MIN_HOUSEHOLDS = 3  # one household's reports never block a number alone


def is_protected_number(number: str) -> bool:
    """Emergency and official numbers (110/118/119, police stations …0110) never enter the shared list."""
    return number in DEFAULT_PROTECTED or (number.endswith(OFFICIAL_SUFFIXES) and is_fixed_line(number))


def _calls(group: list[CallSummary]) -> tuple[str, list[tuple[Any, ...]]]:
    return ("INSERT INTO calls (unit, id, call_id, started, number, category, action, outcome, verdict, flags,"
            " excerpt, alerted, sent) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            [(m.unit, m.id, m.call_id, m.started, m.number, m.category.value, m.action.value,
              m.outcome.value if m.outcome else None, m.verdict.value if m.verdict else None, list(m.flags),
              m.excerpt, m.alerted, m.sent) for m in group])  # fmt: skip


def _reports(group: list[FraudReport]) -> tuple[str, list[tuple[Any, ...]]]:
    return ("INSERT INTO reports (unit, id, number, call_id, heard, phrases, sent) VALUES (%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT DO NOTHING", [(m.unit, m.id, m.number, m.call_id, m.heard, list(m.phrases), m.sent)
                                        for m in group])  # fmt: skip


def _health(group: list[Health]) -> tuple[str, list[tuple[Any, ...]]]:
    return ("INSERT INTO health (unit, id, line, sent) VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            [(m.unit, m.id, m.line.value, m.sent) for m in group])  # fmt: skip


def _status(group: list[Status]) -> tuple[str, list[tuple[Any, ...]]]:
    # Arrival order, not ``sent``: the last will is composed at connect time, before "online".
    return ("UPDATE units SET online=%s, status_at=clock_timestamp() WHERE unit=%s",
            [(m.online, m.unit) for m in group])  # fmt: skip


def _acks(group: list[CommandAck]) -> tuple[str, list[tuple[Any, ...]]]:
    return ("INSERT INTO acks (unit, id, command, result, reason, sent) VALUES (%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT DO NOTHING", [(m.unit, m.id, m.command, m.result.value, m.reason, m.sent) for m in group])


def _recordings(group: list[Recording]) -> tuple[str, list[tuple[Any, ...]]]:
    # Only a recording the hub asked this unit for is kept: nobody can push audio unasked.
    return ("INSERT INTO recordings (unit, id, call_id, command, sha256, wav, sent) SELECT %s,%s,%s,%s,%s,%s,%s"
            " WHERE EXISTS (SELECT 1 FROM commands WHERE id=%s AND unit=%s AND call_id=%s"
            " AND action='request_recording') ON CONFLICT DO NOTHING",
            [(m.unit, m.id, m.call_id, m.command, m.sha256, m.wav, m.sent, m.command, m.unit, m.call_id)
             for m in group])  # fmt: skip


_INSERTS: dict[type[Any], Any] = {CallSummary: _calls, FraudReport: _reports, Health: _health, Status: _status,
                                  CommandAck: _acks, Recording: _recordings}  # fmt: skip


@dataclass(frozen=True, slots=True)
class QueueEntry:
    number: str
    households: int
    reports: int
    phrases: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime


class HubStore:
    """One connection per store; the ingest writer and each web request use their own store."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> HubStore:
        self._conn = psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row)  # type: ignore[arg-type]
        return self

    def migrate(self) -> int:
        return migrate(self.conn)

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self.open()
        assert self._conn is not None
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> HubStore:
        return self.open()

    def __exit__(self, *_: object) -> None:
        self.close()

    # ----------------------------------------------------------------- ingest

    def write(self, messages: Sequence[Message]) -> int:
        """Store a batch in one transaction; returns how many were new (the rest were duplicates).

        One ``executemany`` per table (psycopg pipelines it): a batch of 500 is a handful of round trips.
        """
        new = 0
        by_kind: dict[type[Any], list[Any]] = {}
        for message in messages:
            by_kind.setdefault(type(message), []).append(message)
        last_seen: dict[str, datetime] = {}
        for message in messages:
            last_seen[message.unit] = max(last_seen.get(message.unit, message.sent), message.sent)
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany("INSERT INTO units (unit, last_seen) VALUES (%s, %s) ON CONFLICT (unit) DO UPDATE"
                            " SET last_seen = greatest(units.last_seen, excluded.last_seen)",
                            sorted(last_seen.items()))  # fmt: skip
            for kind, group in by_kind.items():
                sql, rows = _INSERTS[kind](group)
                cur.executemany(sql, rows)  # type: ignore[arg-type]  # our own constant SQL
                new += max(cur.rowcount, 0)
                if kind is Health:
                    cur.executemany(
                        "UPDATE units SET line=%s, version=%s, disk_free_mb=%s, speech_model=%s, feed_version=%s,"
                        " faults=%s, health_at=%s WHERE unit=%s AND (health_at IS NULL OR health_at <= %s)",
                        [(m.line.value, m.version, m.disk_free_mb, m.speech_model, m.feed_version, list(m.faults),
                          m.sent, m.unit, m.sent) for m in group])  # fmt: skip
        return new

    def reject(self, unit: str | None, topic: str, reason: str) -> None:
        self.conn.execute("INSERT INTO rejected (unit, topic, reason) VALUES (%s, %s, %s)",
                          (unit, topic[:200], reason[:300]))  # fmt: skip

    # ----------------------------------------------------------------- units and commands

    def register_unit(self, unit: str, household: str, area: str) -> None:
        self.conn.execute("INSERT INTO units (unit, household, area) VALUES (%s,%s,%s) ON CONFLICT (unit) DO UPDATE"
                          " SET household=excluded.household, area=excluded.area", (unit, household, area))

    def record_command(self, command: Command) -> None:
        self.conn.execute("INSERT INTO commands (id, unit, action, by_whom, number, call_id, issued, expires)"
                          " VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                          (command.id, command.unit, command.action.value, command.by, command.number,
                           command.call_id, command.issued, command.valid_until))  # fmt: skip

    def units_of(self, household: str) -> list[str]:
        rows = self.conn.execute("SELECT unit FROM units WHERE household=%s ORDER BY unit", (household,)).fetchall()
        return [r["unit"] for r in rows]

    # ----------------------------------------------------------------- family

    def household_calls(self, household: str, limit: int = 100) -> list[dict[str, Any]]:
        return self.conn.execute(
            "SELECT c.* FROM calls c JOIN units u USING (unit) WHERE u.household=%s ORDER BY c.started DESC LIMIT %s",
            (household, limit)).fetchall()  # fmt: skip

    def household_call(self, household: str, unit: str, message_id: str) -> dict[str, Any] | None:
        return self.conn.execute(
            "SELECT c.* FROM calls c JOIN units u USING (unit) WHERE u.household=%s AND c.unit=%s AND c.id=%s",
            (household, unit, message_id)).fetchone()  # fmt: skip

    def acknowledge(self, unit: str, message_id: str, by: str) -> None:
        self.conn.execute("UPDATE calls SET acknowledged_at=now(), acknowledged_by=%s WHERE unit=%s AND id=%s"
                          " AND acknowledged_at IS NULL", (by, unit, message_id))  # fmt: skip

    def recording(self, unit: str, call_id: int) -> bytes | None:
        row = self.conn.execute("SELECT wav FROM recordings WHERE unit=%s AND call_id=%s ORDER BY received DESC"
                                " LIMIT 1", (unit, call_id)).fetchone()  # fmt: skip
        return bytes(row["wav"]) if row else None

    # ----------------------------------------------------------------- police: health and figures only

    def fleet(self, area: str | None = None, offline_after_s: int = 3600) -> list[dict[str, Any]]:
        """Per unit: state online/offline/faulty and last seen (a unit silent for an hour counts offline)."""
        return self.conn.execute(
            "SELECT unit, area, last_seen, version, line, faults, disk_free_mb,"
            " CASE WHEN line='fault' OR cardinality(faults) > 0 THEN 'faulty'"
            "      WHEN online AND last_seen > now() - make_interval(secs => %s) THEN 'online'"
            "      ELSE 'offline' END AS state"
            " FROM units WHERE (%s::text IS NULL OR area=%s) ORDER BY area, unit",
            (offline_after_s, area, area)).fetchall()  # fmt: skip

    def area_figures(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Per area in [start, end): calls by category, callers who hung up, fraud flags, alerts acknowledged."""
        return self.conn.execute(
            "SELECT u.area, c.category, count(*) AS calls,"
            " count(*) FILTER (WHERE c.outcome='caller_hung_up') AS hung_up,"
            " count(*) FILTER (WHERE c.verdict='fraud') AS fraud_flags,"
            " count(*) FILTER (WHERE c.alerted) AS alerts,"
            " count(*) FILTER (WHERE c.alerted AND c.acknowledged_at IS NOT NULL) AS alerts_acknowledged"
            " FROM calls c JOIN units u USING (unit) WHERE c.started >= %s AND c.started < %s"
            " GROUP BY u.area, c.category ORDER BY u.area, c.category", (start, end)).fetchall()  # fmt: skip

    def area_months(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Per area, UTC month ("YYYY-MM") and category in [start, end): calls and callers who hung up."""
        return self.conn.execute(
            "SELECT u.area, to_char(c.started AT TIME ZONE 'UTC', 'YYYY-MM') AS month, c.category, count(*) AS calls,"
            " count(*) FILTER (WHERE c.outcome='caller_hung_up') AS hung_up"
            " FROM calls c JOIN units u USING (unit) WHERE c.started >= %s AND c.started < %s"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", (start, end)).fetchall()  # fmt: skip

    # ----------------------------------------------------------------- reviewer

    def review_queue(self, min_households: int = MIN_HOUSEHOLDS) -> list[QueueEntry]:
        """Numbers reported by at least ``min_households`` households and not yet decided.

        A household is counted once however many reports its unit(s) sent: a flood from one unit
        is one household. Protected numbers never appear.
        """
        rows = self.conn.execute(
            "SELECT r.number, count(DISTINCT coalesce(u.household, r.unit)) AS households, count(*) AS reports,"
            " min(r.heard) AS first_seen, max(r.heard) AS last_seen,"
            " (SELECT array_agg(p ORDER BY n DESC, p) FROM (SELECT p, count(*) AS n FROM reports r2,"
            "   unnest(r2.phrases) AS p WHERE r2.number = r.number GROUP BY p ORDER BY n DESC, p LIMIT 10) t) AS phrases"
            " FROM reports r JOIN units u USING (unit) LEFT JOIN reviews v ON v.number = r.number"
            " WHERE v.number IS NULL GROUP BY r.number"
            " HAVING count(DISTINCT coalesce(u.household, r.unit)) >= %s ORDER BY households DESC, r.number",
            (min_households,)).fetchall()  # fmt: skip
        return [QueueEntry(r["number"], r["households"], r["reports"], tuple(r["phrases"] or ()), r["first_seen"],
                           r["last_seen"]) for r in rows if not is_protected_number(r["number"])]  # fmt: skip

    def decide(self, number: str, decision: str, by: str) -> None:
        self.conn.execute("INSERT INTO reviews (number, decision, by_whom) VALUES (%s,%s,%s)",
                          (number, decision, by))  # fmt: skip

    def approved_numbers(self) -> list[str]:
        rows = self.conn.execute("SELECT number FROM reviews WHERE decision='approved' ORDER BY number").fetchall()
        return [r["number"] for r in rows]

    def mark_published(self, numbers: Iterable[str], feed_version: int) -> None:
        self.conn.execute("UPDATE reviews SET feed_version=%s WHERE number = ANY(%s) AND feed_version IS NULL",
                          (feed_version, list(numbers)))  # fmt: skip

    def count(self, table: str) -> int:
        if table not in {"calls", "reports", "health", "acks", "recordings", "rejected", "units", "commands"}:
            raise ValueError(table)
        row = self.conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()
        return int(row["n"]) if row else 0


class HubRole(StrEnum):
    FAMILY = "family"  # one household's calls, transcripts, recordings; block/allow/acknowledge
    POLICE = "police"  # fleet health and per-area figures only: never call lists or audio
    REVIEWER = "reviewer"  # the shared-number queue: approve or reject


@dataclass(frozen=True, slots=True)
class HubAccount:
    name: str
    password_hash: str
    role: HubRole
    household: str | None
    area: str | None


def add_account(store: HubStore, name: str, password_hash: str, role: HubRole, household: str | None = None,
                area: str | None = None) -> None:
    if role is HubRole.FAMILY and not household:
        raise ValueError("a family account belongs to one household (--household)")
    store.conn.execute("INSERT INTO hub_accounts (name, password_hash, role, household, area) VALUES (%s,%s,%s,%s,%s)",
                       (name, password_hash, role.value, household, area))  # fmt: skip


def find_account(store: HubStore, name: str) -> HubAccount | None:
    row = store.conn.execute("SELECT * FROM hub_accounts WHERE name=%s", (name,)).fetchone()
    if row is None:
        return None
    return HubAccount(row["name"], row["password_hash"], HubRole(row["role"]), row["household"], row["area"])
