"""The call store: call records, events, reviews, number lists and feed state in SQLite (via sqlite-utils).

Why it is shaped like this
--------------------------
A call record is evidence ("the bank called at 10:02 and we hung up"), so a
write must never be lost and must never stall or crash the daemon while the
phone is ringing. Every mutation is therefore a small *record*
(``{"rid", "op", "args"}``) applied by one function per op. Normally a record
is applied at once, in its own ``BEGIN IMMEDIATE`` transaction. If SQLite
refuses (locked beyond ``busy_timeout``, read-only file or filesystem, path
unusable …) the failure is logged, the record is kept in memory *and*
appended to a JSON-lines spool file (``<db name>.spool.jsonl`` next to the
database, or in ``spool_dir``). While anything is pending, later writes queue
behind it so order is kept; each later write (at most once per
``retry_interval``), ``open()`` and ``flush_pending()`` replay the spool and
the in-memory queue in one transaction, then truncate the spool.

Call handles while the database is unwritable
---------------------------------------------
Every call row carries a ``call_uid`` (UUID hex, UNIQUE) made before the first
write. ``begin_call`` returns the real row id when the insert succeeds, and a
*negative provisional id* (-1, -2, …, per Store instance) when it is spooled.
Spooled records name their call by ``call_uid``, never by a provisional id, so
a spool written by a process that later crashed replays correctly in the next
one. The store maps provisional ids to uids, and after a replay to the real
ids, so the daemon can keep using the handle it got (``set_state``,
``finish_call``, ``add_event``, ``get_call``) for the life of the Store.

Replay is idempotent: call inserts are ``INSERT OR IGNORE`` on ``call_uid``,
and the rid of the last spooled record applied is stored in ``meta`` in the
same transaction, so a crash between COMMIT and truncating the spool does not
duplicate events. A record SQLite rejects as invalid (integrity error — a bug,
not an outage) is logged in full and dropped, so it cannot block the queue.

Crash recovery is itself a record (``recover``), queued by ``open()``: applied
in order, it marks every call not yet finished *at that point of the stream*
as INTERRUPTED, which covers rows from earlier processes and their spooled
calls but never the calls of this process. Only the daemon should recover;
CLI tools open the store with ``recover_calls=False``.

Where it lives
--------------
``schema`` (every table's migrations, the alert outbox's included: one
``PRAGMA user_version`` sequence), ``rows`` (what reads return), ``records`` (the
writes as replayable records), ``spool`` (the JSON-lines file), ``engine``
(connection, queue, replay) and one mixin per aggregate: ``calls``, ``reviews``,
``list_entries``, ``feed_state``. ``Store`` below puts the aggregates together so
the daemon, the CLI and the web page share one handle and one lock.
"""

from __future__ import annotations

from blocklist.store.calls import CallStore
from blocklist.store.feed_state import FeedStateStore
from blocklist.store.reviews import ReviewStore
from blocklist.store.stats import StatsStore
from blocklist.store.suggestions import SuggestionStore

__all__ = ["Store"]


class Store(CallStore, ReviewStore, FeedStateStore, StatsStore, SuggestionStore):
    """Calls, events, reviews, lists and feed state in one SQLite file; see the module docstring.

    Thread-safe (one lock around everything). ``busy_timeout`` bounds how long a
    write waits for another writer; ``retry_interval`` how often, while the
    database is failing, a write tries it again instead of going straight to
    the spool — so a ringing phone pays the busy wait at most once per interval.
    """
