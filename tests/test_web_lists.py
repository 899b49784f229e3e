"""The number lists page against a real server and a real store file.

Entries added, removed and imported through the page must be what the daemon's
next ``load_lists`` sees; exports must read back as the same entries; a feed of
many numbers is shown as a count, never row by row.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocklist.formats import ListFormat, read_entries
from blocklist.store import Store
from screening.core.clock import region_zone
from screening.core.model import ListEntry, ListKind, MatchKind
from tests.support.web import SITE_CONFIG, WebRig, csrf_in, make_form_accounts, post_form, signed_in, start_site

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).parent / "data" / "lists"


@pytest.fixture
def rig_config() -> str:
    return SITE_CONFIG


@pytest.fixture
def site(rig: WebRig) -> WebRig:
    """The ``rig`` with an installer and a family member made through the real forms."""
    return make_form_accounts(rig)


def add(client, kind: str, number: str, note: str = "", expires: str = ""):
    return post_form(client, f"/lists?kind={kind}", "/lists/add",
                     {"kind": kind, "number": number, "note": note, "expires": expires})  # fmt: skip


def own(store: Store, kind: ListKind) -> dict[str, ListEntry]:
    return {e.describe(): e for e in store.own_entries(kind)}


def test_added_numbers_are_listed_and_used_by_the_next_decision(site: WebRig) -> None:
    last_day = (datetime.now(region_zone("JP")) + timedelta(days=30)).date()
    with signed_in(site) as client:
        response = add(client, "block", "03-1234-5678", "銀行を名のる", last_day.isoformat())
        assert response.status_code == 303 and response.headers["location"] == "/lists?kind=block&done=added"
        assert add(client, "block", "０１２０＊", "勧誘").status_code == 303  # full-width, as a phone keyboard types
        assert add(client, "block", "06-6222-0000..06-6222-9999").status_code == 303
        assert add(client, "allow", "090-1111-2222", "娘").status_code == 303
        html = client.get("/lists?kind=block&done=added").text
    entries = own(site.store, ListKind.BLOCK)
    assert set(entries) == {"+81312345678", "+81120*", "+81662220000..+81662229999"}
    exact = entries["+81312345678"]
    assert (exact.source, exact.note) == ("family", "銀行を名のる")
    # the last day typed is in force until midnight at the unit, Tokyo time
    next_midnight = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), region_zone("JP"))
    assert exact.expires_at == next_midnight.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert "番号を追加しました" in html
    assert "03-1234-5678" in html and "0120*" in html and "06-6222-0000 〜 06-6222-9999" in html
    assert f"{last_day.year}年{last_day.month}月{last_day.day}日まで" in html and "期限なし" in html
    lists = site.store.load_lists(datetime.now(UTC))
    assert lists.match_block("+81312345678") and lists.match_block("+81120444555")
    assert lists.match_block("+81662221234") and lists.match_allow("+819011112222")
    assert not lists.match_block("+81662230000")


def test_bad_input_is_refused_next_to_the_field_and_nothing_is_stored(site: WebRig) -> None:
    generation = site.store.lists_generation()
    with signed_in(site) as client:
        bad_number = add(client, "block", "03-1234-ABCD", "<script>x</script>")
        assert bad_number.status_code == 400
        assert '<p class="field-error" id="number-error">電話番号として読めませんでした' in bad_number.text
        assert 'value="03-1234-ABCD"' in bad_number.text  # what was typed stays in the field
        assert "&lt;script&gt;x&lt;/script&gt;" in bad_number.text and "<script>x" not in bad_number.text
        assert add(client, "block", "000..000").status_code == 400  # parse_number's NumberError, not a 500
        odd = post_form(client, "/lists", "/lists/import", {"kind": "block", "format": "plain"},
                        files={"file": ("odd.txt", b"000..000\n", "text/plain")})  # fmt: skip
        assert odd.status_code == 400 and "Traceback" not in odd.text
        empty = add(client, "block", "")
        assert empty.status_code == 400 and "電話番号を入力してください" in empty.text
        past = add(client, "block", "03-1234-5678", expires="2001-01-01")
        assert past.status_code == 400 and '<p class="field-error" id="expires-error">' in past.text
        assert 'number-error' not in past.text
        assert add(client, "block", "03-1234-5678", expires="31/12/2030").status_code == 400
        assert add(client, "nonsense", "03-1234-5678").status_code == 400
        assert post_form(client, "/lists", "/lists/add", {"number": "03-1234-5678"}).status_code == 400  # no kind
        assert client.get("/lists?kind=nonsense").status_code == 200  # a hand-edited URL: the block tab
    assert site.store.lists_generation() == generation and not site.store.own_entries(ListKind.BLOCK)


def test_remove_takes_the_familys_entry_and_leaves_a_feeds_copy(site: WebRig) -> None:
    store = site.store
    store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81312345678", source="family", note="mine"))
    store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.RANGE, "+81662220000", "+81662229999", source="family"))
    store.replace_feed_entries("police", [ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81312345678",
                                                    source="feed:police", note="police report")])  # fmt: skip
    with signed_in(site) as client:
        html = client.get("/lists?kind=block").text
        assert 'name="value" value="+81312345678"' in html and 'name="value_end" value="+81662229999"' in html
        form = {"kind": "block", "match": "exact", "value": "+81312345678", "value_end": ""}
        response = post_form(client, "/lists?kind=block", "/lists/remove", form)
        assert response.status_code == 303 and response.headers["location"] == "/lists?kind=block&done=removed"
        again = post_form(client, "/lists?kind=block", "/lists/remove", form)
        assert again.headers["location"] == "/lists?kind=block&done=not_found"
        assert "その番号はリストにありませんでした" in client.get(again.headers["location"]).text
        ranged = post_form(client, "/lists?kind=block", "/lists/remove",
                           {"kind": "block", "match": "range", "value": "+81662220000", "value_end": "+81662229999"})
        assert ranged.headers["location"] == "/lists?kind=block&done=removed"
        for bad in ({**form, "match": "glob"}, {**form, "kind": "grey"}, {**form, "value": ""}):
            assert post_form(client, "/lists?kind=block", "/lists/remove", bad).status_code == 400
    assert not store.own_entries(ListKind.BLOCK)
    hit = store.load_lists(datetime.now(UTC)).match_block("+81312345678")
    assert hit is not None and hit.source == "feed:police"  # the police's number stays blocked


def test_a_large_feed_is_shown_as_a_count_not_as_rows(site: WebRig) -> None:
    numbers = [f"+8150{n:08d}" for n in range(20_000)]
    site.store.replace_feed_entries("police", (ListEntry(ListKind.BLOCK, MatchKind.EXACT, n, source="feed:police",
                                                         note="report") for n in numbers))  # fmt: skip
    site.store.save_feed("police", url="https://feeds.example/police/", checked_at="2025-01-02T03:04:05.000Z")
    site.store.add_entry(ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81312345678", source="family"))
    with signed_in(site) as client:
        page = client.get("/lists?kind=block")
    assert page.status_code == 200 and len(page.content) < 50_000
    html = page.text
    assert "<strong>police</strong>: 20,000件の番号" in html and "2025年1月2日(木) 12:04" in html
    assert "03-1234-5678" in html and html.count('name="value"') == 1  # only the family's own entry has a row
    assert "050-0000-0001" not in html and "+815000000001" not in html


def test_own_entries_are_paged(site: WebRig) -> None:
    site.store.import_entries([ListEntry(ListKind.ALLOW, MatchKind.EXACT, f"+8131234{n:04d}", source="family",
                                         added_at=f"2025-01-01T00:{n // 60:02d}:{n % 60:02d}.000Z")
                               for n in range(120)])  # fmt: skip
    with signed_in(site) as client:
        first = client.get("/lists?kind=allow").text
        last = client.get("/lists?kind=allow&page=3").text
    assert first.count('name="value"') == 50 and "120件" in first and 'href="/lists?kind=allow&amp;page=2"' in first
    assert last.count('name="value"') == 20 and "03-1234-0000" in last  # oldest last


def test_csv_import_adds_good_rows_and_lists_problems_by_line(site: WebRig) -> None:
    csv = ("電話番号,メモ,有効期限\n03-1234-5678,還付金詐欺,2099-03-31\nnot a number,書き間違い,\n"
           "0120*,勧誘,\n06-6222-3333,期限が変,31/12/2030\n<script>alert(1)</script>,x,\n").encode()
    with signed_in(site) as client:
        response = post_form(client, "/lists?kind=block", "/lists/import", {"kind": "block", "format": ""},
                             files={"file": ("list.csv", csv, "text/csv")})  # fmt: skip
        html = response.text
        assert response.status_code == 200
        assert "2件を登録しました（5行を読みました）。" in html
        assert "<th>3行目</th>" in html and "<th>5行目</th>" in html and "<th>6行目</th>" in html
        assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert set(own(site.store, ListKind.BLOCK)) == {"+81312345678", "+81120*"}
    assert own(site.store, ListKind.BLOCK)["+81312345678"].note == "還付金詐欺"


def test_clean_import_redirects_with_the_count_and_reads_excel_shift_jis(site: WebRig) -> None:
    plain = b"03-1111-2222  # from the neighbours\n+81 90 3333 4444\n"
    with signed_in(site) as client:
        response = post_form(client, "/lists?kind=allow", "/lists/import", {"kind": "allow", "format": "plain"},
                             files={"file": ("family.txt", plain, "text/plain")})  # fmt: skip
        assert response.status_code == 303 and response.headers["location"] == "/lists?kind=allow&done=imported&n=2"
        assert "2件の番号を読み込みました" in client.get(response.headers["location"]).text
        assert "done=imported" not in client.get("/lists?kind=allow&done=imported&n=<b>").text
        sjis = (DATA / "excel_sjis.csv").read_bytes()
        response = post_form(client, "/lists", "/lists/import", {"kind": "block"},
                             files={"file": ("excel.csv", sjis, "text/csv")})  # fmt: skip
        assert response.status_code == 200 and "<th>4行目</th>" in response.text  # the mistyped row
    assert own(site.store, ListKind.ALLOW)["+81311112222"].note == "from the neighbours"
    assert own(site.store, ListKind.BLOCK)["+81312345678"].note == "還付金詐欺"


def test_broken_uploads_get_a_clear_error(site: WebRig) -> None:
    with signed_in(site) as client:
        def upload(files, data=None):
            return post_form(client, "/lists", "/lists/import", {"kind": "block", **(data or {})}, files=files)

        no_file = post_form(client, "/lists", "/lists/import", {"kind": "block"}, files={"other": ("x", b"1")})
        assert no_file.status_code == 400 and "ファイルを選んでください" in no_file.text
        empty = upload({"file": ("empty.csv", b"", "text/csv")})
        assert empty.status_code == 400 and "ファイルが空です" in empty.text
        binary = upload({"file": ("photo.jpg", bytes(range(256)) * 40, "image/jpeg")})
        assert binary.status_code == 400 and "登録できる番号がありませんでした" in binary.text
        feed = upload({"file": ("police.csv", (DATA / "police.feed.csv").read_bytes(), "text/csv")})
        assert feed.status_code == 400 and "配信リストのファイルです" in feed.text
        assert upload({"file": ("a.csv", b"0312345678\n")}, {"format": "exe"}).status_code == 400
        token = csrf_in(client.get("/lists").text)
        garbled = client.post("/lists/import", content=b"--xx\r\nnot multipart at all",
                              headers={"content-type": "multipart/form-data; boundary=xx", "x-csrf-token": token})
        assert 400 <= garbled.status_code < 500 and "Traceback" not in garbled.text
    assert not site.store.own_entries(ListKind.BLOCK)


def test_export_downloads_read_back_as_the_same_entries(site: WebRig, tmp_path: Path) -> None:
    entries = [ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81312345678", source="family", note="還付金, \"詐欺\""),
               ListEntry(ListKind.BLOCK, MatchKind.PREFIX, "+81120", source="local", note="勧誘",
                         expires_at="2099-01-01T00:00:00.000Z"),
               ListEntry(ListKind.BLOCK, MatchKind.RANGE, "+81662220000", "+81662229999", source="family")]
    site.store.import_entries(entries)
    site.store.replace_feed_entries("police", [ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81501234567",
                                                         source="feed:police")])  # fmt: skip
    with signed_in(site) as client:
        csv = client.get("/lists/export?kind=block&format=csv")
        plain = client.get("/lists/export?kind=block&format=plain")
        assert client.get("/lists/export?kind=block&format=exe").status_code == 400
        assert client.get("/lists/export?kind=grey&format=csv").status_code == 400
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["content-disposition"] == 'attachment; filename="mamoru-block-list.csv"'
    assert plain.headers["content-disposition"] == 'attachment; filename="mamoru-block-list.txt"'
    back = read_entries(csv.content, None, kind=ListKind.BLOCK, home_region="JP", source="x")
    assert back.format is ListFormat.CSV and not back.problems
    key = lambda e: (e.match, e.value, e.value_end, e.source, e.note, e.expires_at)
    assert sorted(map(key, back.entries)) == sorted(map(key, site.store.own_entries(ListKind.BLOCK)))
    assert b"+81501234567" not in csv.content  # feed entries come from their publisher, not from us
    assert "03-1234-5678" in plain.text and "0120*" in plain.text
    # and a second unit imports the download through its own page
    other = start_site(tmp_path / "other")
    try:
        with signed_in(other) as client:
            response = post_form(client, "/lists", "/lists/import", {"kind": "block"},
                                 files={"file": ("mamoru-block-list.csv", csv.content, "text/csv")})  # fmt: skip
            assert response.status_code == 303
        assert sorted(map(key, other.store.own_entries(ListKind.BLOCK))) == sorted(map(key, back.entries))
    finally:
        other.close()


def test_lists_pages_need_a_login(site: WebRig) -> None:
    with site.client() as anonymous:
        for path in ("/lists", "/lists/export?kind=block&format=csv"):
            response = anonymous.get(path)
            assert response.status_code == 303 and response.headers["location"].startswith("/login"), path
