"""The hub's PostgreSQL schema: every migration, in order, in one place.

Times are ``timestamptz`` (UTC on the wire, UTC in the database). Every unit message table has
the primary key ``(unit, id)`` with the unit's message id, so ``ON CONFLICT DO NOTHING`` makes
QoS 1 redelivery and spool replays harmless. At prefecture scale ``calls`` is range-partitioned
by month (docs/hub.md); the primary key then gains ``started``.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg.rows import tuple_row

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: units, their messages, commands, reviews.
    """
    CREATE TABLE units (
        unit text PRIMARY KEY,
        household text,
        area text NOT NULL DEFAULT '',
        first_seen timestamptz NOT NULL DEFAULT now(),
        last_seen timestamptz,
        online boolean NOT NULL DEFAULT false,
        status_at timestamptz,
        line text,
        version text,
        disk_free_mb bigint,
        speech_model text,
        feed_version bigint,
        faults text[] NOT NULL DEFAULT '{}',
        health_at timestamptz
    );
    CREATE TABLE calls (
        unit text NOT NULL, id text NOT NULL,
        call_id bigint NOT NULL, started timestamptz NOT NULL, number text NOT NULL,
        category text NOT NULL, action text NOT NULL, outcome text, verdict text,
        flags text[] NOT NULL, excerpt text NOT NULL, alerted boolean NOT NULL,
        sent timestamptz NOT NULL, received timestamptz NOT NULL DEFAULT clock_timestamp(),
        acknowledged_at timestamptz, acknowledged_by text,
        PRIMARY KEY (unit, id)
    );
    CREATE INDEX calls_unit_started ON calls (unit, started DESC);
    CREATE INDEX calls_started ON calls (started);
    CREATE TABLE reports (
        unit text NOT NULL, id text NOT NULL,
        number text NOT NULL, call_id bigint NOT NULL, heard timestamptz NOT NULL, phrases text[] NOT NULL,
        sent timestamptz NOT NULL, received timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (unit, id)
    );
    CREATE INDEX reports_number ON reports (number);
    CREATE TABLE health (
        unit text NOT NULL, id text NOT NULL, line text NOT NULL, sent timestamptz NOT NULL,
        received timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (unit, id)
    );
    CREATE TABLE acks (
        unit text NOT NULL, id text NOT NULL, command text NOT NULL, result text NOT NULL, reason text NOT NULL,
        sent timestamptz NOT NULL, received timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (unit, id)
    );
    CREATE TABLE recordings (
        unit text NOT NULL, id text NOT NULL, call_id bigint NOT NULL, command text NOT NULL,
        sha256 text NOT NULL, wav bytea NOT NULL,
        sent timestamptz NOT NULL, received timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (unit, id)
    );
    CREATE TABLE commands (
        id text PRIMARY KEY, unit text NOT NULL, action text NOT NULL, by_whom text NOT NULL,
        number text, call_id bigint, issued timestamptz NOT NULL, expires timestamptz NOT NULL
    );
    CREATE TABLE reviews (
        number text PRIMARY KEY, decision text NOT NULL, by_whom text NOT NULL,
        decided timestamptz NOT NULL DEFAULT now(), feed_version bigint
    );
    CREATE TABLE rejected (
        seq bigserial PRIMARY KEY, unit text, topic text NOT NULL, reason text NOT NULL,
        received timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    """,
    # 2: hub page accounts (argon2 hashes); a family account sees one household, police one area or all.
    """
    CREATE TABLE hub_accounts (
        name text PRIMARY KEY, password_hash text NOT NULL, role text NOT NULL,
        household text, area text, created timestamptz NOT NULL DEFAULT now()
    );
    """,
)


def migrate(conn: psycopg.Connection) -> int:
    """Bring the schema up to date in one transaction per step; returns the version reached."""
    with conn.transaction():
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        # One hub at a time migrates; a second waits here instead of racing.
        conn.execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")
        with conn.cursor(row_factory=tuple_row) as cur:
            row = cur.execute("SELECT max(version) FROM schema_version").fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
            conn.execute(sql)  # type: ignore[call-overload]  # our own constant SQL
            conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))
            log.info("hub database migrated to schema %d", version)
    return len(MIGRATIONS)
