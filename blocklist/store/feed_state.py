"""What each signed feed delivered and when it was last checked: the feed-state aggregate.

``blocklist.feeds`` verifies a feed; this module stores the outcome: the ``feeds``
table and the feed's rows in ``list_entries``, replaced or renewed in one transaction
so the daemon sees the old list or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlite_utils import Database

from blocklist.store.list_entries import ListStore
from blocklist.store.records import UPSERT_ENTRY, bump_generation
from blocklist.store.rows import FEED_SOURCE_PREFIX
from screening.core.clock import iso_utc, parse_iso_utc
from screening.core.model import ListEntry

__all__ = ["FeedStateStore"]

_FEED_COLUMNS = {"url", "added_at", "version", "target_hash", "entries", "applied_at", "checked_at", "error",
                 "error_at"}  # fmt: skip


class FeedStateStore(ListStore):
    """The ``feeds`` table and each feed's list entries (it checks entries as the list store does)."""

    def replace_feed_entries(self, feed: str, entries: Iterable[ListEntry]) -> int:
        """Atomically make ``entries`` the whole content delivered by ``feed``.

        Every entry must have source ``feed:<feed>``. All are checked before
        anything is written; one transaction deletes the feed's old rows and
        inserts the new ones, so the daemon sees the old list or the new one,
        never a mix. Returns the number of rows now held for the feed.
        Raises ValueError for a bad entry, StoreError if the database is unavailable.
        """
        source = FEED_SOURCE_PREFIX + feed
        now = self._now()

        def rows() -> Iterator[dict[str, Any]]:  # streamed: a 1 M-row feed is never a list of dicts
            for entry in entries:
                if entry.source != source:
                    raise ValueError(f"entry {entry.describe()} has source {entry.source!r}, expected {source!r}")
                yield self._entry_args(entry, now) | {"feed": feed}

        def apply(db: Database) -> int:
            db.execute("DELETE FROM list_entries WHERE feed = ?", [feed])
            db.conn.executemany(UPSERT_ENTRY, rows())
            bump_generation(db)
            return int(db.execute("SELECT count(*) FROM list_entries WHERE feed = ?", [feed]).fetchone()[0])

        return self._bulk(apply)

    def renew_feed_entries(self, feed: str, expires_at: str | None) -> int:
        """Set a new expiry on every entry of ``feed`` (a verified check found the list current)."""
        expires = iso_utc(parse_iso_utc(expires_at)) if expires_at else None

        def apply(db: Database) -> int:
            cursor = db.execute("UPDATE list_entries SET expires_at = ? WHERE feed = ?", [expires, feed])
            bump_generation(db)
            return int(cursor.rowcount)

        return self._bulk(apply)

    def feed_entry_counts(self) -> dict[str, int]:
        """Rows per feed name, including expired ones."""
        rows = self._query("SELECT feed, count(*) AS n FROM list_entries WHERE feed <> '' GROUP BY feed")
        return {r["feed"]: int(r["n"]) for r in rows}

    # ----------------------------------------------------------------- feeds

    def feeds(self) -> list[dict[str, Any]]:
        """The ``feeds`` table as dicts (see migration 4 for the columns), by name."""
        return self._query("SELECT * FROM feeds ORDER BY name")

    def feed(self, name: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM feeds WHERE name = ?", [name])
        return rows[0] if rows else None

    def save_feed(self, name: str, **fields: Any) -> None:
        """Insert or update a feed's row; ``url`` is needed when the feed is new."""
        unknown = set(fields) - _FEED_COLUMNS
        if unknown:
            raise ValueError(f"unknown feed field(s): {sorted(unknown)}")

        def apply(db: Database) -> None:
            if db.execute("SELECT 1 FROM feeds WHERE name = ?", [name]).fetchone() is None:
                if "url" not in fields:
                    raise ValueError(f"new feed {name!r} needs a url")
                db.execute("INSERT INTO feeds (name, url, added_at) VALUES (?, ?, ?)",
                           [name, fields["url"], fields.get("added_at") or self._now()])  # fmt: skip
            if fields:
                sets = ", ".join(f"{key} = ?" for key in fields)
                db.execute(f"UPDATE feeds SET {sets} WHERE name = ?", [*fields.values(), name])

        self._bulk(apply)

    def remove_feed(self, name: str) -> bool:
        """Forget a feed and delete every entry it delivered. True if it existed."""

        def apply(db: Database) -> bool:
            existed = db.execute("DELETE FROM feeds WHERE name = ?", [name]).rowcount > 0
            if db.execute("DELETE FROM list_entries WHERE feed = ?", [name]).rowcount:
                bump_generation(db)
            return existed

        return self._bulk(apply)
