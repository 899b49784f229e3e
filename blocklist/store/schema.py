"""The schema of the call database, every table's: one ``PRAGMA user_version`` sequence.

Calls, events, flags, list entries, feeds and the alert outbox (``alerts``,
``deliveries``) share one SQLite file, so their migrations are one append-only
list: ``MIGRATIONS[i]`` brings a database from version ``i`` to ``i + 1``. The
numbers and SQL of existing migrations never change (a database written by an
older mamoru must open unchanged); a new table or column is a new migration.
Every migration can be re-run (``if_not_exists`` / column checks), so a
half-applied one is simply redone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from blocklist.store.rows import StoreError

__all__ = ["LISTS_GENERATION", "MIGRATIONS", "migrate"]

log = logging.getLogger(__name__)

LISTS_GENERATION = "lists_generation"  # meta key bumped by every list change


def _migration_1(db: Database) -> None:
    """Initial schema. ``if_not_exists`` everywhere so a half-applied run can be redone."""
    db.table("calls").create(
        {
            "id": int, "call_uid": str, "started_at": str, "line": str, "raw_number": str,
            "number_e164": str, "name": str, "reason_code": str, "cid_date": str, "cid_time": str,
            "category": str, "action": str, "rule": str, "reason": str, "prompt": str,
            "state": str, "end_reason": str, "ended_at": str, "error": str,
        },  # fmt: skip
        pk="id",
        not_null={"call_uid", "started_at", "line", "state"},
        if_not_exists=True,
    )
    db.table("calls").create_index(["call_uid"], unique=True, if_not_exists=True)
    db.table("calls").create_index(["state"], if_not_exists=True)
    db.table("calls").create_index(["started_at"], if_not_exists=True)
    db.table("events").create(
        {"id": int, "call_id": int, "at": str, "kind": str, "detail": str},
        pk="id",
        not_null={"at", "kind", "detail"},
        if_not_exists=True,
    )
    db.table("events").create_index(["call_id"], if_not_exists=True)
    db.table("events").create_index(["at"], if_not_exists=True)
    # value_end is '' (not NULL) for exact/prefix entries: SQLite treats NULLs as
    # distinct in UNIQUE constraints, which would defeat the upsert.
    db.table("list_entries").create(
        {
            "id": int, "list": str, "match": str, "value": str, "value_end": str, "source": str,
            "note": str, "added_at": str, "expires_at": str,
        },  # fmt: skip
        pk="id",
        not_null={"list", "match", "value", "value_end", "source", "note", "added_at"},
        defaults={"value_end": "", "source": "local", "note": ""},
        if_not_exists=True,
    )
    db.table("list_entries").create_index(["list", "match", "value", "value_end"], unique=True, if_not_exists=True)
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, '0')", [LISTS_GENERATION])


_MIGRATION_2_COLUMNS = (
    ("recording", "TEXT"),
    ("recording_bytes", "INTEGER"),
    ("recording_seconds", "REAL"),
    ("verdict", "TEXT CHECK (verdict IN ('fraud', 'suspicious', 'clean'))"),
    ("score", "REAL"),
    ("transcript", "TEXT"),
    ("reviewed_at", "TEXT"),
    ("fraud_at", "TEXT"),
)


def _migration_2(db: Database) -> None:
    """Recordings, detection results and review state on calls; flagged phrases in ``flags``.

    Plain ``ALTER TABLE ADD COLUMN`` (no table rebuild) so a large call history upgrades
    in place in milliseconds; columns that already exist are skipped so a half-applied
    run can be redone, like migration 1. The CHECK on ``verdict`` makes a bad spooled
    record an integrity error (logged and dropped) instead of a wrong verdict.
    """
    existing = set(db.table("calls").columns_dict)
    for name, sql_type in _MIGRATION_2_COLUMNS:
        if name not in existing:
            db.execute(f"ALTER TABLE calls ADD COLUMN {name} {sql_type}")
    db.table("calls").create_index(["recording"], if_not_exists=True)
    db.table("flags").create(
        {"id": int, "call_id": int, "phrase": str, "category": str, "start_s": float, "at": str},
        pk="id",
        not_null={"call_id", "phrase", "category", "at"},
        if_not_exists=True,
    )
    db.table("flags").create_index(["call_id"], if_not_exists=True)


def _migration_3(db: Database) -> None:
    """The alert outbox (``blocklist.outbox``): every alert is written before it is sent.

    ``alerts`` holds one row per event worth telling the family (``dedupe_key`` UNIQUE makes
    "one alert per call" a database guarantee, not a hope); ``deliveries`` one row per
    relative and channel, with its retry/escalation state. ``channel_index`` points into the
    relative's ``notify`` list in the config (-1: a phone call): the URLs hold passwords and
    tokens, so the database keeps only the masked form for display. The CHECKs turn a bug
    into an integrity error instead of a silently unsendable row.
    """
    db.execute(
        "CREATE TABLE IF NOT EXISTS alerts ("
        " id INTEGER PRIMARY KEY,"
        " created_at TEXT NOT NULL,"
        " kind TEXT NOT NULL CHECK (kind IN ('fraud', 'repeat_block', 'health', 'digest', 'test')),"
        " urgency TEXT NOT NULL CHECK (urgency IN ('urgent', 'normal')),"
        " call_id INTEGER,"
        " dedupe_key TEXT NOT NULL UNIQUE,"
        " subject TEXT NOT NULL,"
        " body TEXT NOT NULL,"
        " payload TEXT NOT NULL DEFAULT '{}',"
        " acked_at TEXT,"
        " acked_by TEXT)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS idx_alerts_created_at ON alerts (created_at)")
    db.execute("CREATE INDEX IF NOT EXISTS idx_alerts_call_id ON alerts (call_id)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS deliveries ("
        " id INTEGER PRIMARY KEY,"
        " alert_id INTEGER NOT NULL REFERENCES alerts (id),"
        " relative TEXT NOT NULL,"
        " channel TEXT NOT NULL,"
        " channel_index INTEGER NOT NULL,"
        " status TEXT NOT NULL CHECK (status IN"
        "  ('pending', 'sending', 'sent', 'failed', 'acknowledged', 'expired')),"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " next_attempt_at TEXT,"
        " last_error TEXT,"
        " sent_at TEXT,"
        " acked_at TEXT,"
        " escalation_step INTEGER NOT NULL DEFAULT 0,"
        " UNIQUE (alert_id, relative, channel_index))"
    )
    db.execute("CREATE INDEX IF NOT EXISTS idx_deliveries_due ON deliveries (status, next_attempt_at)")
    db.execute("CREATE INDEX IF NOT EXISTS idx_deliveries_relative_sent ON deliveries (relative, sent_at)")


def _migration_4(db: Database) -> None:
    """Signed feeds (``blocklist.feeds``): feed entries live beside hand-made ones.

    ``list_entries.feed`` is '' for entries a person added and the feed's name for
    entries a feed delivered; it joins the unique key, so a feed update (delete
    the feed's rows, insert the new ones) never touches or duplicates-away a
    family's own entry for the same number. ``feeds`` records each trusted feed
    and what was last applied from it.
    """
    if "feed" not in db.table("list_entries").columns_dict:
        db.execute("ALTER TABLE list_entries ADD COLUMN feed TEXT NOT NULL DEFAULT ''")
        db.execute("UPDATE list_entries SET feed = substr(source, 6) WHERE source LIKE 'feed:%'")
    for index in db.table("list_entries").indexes:
        if index.unique and index.columns == ["list", "match", "value", "value_end"]:
            db.execute(f"DROP INDEX [{index.name}]")
    db.execute(
        "CREATE UNIQUE INDEX IF NOT EXISTS idx_list_entries_key ON list_entries (list, match, value, value_end, feed)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS idx_list_entries_feed ON list_entries (feed)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS feeds ("
        " name TEXT PRIMARY KEY,"
        " url TEXT NOT NULL,"
        " added_at TEXT NOT NULL,"
        " version INTEGER,"  # targets metadata version last applied
        " target_hash TEXT,"  # sha256 of the applied list file
        " entries INTEGER NOT NULL DEFAULT 0,"
        " applied_at TEXT,"  # when that version was applied
        " checked_at TEXT,"  # last successful, verified check (renews the entries' expiry)
        " error TEXT,"  # last failure, cleared by a successful check
        " error_at TEXT)"
    )


def _migration_5(db: Database) -> None:
    """A person's review of a call: ``review_label`` (fraud / not_fraud) and who gave it.

    ``reviewed_at`` (migration 2) is reused for when. The label is kept apart from the
    detector's ``verdict`` so reviewed calls can be exported as evaluation data for the
    phrase packs; the CHECK makes a bad spooled record an integrity error, as for verdicts.
    """
    existing = set(db.table("calls").columns_dict)
    if "review_label" not in existing:
        db.execute("ALTER TABLE calls ADD COLUMN review_label TEXT CHECK (review_label IN ('fraud', 'not_fraud'))")
    if "reviewed_by" not in existing:
        db.execute("ALTER TABLE calls ADD COLUMN reviewed_by TEXT")
    db.execute("CREATE INDEX IF NOT EXISTS idx_calls_review_label ON calls (review_label)")


def _migration_6(db: Database) -> None:
    """A person's answer to "add to the family list?" (``blocklist.store.suggestions``).

    Only answers are stored; the offers themselves are computed from the calls each time.
    ``number`` is the primary key, so a dismissed number stays dismissed.
    """
    db.execute(
        "CREATE TABLE IF NOT EXISTS suggestions ("
        " number TEXT PRIMARY KEY,"
        " state TEXT NOT NULL CHECK (state IN ('accepted', 'dismissed')),"
        " decided_at TEXT NOT NULL,"
        " decided_by TEXT NOT NULL)"
    )


def _migration_7(db: Database) -> None:
    """A list entry's own action (issue 15: ``screen`` per list entry); '' = the list's usual action."""
    if "action" not in db.table("list_entries").columns_dict:
        db.execute("ALTER TABLE list_entries ADD COLUMN action TEXT NOT NULL DEFAULT ''")


# Append only; index + 1 is the PRAGMA user_version after it has run.
MIGRATIONS: tuple[Callable[[Database], None], ...] = (
    _migration_1, _migration_2, _migration_3, _migration_4, _migration_5, _migration_6,
    _migration_7,
)


def migrate(db: Database, path: Path) -> None:
    """Run the migrations ``db`` has not had yet, each in its own transaction.

    Raises StoreError for a database written by a newer version (refusing beats corrupting it).
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise StoreError(f"{path} has schema version {version}; this mamoru knows {len(MIGRATIONS)}")
    for index in range(version, len(MIGRATIONS)):
        db.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[index](db)
            db.execute(f"PRAGMA user_version = {index + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise
        log.info("migrated %s to schema version %d", path, index + 1)
