"""NCID lists, vCard phone books and callattendant lists: the sample files in tests/data/lists (written
from each format's documentation) read as expected, bad rows are named by line, and each format
round-trips through export and import."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocklist.formats import ImportResult, ListFormat, detect_format, read_entries, write_entries
from screening.core.model import ListEntry, ListKind, MatchKind

DATA = Path(__file__).parent / "data" / "lists"


def _read(name: str, kind: ListKind = ListKind.ALLOW, fmt: ListFormat | None = None, region: str = "JP") -> ImportResult:
    return read_entries((DATA / name).read_bytes(), fmt, kind=kind, home_region=region, source="family")


def _numbers(result: ImportResult) -> list[tuple[str, str]]:
    return [(e.describe(), e.note) for e in result.entries]


@pytest.mark.parametrize(("name", "fmt"), [
    ("ncidd.blacklist", ListFormat.NCID), ("ncidd.whitelist", ListFormat.NCID),
    ("contacts_android.vcf", ListFormat.VCARD), ("contacts_iphone.vcf", ListFormat.VCARD),
    ("google_contacts.vcf", ListFormat.VCARD), ("fritzbox.vcf", ListFormat.VCARD), ("contacts_v4.vcf", ListFormat.VCARD),
    ("callattendant_blacklist.csv", ListFormat.CALLATTENDANT), ("callattendant_whitelist.csv", ListFormat.CALLATTENDANT),
    ("family_plain.txt", ListFormat.PLAIN),
])  # fmt: skip
def test_formats_are_detected(name: str, fmt: ListFormat) -> None:
    assert detect_format((DATA / name).read_bytes()) is fmt


def test_a_csv_whose_reason_holds_the_ncid_mark_stays_csv() -> None:
    assert detect_format("number,reason\n0312345678,a#=b\n".encode()) is ListFormat.CSV
    assert detect_format(b"0312345678 #= Hanako\n") is ListFormat.NCID


def test_ncid_blacklist_numbers_prefixes_names_and_what_cannot_be_matched() -> None:
    result = _read("ncidd.blacklist", ListKind.BLOCK)
    assert _numbers(result)[:5] == [
        ("+81398765432", "投資詐欺の電話"), ("+81120111222", "Unwanted Marketing Call"),
        ("+81570*", "ナビダイヤル (prefix)"), ("+81662223333", ""), ("+81662224444", ""),
    ]  # fmt: skip
    assert result.entries[2].match is MatchKind.PREFIX
    (problem,) = result.problems
    assert problem.line == 8 and "name" in problem.problem  # "BAD MARKETING" matches names in NCID


def test_ncid_whitelist_keeps_the_family_names() -> None:
    assert _numbers(_read("ncidd.whitelist")) == [("+819012345678", "花子 (娘)"), ("+81312345678", "太郎")]


def test_vcard_exports_of_phones_and_fritzbox_give_named_numbers() -> None:
    android = _read("contacts_android.vcf")  # 2.1, quoted-printable UTF-8 names
    assert _numbers(android) == [("+819012345678", "山田 花子"), ("+81312345678", "山田 花子"),
                                 ("+81312340000", "病院")]  # fmt: skip
    iphone = _read("contacts_iphone.vcf")  # item1.TEL groups, folded lines
    assert _numbers(iphone) == [("+819022223333", "鈴木 一郎"), ("+81451112222", "鈴木 一郎"),
                                ("+818044445555", "近所の佐藤さん")]  # fmt: skip
    assert _numbers(_read("fritzbox.vcf")) == [("+81355556666", "Oma Hanako"), ("+819077778888", "Oma Hanako")]
    v4 = _read("contacts_v4.vcf")  # tel: URIs, ;ext=, escaped comma
    assert _numbers(v4) == [("+81399990000", "Dr. Yamamoto, clinic"), ("+818012340000", "Dr. Yamamoto, clinic")]
    google = _read("google_contacts.vcf")
    assert _numbers(google) == [("+817011112222", "Kenji Tanaka")]
    (problem,) = google.problems  # a service code is no phone number; the e-mail-only card is no row
    assert problem.line == 7 and "*31#" in problem.text


def test_broken_vcards_are_named_by_line_and_the_rest_is_read() -> None:
    data = ("BEGIN:VCARD\nFN:A\nTEL:0312345678\n"  # never ended: swallowed by the next BEGIN
            "BEGIN:VCARD\nFN:B\nTEL:0398765432\nEND:VCARD\n"
            "stray text\nEND:VCARD\nBEGIN:VCARD\nFN:C\nTEL:\nEND:VCARD\n"
            "BEGIN:VCARD\nFN:\udcff\nTEL:0311112222\nEND:VCARD\n").encode("utf-8", "surrogateescape")
    result = read_entries(data, ListFormat.VCARD, kind=ListKind.ALLOW, home_region="JP", source="family")
    assert _numbers(result) == [("+81398765432", "B")]
    assert [p.line for p in result.problems] == [1, 8, 9, 12, 16]  # the last: its TEL row's name is no text


def test_callattendant_lists_keep_name_and_reason_and_name_bad_rows() -> None:
    black = _read("callattendant_blacklist.csv", ListKind.BLOCK)
    assert _numbers(black)[0] == ("+81398765432", "KAKUTEI -- Robocall")
    assert [p.line for p in black.problems] == [5]
    us = _read("callattendant_blacklist.csv", ListKind.BLOCK, region="US")
    assert ("+13605554567", "Bruce -- Blacklist test") in _numbers(us)
    assert _numbers(_read("callattendant_whitelist.csv")) == [("+819012345678", "HANAKO -- Daughter"),
                                                              ("+81312345678", "TARO")]  # fmt: skip


ENTRIES = [
    ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81398765432", source="family", note="投資詐欺"),
    ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+819012345678", source="family", note="花子"),
    ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+442079460000", source="family", note="London, office"),
    ListEntry(ListKind.BLOCK, MatchKind.PREFIX, "+81570", source="family", note="ナビダイヤル"),
]


@pytest.mark.parametrize(("fmt", "kept"), [
    (ListFormat.NCID, ENTRIES), (ListFormat.VCARD, ENTRIES[:3]), (ListFormat.CALLATTENDANT, ENTRIES[:3]),
])  # fmt: skip
def test_each_format_round_trips(fmt: ListFormat, kept: list[ListEntry]) -> None:
    data = write_entries(ENTRIES, fmt, home_region="JP")
    assert detect_format(data) is fmt or fmt is ListFormat.NCID  # an NCID file without names looks plain
    back = read_entries(data, fmt, kind=ListKind.BLOCK, home_region="JP", source="family")
    assert back.problems == []
    assert [(e.match, e.value, e.note) for e in back.entries] == [(e.match, e.value, e.note) for e in kept]


def test_ncid_export_is_what_ncidd_reads() -> None:
    text = write_entries(ENTRIES, ListFormat.NCID, home_region="JP").decode()
    assert "0398765432 #= 投資詐欺\n" in text and "^0570 #= ナビダイヤル\n" in text
    assert "+442079460000 #= London, office\n" in text


def test_cli_imports_a_phone_book_strictly_and_exports_it_as_vcard(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from screening.cli import main

    db = str(tmp_path / "m.db")
    # --strict: the Google export has one bad row, so nothing of it is imported.
    assert main(["allow", "import", str(DATA / "google_contacts.vcf"), "--db", db, "--strict"]) != 0
    assert "google_contacts.vcf:7: '*31#'" in capsys.readouterr().err
    assert main(["allow", "list", "--db", db, "--json"]) == 0
    assert "+817011112222" not in capsys.readouterr().out
    assert main(["allow", "import", str(DATA / "contacts_iphone.vcf"), "--db", db]) == 0
    out = tmp_path / "family.vcf"
    assert main(["allow", "export", "--format", "vcard", "-o", str(out), "--db", db]) == 0
    back = read_entries(out.read_bytes(), None, kind=ListKind.ALLOW, home_region="JP", source="family")
    assert sorted(_numbers(back)) == sorted(_numbers(_read("contacts_iphone.vcf")))


# callattendant's own schema (callattendant/screening/blacklist.py and whitelist.py).
CALLATTENDANT_SCHEMA = """
CREATE TABLE Blacklist (PhoneNo TEXT PRIMARY KEY, Name TEXT, Reason TEXT, SystemDateTime TEXT);
CREATE TABLE Whitelist (PhoneNo TEXT PRIMARY KEY, Name TEXT, Reason TEXT, SystemDateTime TEXT);
INSERT INTO Blacklist VALUES ('0398765432', 'KAKUTEI', 'Robocall', '2024-05-01 10:12:33');
INSERT INTO Blacklist VALUES ('0120111222', NULL, 'Marketing', '2024-05-03 08:30:00');
INSERT INTO Blacklist VALUES ('12345abc', 'X', 'Typo', '2024-05-04 08:30:00');
INSERT INTO Whitelist VALUES ('09012345678', 'HANAKO', 'Daughter', '2024-05-01 10:12:33');
"""


def test_callattendant_database_itself_imports_the_list_being_imported_into(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "callattendant.db"
    con = sqlite3.connect(db)
    con.executescript(CALLATTENDANT_SCHEMA)
    con.close()
    data = db.read_bytes()
    assert detect_format(data) is ListFormat.CALLATTENDANT
    black = read_entries(data, None, kind=ListKind.BLOCK, home_region="JP", source="local")
    assert _numbers(black) == [("+81398765432", "KAKUTEI -- Robocall"), ("+81120111222", "Marketing")]
    assert [(p.line, p.text) for p in black.problems] == [(3, "Blacklist row 3: 12345abc")]
    white = read_entries(data, None, kind=ListKind.ALLOW, home_region="JP", source="family")
    assert _numbers(white) == [("+819012345678", "HANAKO -- Daughter")]
    broken = read_entries(data[:4096] + b"\x00" * 100, ListFormat.CALLATTENDANT, kind=ListKind.BLOCK,
                          home_region="JP", source="local")  # fmt: skip
    assert broken.entries == [] and "not a readable callattendant database" in broken.problems[0].problem


def test_web_page_imports_a_phone_book_with_names_and_exports_it_as_vcard(tmp_path: Path) -> None:
    from tests.support.web import post_form, signed_in, start_site

    site = start_site(tmp_path)
    try:
        with signed_in(site) as client:
            page = client.get("/lists?kind=allow").text
            assert 'value="vcard"' in page and 'value="ncid"' in page and 'value="callattendant"' in page
            response = post_form(client, "/lists?kind=allow", "/lists/import", {"kind": "allow", "format": ""},
                                 files={"file": ("contacts.vcf", (DATA / "contacts_iphone.vcf").read_bytes(),
                                                 "text/vcard")})  # fmt: skip
            assert response.status_code == 303 and "n=3" in response.headers["location"]
            page = client.get("/lists?kind=allow").text
            assert "鈴木 一郎" in page and "近所の佐藤さん" in page  # the family's names, shown
            exported = client.get("/lists/export?kind=allow&format=vcard")
            assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/vcard")
        back = read_entries(exported.content, None, kind=ListKind.ALLOW, home_region="JP", source="family")
        assert sorted(_numbers(back)) == sorted(_numbers(_read("contacts_iphone.vcf")))
    finally:
        site.close()
