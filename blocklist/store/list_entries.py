"""Number list entries (block/allow, a person's own and the feeds'): the list aggregate.

Single entries are spooled records like every call write; bulk changes (imports, a
feed's whole list) run in one transaction straight to the database and are never
spooled. ``load_lists`` is the daemon's snapshot, read in one transaction with the
generation it was read at.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from blocklist.lists import NumberLists, entry_problem
from blocklist.store.engine import StoreEngine
from blocklist.store.records import UPSERT_ENTRY, Record, bump_generation
from blocklist.store.rows import (
    ENTRY_COLUMNS,
    StoreError,
    entry_from_row,
    entry_from_tuple,
    feed_of,
)
from blocklist.store.schema import LISTS_GENERATION
from screening.core.clock import iso_utc, parse_iso_utc
from screening.core.model import ListEntry, ListKind, MatchKind

__all__ = ["ListStore"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1024)
def normal_expiry(text: str) -> str:
    """Cached: a 1 M-row feed carries one or a few distinct expiry strings."""
    return iso_utc(parse_iso_utc(text))


class ListStore(StoreEngine):
    """Block and allow list entries."""

    def add_entry(self, entry: ListEntry) -> ListEntry:
        """Insert, or update note/source/expiry of the same list+match+value(+end).

        Returns the stored entry; if the write was spooled, the entry as it will be stored.
        Raises ValueError for a malformed entry (use lists.parse_list_spec to build one).
        """
        args = self._entry_args(entry, self._now())
        applied, stored = self._submit(Record("add_entry", args))
        return stored if applied else entry_from_row(args)

    def remove_entry(self, list: ListKind, match: MatchKind, value: str, value_end: str | None = None, *,
                     own_only: bool = False) -> bool:  # fmt: skip
        """True if an entry was removed — or, when the database is unavailable, queued for removal.

        ``own_only`` leaves a feed's copy of the same entry alone (the web page removes what
        the family added; a police feed's number stays blocked).
        """
        args: dict[str, Any] = {"list": list.value, "match": match.value, "value": value, "value_end": value_end or ""}
        if own_only:
            args["own_only"] = True
        applied, removed = self._submit(Record("remove_entry", args))
        return bool(removed) if applied else True

    def list_entries(self, list: ListKind) -> list[ListEntry]:
        rows = self._query("SELECT * FROM list_entries WHERE list = ? ORDER BY match, value, value_end", [list.value])
        return [entry_from_row(r) for r in rows]

    def own_entries(self, list: ListKind, limit: int | None = None, offset: int = 0) -> list[ListEntry]:
        """Entries people added (no feed's), newest first; ``limit`` None = all of them."""
        rows = self._query("SELECT * FROM list_entries WHERE list = ? AND feed = '' "
                           "ORDER BY added_at DESC, id DESC LIMIT ? OFFSET ?",
                           [list.value, -1 if limit is None else limit, offset])  # fmt: skip
        return [entry_from_row(r) for r in rows]

    def count_own_entries(self, list: ListKind) -> int:
        return int(self._query("SELECT count(*) AS n FROM list_entries WHERE list = ? AND feed = ''",
                               [list.value])[0]["n"])  # fmt: skip

    def import_entries(self, entries: Iterable[ListEntry]) -> int:
        """Add or update many hand-made entries in one transaction: all of them or none.

        Raises ValueError (naming the entry) and writes nothing if any is malformed.
        """
        now = self._now()
        count = 0

        def rows() -> Iterator[dict[str, Any]]:
            nonlocal count
            for entry in entries:
                count += 1
                yield self._entry_args(entry, now) | {"feed": feed_of(entry.source)}

        def apply(db: Database) -> int:
            db.conn.executemany(UPSERT_ENTRY, rows())
            if count:
                bump_generation(db)
            return count

        return self._bulk(apply)

    def lists_generation(self) -> int:
        """Bumped by every list change; the daemon reloads its snapshot when it moves."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", [LISTS_GENERATION])
        return int(rows[0]["value"]) if rows else 0

    def load_lists(self, now: datetime) -> NumberLists:
        """Snapshot of unexpired entries, with the generation it was read at (one read transaction)."""
        now_iso = iso_utc(now)
        with self._lock:
            db = self._reader()
            try:
                with db.atomic():
                    generation = self.lists_generation()
                    # Feed rows first: when a feed and a person list the same number, the
                    # person's entry (its note, its expiry) is the one NumberLists keeps.
                    entries: list[ListEntry] = []
                    for where in ("feed <> ''", "feed = ''"):
                        rows = db.execute(
                            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM list_entries "
                            f"WHERE {where} AND (expires_at IS NULL OR expires_at > ?)",
                            [now_iso],
                        )
                        entries.extend(entry_from_tuple(r) for r in rows)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read lists from {self.path}: {exc}") from exc
        lists = NumberLists.build(entries, now_iso, generation=generation)
        for entry, problem in lists.skipped:
            log.warning("ignoring list entry %s: %s", entry.describe(), problem)
        return lists

    def _entry_args(self, entry: ListEntry, now: str) -> dict[str, Any]:
        problem = entry_problem(entry)
        if problem:
            raise ValueError(f"cannot store list entry {entry.describe()}: {problem}")
        try:
            expires = normal_expiry(entry.expires_at) if entry.expires_at else None
        except ValueError as exc:
            raise ValueError(f"cannot store list entry {entry.describe()}: bad expiry {entry.expires_at!r}") from exc
        return {
            "list": entry.list.value,
            "match": entry.match.value,
            "value": entry.value,
            "value_end": entry.value_end or "",
            "source": entry.source,
            "note": entry.note,
            "added_at": entry.added_at or now,
            "expires_at": expires,
            "action": entry.action.value if entry.action else "",
        }
