"""「家族リストに追加しますか？」: numbers the household talks to are offered, never added without a person,
and a dismissed number stays dismissed. Calls are written through the store's own API with a clock the
test moves, so call lengths are real ``started_at``/``ended_at`` differences."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocklist.store import Store
from blocklist.store.rows import CallFilter
from blocklist.store.suggestions import SuggestionState
from screening.core.model import (
    Action,
    CallerID,
    CallOutcome,
    Category,
    Decision,
    EventKind,
    ListEntry,
    ListKind,
    MatchKind,
    Prompt,
)
from tests.support.web import Web, ja, running_web, write_config

START = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)
FRIEND = "+81312340001"  # three screened calls the household took
NEIGHBOUR = "+81312340002"  # three long warned calls
TWICE = "+81312340003"  # only two
SUSPECT = "+81312340004"  # three taken, but one of its calls was judged suspicious
SHORT = "+81312340005"  # three warned calls the caller ended after the warning
FAMILY = "+81312340006"  # already on the allowlist
OLD = "+81312340007"  # three taken, but more than 180 days ago


class Clock:
    """The store's clock: the test sets the time each write is stamped with."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def talk(store: Store, clock: Clock, number: str, when: datetime, *, action: Action = Action.SCREEN,
         seconds: float = 30.0, connected: bool = True, verdict: str | None = None) -> None:  # fmt: skip
    clock.now = when
    caller = CallerID(raw_number="0" + number[3:], number_e164=number)
    decision = Decision(action, action.value, "scripted", Category.DOMESTIC, Prompt.WARNING)
    call_id = store.begin_call("sim", caller, started_at=when, decision=decision)
    store.add_event(call_id, EventKind.PLAYED, prompt="warning", clip="warning.wav", end="completed")
    if action is Action.SCREEN:
        outcome = CallOutcome.CONNECTED if connected else CallOutcome.REFUSED
        store.add_event(call_id, EventKind.OUTCOME, outcome=outcome.value)
    if verdict:
        store.set_detection(call_id, verdict, 0.6, "…")
    clock.now = when + timedelta(seconds=seconds)
    store.finish_call(call_id, "completed")


def script(store: Store, clock: Clock) -> None:
    for day in range(3):
        when = START + timedelta(days=day)
        talk(store, clock, FRIEND, when)
        talk(store, clock, NEIGHBOUR, when + timedelta(hours=1), action=Action.WARN, seconds=300)
        talk(store, clock, SUSPECT, when + timedelta(hours=2), verdict="suspicious" if day == 1 else None)
        talk(store, clock, SHORT, when + timedelta(hours=3), action=Action.WARN, seconds=20)
        talk(store, clock, FAMILY, when + timedelta(hours=4))
        talk(store, clock, OLD, when - timedelta(days=200))
        if day < 2:
            talk(store, clock, TWICE, when + timedelta(hours=5))
    talk(store, clock, TWICE, START + timedelta(days=3), connected=False)  # refused: not a conversation
    store.add_entry(ListEntry(ListKind.ALLOW, MatchKind.EXACT, FAMILY, source="family"))
    clock.now = START + timedelta(days=4)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Store, Clock]]:
    clock = Clock()
    with Store(tmp_path / "mamoru.db", clock=clock, recover_calls=False) as opened:
        script(opened, clock)
        yield opened, clock


def offered(store: Store, clock: Clock) -> dict[str, int]:
    return {s.number: s.calls for s in store.suggestions(clock.now)}


def test_only_numbers_the_household_talks_to_are_offered(store: tuple[Store, Clock]) -> None:
    assert offered(*store) == {FRIEND: 3, NEIGHBOUR: 3}


def test_nothing_is_added_without_a_person(store: tuple[Store, Clock]) -> None:
    db, clock = store
    offered(db, clock)
    lists = db.load_lists(clock.now)
    assert lists.match_allow(FRIEND) is None and lists.match_allow(NEIGHBOUR) is None


def test_accepting_adds_to_the_allowlist_and_ends_the_offer(store: tuple[Store, Clock]) -> None:
    db, clock = store
    db.answer_suggestion(FRIEND, SuggestionState.ACCEPTED, "musuko")
    entry = db.load_lists(clock.now).match_allow(FRIEND)
    assert entry is not None and entry.source == "family"
    assert offered(db, clock) == {NEIGHBOUR: 3}
    # Someone later takes it off the list: it is not offered again behind their back.
    assert db.remove_entry(ListKind.ALLOW, MatchKind.EXACT, FRIEND)
    talk(db, clock, FRIEND, clock.now + timedelta(hours=1))
    assert FRIEND not in offered(db, clock)
    assert db.suggestion_answers() == {FRIEND: SuggestionState.ACCEPTED}


def test_a_dismissed_number_stays_dismissed(store: tuple[Store, Clock]) -> None:
    db, clock = store
    db.answer_suggestion(NEIGHBOUR, SuggestionState.DISMISSED, "musuko")
    for day in range(5):
        talk(db, clock, NEIGHBOUR, clock.now + timedelta(days=day, hours=1), action=Action.WARN, seconds=600)
    assert offered(db, clock) == {FRIEND: 3}
    assert db.load_lists(clock.now).match_allow(NEIGHBOUR) is None


def test_a_fraud_flag_anywhere_rules_a_number_out(store: tuple[Store, Clock]) -> None:
    db, clock = store
    talk(db, clock, FRIEND, clock.now + timedelta(hours=1))
    latest = db.find_calls(CallFilter(text=FRIEND), limit=1)[0]
    db.add_flags(latest.id, [("還付金", "refund", 2.0)])  # a flagged phrase on its newest call
    assert FRIEND not in offered(db, clock)


# ---- the web page ------------------------------------------------------------------------------


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    clock = Clock()
    for rig in running_web(tmp_path, write_config(tmp_path)):
        writer = Store(rig.ctx.store.path, clock=clock, recover_calls=False)
        with writer:
            # recent calls, so the page's own "now" (the real clock) still finds them in its window
            for day in range(3):
                when = datetime.now(UTC) - timedelta(days=3 - day)
                talk(writer, clock, FRIEND, when)
                if day:
                    talk(writer, clock, TWICE, when + timedelta(hours=1))
        yield rig


def test_page_offers_and_accepts(web: Web) -> None:
    page = web.get("/suggestions").text
    assert ja("suggestions.title") in page and "家族リストに追加しますか？" in page
    assert f'data-number="{FRIEND}"' in page and "03-1234-0001" in page and TWICE not in page
    assert ja("suggestions.notice", n=1) in web.get("/calls").text
    response = web.post("/suggestions/accept", {"number": FRIEND})
    assert response.status_code == 303 and response.headers["location"] == "/suggestions?done=added"
    assert web.ctx.store.load_lists(datetime.now(UTC)).match_allow(FRIEND) is not None
    after = web.get("/suggestions?done=added").text
    assert ja("suggestions.done.added") in after and ja("suggestions.none") in after
    assert ja("lists.note.suggested") in web.get("/lists?kind=allow").text
    assert "suggestions-notice" not in web.get("/calls").text


def test_page_dismisses(web: Web) -> None:
    assert web.post("/suggestions/dismiss", {"number": FRIEND}).status_code == 303
    assert ja("suggestions.none") in web.get("/suggestions").text
    assert web.ctx.store.load_lists(datetime.now(UTC)).match_allow(FRIEND) is None


def test_only_a_number_on_offer_can_be_answered(web: Web) -> None:
    for number in (TWICE, "+81312349999", "", "x" * 50):
        assert web.post("/suggestions/accept", {"number": number}).status_code == 400
        assert web.ctx.store.load_lists(datetime.now(UTC)).match_allow(number[:20] or "+0") is None


def test_answers_need_the_csrf_token_and_a_login(web: Web) -> None:
    refused = web.client.post("/suggestions/accept", data={"number": FRIEND})
    assert refused.status_code == 403
    with web.client.__class__(base_url=web.server.url, follow_redirects=False) as stranger:
        assert stranger.get("/suggestions").status_code == 303
        assert stranger.post("/suggestions/accept", data={"number": FRIEND}).status_code in (303, 403)
    assert web.ctx.store.load_lists(datetime.now(UTC)).match_allow(FRIEND) is None


def test_an_answer_given_while_the_database_is_locked_is_spooled_and_kept(tmp_path: Path) -> None:
    import sqlite3

    clock = Clock()
    with Store(tmp_path / "mamoru.db", clock=clock, recover_calls=False, busy_timeout=0.2,
               retry_interval=0.05) as db:  # fmt: skip
        script(db, clock)
        other = sqlite3.connect(db.path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # e.g. a long import holding the file
        try:
            db.answer_suggestion(FRIEND, SuggestionState.ACCEPTED, "musuko")
            assert db.pending_count == 1
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert db.flush_pending()
        assert db.load_lists(clock.now).match_allow(FRIEND) is not None
        assert db.suggestion_answers() == {FRIEND: SuggestionState.ACCEPTED}
        assert FRIEND not in offered(db, clock)
