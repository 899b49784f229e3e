"""A list entry's own action (issue 15: ``screen`` per list entry): stored, loaded, and decided purely."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from blocklist.lists import NumberLists
from blocklist.store import Store
from blocklist.store.schema import MIGRATIONS
from screening.core.model import Action, CallerID, ListEntry, ListKind, MatchKind, Prompt
from screening.core.rules import Policy, decide
from tests.support.web import WebRig, make_form_accounts, post_form, signed_in

NOW = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
FRIEND, SALES, PREFIX_CALLER, KNOWN = "+81312345678", "+81120444555", "+81665550001", "+81311112222"


def entries() -> list[ListEntry]:
    return [
        ListEntry(ListKind.ALLOW, MatchKind.EXACT, FRIEND, note="Sato-san, but screen him", action=Action.SCREEN),
        ListEntry(ListKind.BLOCK, MatchKind.EXACT, SALES, note="sales: screen rather than refuse", action=Action.SCREEN),
        ListEntry(ListKind.BLOCK, MatchKind.PREFIX, "+816655", action=Action.WARN),
        ListEntry(ListKind.ALLOW, MatchKind.EXACT, KNOWN, action=Action.ALLOW),  # the list's own action: no override
    ]


def test_entry_actions_round_trip_through_the_store_and_the_snapshot(tmp_path: Path) -> None:
    with Store(tmp_path / "mamoru.db") as store:
        for entry in entries():
            store.add_entry(entry)
        lists = store.load_lists(NOW)
        assert lists.match_allow(FRIEND).action is Action.SCREEN  # type: ignore[union-attr]
        assert lists.match_block(SALES).action is Action.SCREEN  # type: ignore[union-attr]
        assert lists.match_block(PREFIX_CALLER).action is Action.WARN  # type: ignore[union-attr]
        own = {e.value: e.action for e in store.own_entries(ListKind.ALLOW)}
        assert own == {FRIEND: Action.SCREEN, KNOWN: Action.ALLOW}
        # re-adding the entry without an action clears the override (an upsert, like the note)
        store.add_entry(replace(entries()[0], action=None))
        assert store.load_lists(NOW).match_allow(FRIEND).action is None  # type: ignore[union-attr]
    with sqlite3.connect(tmp_path / "mamoru.db") as conn:
        assert int(conn.execute("PRAGMA user_version").fetchone()[0]) == len(MIGRATIONS)
        conn.execute("UPDATE list_entries SET action = 'from_the_future' WHERE value = ?", [SALES])
    with Store(tmp_path / "mamoru.db") as store:  # an unknown action falls back to the list's
        assert store.load_lists(NOW).match_block(SALES).action is None  # type: ignore[union-attr]


def test_an_entrys_own_action_wins_over_its_lists(tmp_path: Path) -> None:
    lists = NumberLists.build(entries(), None)
    policy = Policy()

    def action_for(number: str) -> tuple[Action, str]:
        decision = decide(CallerID(raw_number="0" + number[3:], number_e164=number), lists, policy, NOW)
        return decision.action, decision.rule

    assert action_for(FRIEND) == (Action.SCREEN, "list_entry:allow")
    assert action_for(SALES) == (Action.SCREEN, "list_entry:block")
    assert action_for(PREFIX_CALLER) == (Action.WARN, "list_entry:block")
    assert action_for(KNOWN) == (Action.ALLOW, "allowlist")
    screened = decide(CallerID(raw_number="0312345678", number_e164=FRIEND), lists, policy, NOW)
    assert screened.prompt is Prompt.WARNING and "own action" in screened.reason
    # the allowlist still wins over the blocklist: a plain allow entry beats a blocked prefix with an action
    both = NumberLists.build([*entries(), ListEntry(ListKind.ALLOW, MatchKind.EXACT, PREFIX_CALLER)], None)
    assert decide(CallerID(number_e164=PREFIX_CALLER), both, policy, NOW).action is Action.ALLOW


def test_cli_adds_and_lists_an_entry_with_its_own_action(tmp_path: Path) -> None:
    from tests.test_cli import mamoru

    db = str(tmp_path / "m.db")
    mamoru("allow", "add", "03-1234-5678", "--action", "screen", "--note", "佐藤さん", "--db", db)
    listed = mamoru("allow", "list", "--json", "--db", db)
    assert '"action": "screen"' in listed.stdout
    assert "[screen]" in mamoru("allow", "list", "--db", db).stdout
    decided = mamoru("check", "03-1234-5678", "--db", db)
    assert "screen" in decided.stdout.lower(), decided.stdout
    bad = mamoru("allow", "add", "03-1234-5679", "--action", "ring_twice", "--db", db, check=False)
    assert bad.returncode != 0


def test_the_lists_page_adds_a_number_to_screen_and_shows_it(rig: WebRig) -> None:
    site = make_form_accounts(rig)
    with signed_in(site) as client:
        page = client.get("/lists?kind=allow").text
        assert 'name="screen" value="1"' in page and "出る前に名前を聞く" in page
        added = post_form(client, "/lists?kind=allow", "/lists/add",
                          {"kind": "allow", "number": "03-1234-5678", "note": "佐藤さん", "screen": "1"})
        assert added.status_code in (200, 303)
        plain = post_form(client, "/lists?kind=allow", "/lists/add", {"kind": "allow", "number": "03-1111-2222"})
        assert plain.status_code in (200, 303)
        listed = client.get("/lists?kind=allow").text
    entries = {e.value: e.action for e in site.store.own_entries(ListKind.ALLOW)}
    assert entries == {FRIEND: Action.SCREEN, KNOWN: None}
    assert listed.count("この番号だけの扱い: 名前を聞いて、家族が出るか決める") == 1
