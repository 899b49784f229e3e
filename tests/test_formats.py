"""blocklist.formats: list files in and out — every format, bad rows, hostile bytes, round trips."""

from __future__ import annotations

import csv
import io
import logging
import random
from datetime import UTC, datetime
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from blocklist.formats import (
    FEED_HEADER,
    ListFormat,
    detect_format,
    iter_entries,
    read_entries,
    read_feed,
    write_entries,
)
from blocklist.list_numbers import fast_e164, ftc_number, list_spec
from blocklist.lists import ListSpecError, parse_list_spec
from blocklist.store import Store
from screening.core.clock import iso_utc
from screening.core.model import ListEntry, ListKind, MatchKind
from tests.support.examples import examples

DATA = Path(__file__).parent / "data" / "lists"
EXACT, PREFIX, RANGE = MatchKind.EXACT, MatchKind.PREFIX, MatchKind.RANGE
BLOCK, ALLOW = ListKind.BLOCK, ListKind.ALLOW


def read(data: bytes, fmt: ListFormat | None = None, **kw):
    args = {"kind": BLOCK, "home_region": "JP", "source": "local"} | kw
    return read_entries(data, fmt, **args)


def specs(result) -> list[str]:
    return [e.describe() for e in result.entries]


def problems(result) -> list[tuple[int, str]]:
    return [(p.line, p.problem) for p in result.problems]


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"number,reason,expires\n+81312345678,x,\n", ListFormat.FEED),
        (b"\xef\xbb\xbfnumber,reason,expires\r\n", ListFormat.FEED),
        (b"Number,Reason,Expires\n03-1234-5678,x,\n", ListFormat.CSV),  # not the exact feed header
        (b"\nnumber,reason,expires\n", ListFormat.CSV),  # a feed's header is line 1
        (b"phone,name\n", ListFormat.CSV),
        ("電話番号,メモ\r\n".encode("cp932"), ListFormat.CSV),
        (b"Company_Phone_Number,Created_Date,Subject\n", ListFormat.FTC),
        (b"# my list\n03-1234-5678\n", ListFormat.PLAIN),
        (b"03-1234-5678\n", ListFormat.PLAIN),
        (b"", ListFormat.PLAIN),
        (b"\x00\xff\xfe", ListFormat.PLAIN),
    ],
)
def test_detect_format(data: bytes, fmt: ListFormat) -> None:
    assert detect_format(data) is fmt


def test_sample_files_are_detected() -> None:
    expected = {"ftc_dnc_complaints.csv": ListFormat.FTC, "excel_sjis.csv": ListFormat.CSV,
                "excel_utf8_bom.csv": ListFormat.CSV, "family_plain.txt": ListFormat.PLAIN,
                "police.feed.csv": ListFormat.FEED}  # fmt: skip
    # Other call screeners' lists and phone books (tests/test_interop_formats.py reads them).
    expected |= {name: ListFormat.VCARD for name in ("contacts_android.vcf", "contacts_iphone.vcf",
                                                     "google_contacts.vcf", "fritzbox.vcf", "contacts_v4.vcf")}
    expected |= {"ncidd.blacklist": ListFormat.NCID, "ncidd.whitelist": ListFormat.NCID,
                 "callattendant_blacklist.csv": ListFormat.CALLATTENDANT,
                 "callattendant_whitelist.csv": ListFormat.CALLATTENDANT}
    assert {p.name: detect_format(p.read_bytes()) for p in DATA.iterdir()} == expected


# --------------------------------------------------------------------------- plain


def test_plain_sample() -> None:
    result = read((DATA / "family_plain.txt").read_bytes(), note="from the family sheet")
    assert result.format is ListFormat.PLAIN and result.rows == 5
    assert specs(result) == ["+81312345678", "+819011112222", "+81120*", "+81312340000..+81312349999"]
    assert [e.note for e in result.entries] == ["said he was from the bank", "from the family sheet", "sales calls",
                                                "from the family sheet"]  # fmt: skip
    assert len(result.problems) == 1
    (bad,) = result.problems
    assert bad.line == 7 and bad.text == "call me maybe" and "unexpected character" in bad.problem


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_plain_line_numbers_with_any_line_ending(newline: bytes) -> None:
    lines = [b"# comment", b"03-1234-5678", b"", b"nonsense", b"  ", b"0120*  # toll free", b"12"]
    result = read(newline.join(lines) + newline)
    assert specs(result) == ["+81312345678", "+81120*"]
    assert [p.line for p in result.problems] == [4, 7]


# --------------------------------------------------------------------------- csv


def test_csv_columns_list_source_expiry_and_bad_rows() -> None:
    data = (
        b"Phone,Note,Expires,List,Source,Name\n"  # 1; 'Name' is not ours: ignored
        b"03-1111-2222,fake bank,2030-01-01,,,Mr A\n"  # 2
        b"03-2222-3333,,,allow,family,Taro\n"  # 3
        b"03-3333-4444,x,2026-06-01T12:00:00+09:00,block,police,\n"  # 4
        b"03-4444-5555,too few\n"  # 5
        b"03-5555-6666,x,soon,,,\n"  # 6
        b"03-6666-7777,x,,maybe,,\n"  # 7
        b"03-7777-8888,x,,,feed:police,\n"  # 8
        b",no number,,,,\n"  # 9
        b",,,,,\n"  # 10: an empty Excel row, skipped
        b"+1 212 555 0143,US number,,,,\n"  # 11
    )
    result = read(data, source="import", expires_at="2027-01-01", note="default reason")
    assert result.format is ListFormat.CSV and result.rows == 9  # the empty row is not one
    by_value = {e.value: e for e in result.entries}
    assert list(by_value) == ["+81311112222", "+81322223333", "+81333334444", "+12125550143"]
    first = by_value["+81311112222"]
    assert (first.list, first.source, first.note) == (BLOCK, "import", "fake bank")
    assert first.expires_at == "2027-01-01T00:00:00.000Z"  # --expires caps the row's later date
    allow = by_value["+81322223333"]
    assert (allow.list, allow.source, allow.note, allow.expires_at) == (ALLOW, "family", "default reason",
                                                                       "2027-01-01T00:00:00.000Z")  # fmt: skip
    assert by_value["+81333334444"].expires_at == "2026-06-01T03:00:00.000Z"  # earlier than the cap: kept, in UTC
    assert by_value["+81333334444"].source == "police"
    got = dict(problems(result))
    assert set(got) == {5, 6, 7, 8, 9}
    assert got[5] == "2 fields where the header has 6"
    assert "expires 'soon' is not a date" in got[6]
    assert "neither 'allow' nor 'block'" in got[7]
    assert "signed feeds" in got[8]
    assert got[9] == "no number in this row"


def test_csv_header_problems_stop_the_file() -> None:
    result = read(b"name,reason\nTaro,x\n", ListFormat.CSV)
    assert result.entries == [] and problems(result) == [
        (1, "the header has no 'number' (or 'phone') column; found 'name', 'reason'")]
    result = read(b"number,note,reason\n03-1234-5678,a,b\n", ListFormat.CSV)
    assert result.entries == [] and "both give the reason" in result.problems[0].problem


def test_csv_header_only_or_empty_is_an_empty_result() -> None:
    for data in (b"number,reason\n", b"number,reason", b"", b"\n\n"):
        result = read(data, ListFormat.CSV)
        assert (result.entries, result.problems, result.rows) == ([], [], 0)


def test_csv_utf8_with_bom_and_a_multiline_cell() -> None:
    result = read((DATA / "excel_utf8_bom.csv").read_bytes())
    assert result.encoding == "utf-8"
    assert specs(result) == ["+81398765432", "+81611112222", "+81312340000..+81312349999"]
    assert result.entries[0].expires_at == "2027-01-01T00:00:00.000Z"  # 09:00 in Tokyo
    assert result.entries[1].list is ALLOW and result.entries[1].note == "息子の会社\n（大阪）"
    assert [p.line for p in result.problems] == [6]  # line numbers count the cell's line break


def test_csv_shift_jis_from_japanese_excel(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="blocklist.formats"):
        result = read((DATA / "excel_sjis.csv").read_bytes())
    assert "Shift-JIS (cp932)" in caplog.text
    assert result.encoding == "cp932" and result.format is ListFormat.CSV
    assert [(e.describe(), e.note) for e in result.entries] == [
        ("+81312345678", "還付金詐欺"), ("+819012345678", "オレオレ詐欺"), ("+81120*", "フリーダイヤルの勧誘")]
    assert result.entries[0].expires_at == "2027-03-31T00:00:00.000Z"
    assert [p.line for p in result.problems] == [4]


def test_unterminated_quote_costs_a_bounded_number_of_lines() -> None:
    data = b'number,reason\n03-1234-5678,"open quote\n' + b"03-1111-1111,x\n" * 150
    result = read(data)
    (problem,) = result.problems
    assert problem.line == 2 and "closing quote" in problem.problem
    assert len(result.entries) == 51  # lines 2-101 were the one bad record; normal rows again after
    result = read(b'number,reason\n03-1234-5678,"never closed\n03-1111-1111,x\n')
    assert result.entries == [] and result.problems[0].line == 2


def test_malformed_csv_quoting_is_a_row_problem() -> None:
    result = read(b'number,reason\n03-1234-5678,"quoted"then text\n03-1111-2222,ok\n')
    assert specs(result) == ["+81311112222"]
    assert result.problems[0].line == 2 and "not readable as CSV" in result.problems[0].problem


# --------------------------------------------------------------------------- ftc


def test_ftc_sample_dedupes_and_reads_us_numbers_whatever_the_home_region() -> None:
    result = read((DATA / "ftc_dnc_complaints.csv").read_bytes(), source="ftc")
    assert result.format is ListFormat.FTC and result.rows == 11 and result.duplicates == 2
    assert [(e.value, e.note) for e in result.entries] == [
        ("+12025550143", "Reducing your debt (credit cards, mortgage, student loans) (robocall)"),
        ("+18445550178", "Vacation & timeshares"),
        ("+17135550112", "Warranties & protection plans (robocall)"),
        ("+18005550199", "Computer & technical support"),
        ("+13055550187", "No Subject Provided (robocall)"),
        ("+16175550134", "Dropped call or no message (robocall)"),
        ("+14045550165", "Energy, solar, & utilities"),
    ]
    assert all(e.source == "ftc" and e.list is BLOCK and e.match is EXACT for e in result.entries)
    assert problems(result) == [(5, "no Company_Phone_Number in this complaint"),
                                (7, "'555012': not a possible phone number: '555012'")]  # fmt: skip


def test_ftc_without_its_number_column() -> None:
    result = read(b"Created_Date,Subject\n2024-03-01 10:22:31,Imposters\n", ListFormat.FTC)
    assert result.entries == [] and result.problems[0].line == 1


# --------------------------------------------------------------------------- feed


def test_feed_sample() -> None:
    result = read_feed((DATA / "police.feed.csv").read_bytes(), source="feed:police",
                       expires_at="2026-12-01T00:00:00Z")  # fmt: skip
    assert result.format is ListFormat.FEED and result.rows == 5
    assert specs(result) == ["+81312345678", "+819011112222", "+8150*", "+81312340000..+81312349999"]
    assert all(e.list is BLOCK and e.source == "feed:police" for e in result.entries)
    assert result.entries[0].note == "還付金詐欺 (police report 2024-117)"
    # the earlier of the row's expiry and the argument
    assert [e.expires_at for e in result.entries[:2]] == ["2026-12-01T00:00:00.000Z", "2026-09-30T00:00:00.000Z"]
    (problem,) = result.problems
    assert problem.line == 6 and "national number" in problem.problem and "E.164" in problem.problem


def test_feed_rows_are_strict() -> None:
    data = (
        f"{FEED_HEADER}\n"
        "+81 3 1234 5678,spaces,\n"  # 2
        "+81312345678,x\n"  # 3
        "+81312345678,x,next tuesday\n"  # 4
        "+999123456789,unknown country,\n"  # 5
        "+810312345678,trunk zero after the country code,\n"  # 6: canonicalised, not refused
        "+81312340000..0312349999,half national,\n"  # 7
        "+819012345678,ok,2027-01-01\n"  # 8
    ).encode()
    result = read_feed(data, source="feed:x", expires_at=None)
    assert [(e.value, e.expires_at) for e in result.entries] == [
        ("+81312345678", None), ("+819012345678", "2027-01-01T00:00:00.000Z")]
    assert [p.line for p in result.problems] == [2, 3, 4, 5, 7]


@pytest.mark.parametrize(
    ("data", "line"),
    [(b"number,reason\n+81312345678,x\n", 1), (b"\nnumber,reason,expires\n", 2), (b"", 1), (b"\n", 1)],
)
def test_feed_without_its_header_is_refused(data: bytes, line: int) -> None:
    result = read_feed(data, source="feed:x", expires_at=None)
    assert result.entries == [] and [p.line for p in result.problems] == [line]


def test_feed_header_only_is_an_empty_list() -> None:
    result = read_feed(FEED_HEADER.encode() + b"\n", source="feed:x", expires_at=None)
    assert (result.entries, result.problems, result.rows) == ([], [], 0)


def test_feed_is_utf8_only() -> None:
    data = f"{FEED_HEADER}\n+81312345678,詐欺,\n".encode("cp932") + b"+819012345678,ok,\n"
    result = read_feed(data, source="feed:x", expires_at=None)
    assert specs(result) == ["+819012345678"]
    assert result.problems[0].line == 2 and "not UTF-8" in result.problems[0].problem


def test_feed_ignores_kind_it_is_always_block() -> None:
    result = read(f"{FEED_HEADER}\n+81312345678,x,\n".encode(), ListFormat.FEED, kind=ALLOW)
    assert [e.list for e in result.entries] == [BLOCK]


# --------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize("fmt", [ListFormat.PLAIN, ListFormat.CSV])
def test_a_100_mb_line_is_one_problem(fmt: ListFormat) -> None:
    header = b"number\n" if fmt is ListFormat.CSV else b""
    offset = 1 if header else 0
    data = header + b"03-1234-5678\n" + b"9" * (100 * 2**20) + b"\n03-9876-5432\n"
    result = read(data, fmt)
    assert specs(result) == ["+81312345678", "+81398765432"]
    (problem,) = result.problems
    assert problem.line == 2 + offset and "104,857,600 characters long" in problem.problem
    assert len(problem.text) <= 81


def test_nul_bytes_and_undecodable_lines_are_problems() -> None:
    data = b"number,reason\n03-1234-5678,ok\n03-1111-2222\x00,x\n\xff\xfe\xfd,x\n03-9876-5432,ok\n"
    result = read(data)
    assert specs(result) == ["+81312345678", "+81398765432"]
    assert [(p.line, p.text) for p in result.problems] == [(3, "03-1111-2222\\x00,x"), (4, "\\xff\\xfe\\xfd,x")]
    assert "NUL" in result.problems[0].problem and "not UTF-8" in result.problems[1].problem


def test_iter_entries_streams_in_file_order() -> None:
    stream = iter_entries(b"03-1234-5678\nbad\n0120*\n", None, kind=BLOCK, home_region="JP", source="local")
    kinds = [type(item).__name__ for item in stream]
    assert kinds == ["ListEntry", "RowProblem", "ListEntry"]
    assert (stream.format, stream.rows) == (ListFormat.PLAIN, 3)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400) | st.lists(st.sampled_from(
    [b"number,reason,expires\n", b"+81312345678,", b'"', b"\r", b"\n", b",", b"\x00", b"\xff", b"\x82\xa0", b"..",
     b"*", b"0120", b"Company_Phone_Number\n", b"\xef\xbb\xbf", b"#"]), max_size=40).map(b"".join),
       fmt=st.sampled_from([None, *ListFormat]))  # fmt: skip
def test_arbitrary_bytes_never_crash(data: bytes, fmt: ListFormat | None) -> None:
    result = read(data, fmt)
    lines = data.count(b"\n") + data.count(b"\r") + 1
    for problem in result.problems:
        assert 1 <= problem.line <= lines
        assert len(problem.text) <= 81 and problem.text.isprintable()
        problem.text.encode("utf-8")  # printable on any terminal: no lone surrogates
    for entry in result.entries:
        assert entry.value.startswith("+")


# --------------------------------------------------------------------------- the fast path


@settings(max_examples=examples(2000), deadline=None)
@given(cc=st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)),
       national=st.text("0123456789", min_size=1, max_size=13))  # fmt: skip
def test_fast_path_agrees_with_parse_list_spec(cc: int, national: str) -> None:
    text = f"+{cc}{national}"
    fast = fast_e164(text)
    if fast is not None:
        assert parse_list_spec(text, "JP") == (EXACT, fast, None)


@settings(max_examples=examples(1000), deadline=None)
@given(cc=st.sampled_from([1, 7, 33, 39, 44, 49, 81, 86, 353, 852, 880]), start=st.text("0123456789", min_size=4,
       max_size=12), tail=st.text("0123456789", min_size=2, max_size=3), other_cc=st.sampled_from([None, 44, 4]))
def test_range_fast_path_agrees_with_parse_list_spec(cc: int, start: str, tail: str, other_cc: int | None) -> None:
    end = start[: -len(tail)] + tail  # same length, either order; sometimes in another country
    text = f"+{cc}{start}..+{other_cc or cc}{end}"
    try:
        expected = parse_list_spec(text, "JP")
    except ListSpecError:
        with pytest.raises(ListSpecError):
            list_spec(text, "JP")
        return
    assert list_spec(text, "JP") == expected


@settings(max_examples=examples(1000), deadline=None)
@given(st.from_regex(r"[0-9]{10}", fullmatch=True))
def test_ftc_fast_path_agrees_with_parse_list_spec(digits: str) -> None:
    try:
        expected = parse_list_spec(digits, "US")
    except ListSpecError:
        with pytest.raises(ListSpecError):
            ftc_number(digits)
        return
    assert ftc_number(digits) == expected[1]


def test_fast_path_takes_the_common_numbers() -> None:
    rng = random.Random(7)
    for text in [f"+8190{rng.randrange(10**8):08d}" for _ in range(200)] + ["+442079460000", "+12125550143"]:
        assert fast_e164(text) == text
    # what it must leave to phonenumbers: trunk prefixes, Italian leading zeros, short and unknown codes
    for text in ["+810312345678", "+390612345678", "+8131", "+999123456789", "+112125550143"]:
        assert fast_e164(text) is None


# --------------------------------------------------------------------------- writing & round trips

_BASES = [("+8190", 8), ("+8180", 8), ("+813", 8), ("+816", 8), ("+8150", 8), ("+1212", 7), ("+4420", 8),
          ("+337", 8), ("+8210", 8), ("+8613", 9), ("+6128", 7)]  # fmt: skip
_TIMES = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda d: iso_utc(d.replace(tzinfo=UTC)))


@st.composite
def numbers(draw: st.DrawFn) -> str:
    base, n = draw(st.sampled_from(_BASES))
    text = base + draw(st.text("0123456789", min_size=n, max_size=n))
    try:
        _, value, _ = parse_list_spec(text, "JP")
    except ListSpecError:
        assume(False)
    return value


@st.composite
def entries(draw: st.DrawFn, *, kinds=(BLOCK, ALLOW), notes=None, sources=("local", "family", "police", "警察")):
    number = draw(numbers())
    match = draw(st.sampled_from(MatchKind))
    end = None
    if match is PREFIX:
        number = number[: draw(st.integers(5, len(number) - 1))]
    elif match is RANGE:
        tail = draw(st.integers(0, 999))
        end = number[:-3] + f"{max(int(number[-3:]), tail):03d}"
    note = draw(notes if notes is not None else st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40).map(str.strip))
    return ListEntry(draw(st.sampled_from(kinds)), match, number, end, source=draw(st.sampled_from(sources)),
                     note=note, added_at=draw(st.just("") | _TIMES), expires_at=draw(st.none() | _TIMES))


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(entries(), max_size=15))
def test_csv_round_trip_is_identity(items: list[ListEntry]) -> None:
    data = write_entries(items, ListFormat.CSV, home_region="JP")
    assert detect_format(data) is ListFormat.CSV
    result = read(data, ListFormat.CSV, kind=ALLOW, source="other")
    assert result.problems == [] and result.entries == items


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(entries(kinds=(BLOCK,)), max_size=15))
def test_feed_round_trip_is_identity(items: list[ListEntry]) -> None:
    data = write_entries(items, ListFormat.FEED, home_region="JP")
    assert detect_format(data) is ListFormat.FEED
    result = read_feed(data, source="feed:police", expires_at=None)
    assert result.problems == []
    expected = [ListEntry(BLOCK, e.match, e.value, e.value_end, "feed:police", e.note, "", e.expires_at)
                for e in items]  # fmt: skip
    assert result.entries == expected


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(entries(kinds=(BLOCK,), notes=st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30).map(str.strip)), max_size=12),
       st.sampled_from(["JP", "US", "GB"]))  # fmt: skip
def test_plain_round_trip_keeps_numbers_and_reasons(items: list[ListEntry], region: str) -> None:
    data = write_entries(items, ListFormat.PLAIN, home_region=region)
    result = read(data, ListFormat.PLAIN, home_region=region)
    assert result.problems == []
    assert [(e.match, e.value, e.value_end, e.note) for e in result.entries] == [
        (e.match, e.value, e.value_end, e.note) for e in items]


def test_plain_is_written_the_way_people_write_numbers() -> None:
    items = [ListEntry(BLOCK, EXACT, "+81312345678", note="fake\nbank"), ListEntry(BLOCK, PREFIX, "+81120"),
             ListEntry(BLOCK, RANGE, "+81312340000", "+81312349999"), ListEntry(BLOCK, EXACT, "+442079460000")]
    assert write_entries(items, ListFormat.PLAIN, home_region="JP").decode() == (
        "03-1234-5678  # fake bank\n0120*\n03-1234-0000..03-1234-9999\n+44 20 7946 0000\n")


def test_csv_export_has_a_bom_for_excel_and_a_feed_has_none() -> None:
    entry = ListEntry(BLOCK, EXACT, "+81312345678", note="詐欺")
    assert write_entries([entry], ListFormat.CSV, home_region="JP").startswith(b"\xef\xbb\xbfnumber,list,reason,")
    assert write_entries([entry], ListFormat.FEED, home_region="JP") == (
        f"{FEED_HEADER}\r\n+81312345678,詐欺,\r\n".encode())


def test_write_refuses_what_a_format_cannot_hold() -> None:
    with pytest.raises(ValueError, match="block entries only"):
        write_entries([ListEntry(ALLOW, EXACT, "+81312345678")], ListFormat.FEED, home_region="JP")
    with pytest.raises(ValueError, match="ftc"):
        write_entries([], ListFormat.FTC, home_region="JP")


# --------------------------------------------------------------------------- into a real store


def test_imported_files_decide_lookups_in_a_real_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db", recover_calls=False).open()
    try:
        ftc = read((DATA / "ftc_dnc_complaints.csv").read_bytes(), source="ftc")
        family = read((DATA / "family_plain.txt").read_bytes(), kind=ALLOW, source="family")
        assert store.import_entries(ftc.entries) == 7
        assert store.import_entries(family.entries) == 4
        feed = read_feed((DATA / "police.feed.csv").read_bytes(), source="feed:police", expires_at=None)
        assert store.replace_feed_entries("police", feed.entries) == 4
        lists = store.load_lists(datetime(2026, 1, 1, tzinfo=UTC))
        assert lists.match_block("+12025550143").note.endswith("(robocall)")
        assert lists.match_block("+815012345678").source == "feed:police"
        assert lists.match_allow("+81120123456").source == "family"
        assert lists.match_block("+81612345678") is None
    finally:
        store.close()


def test_feed_refuses_a_prefix_that_would_block_a_whole_country() -> None:
    data = b"number,reason,expires\r\n+81*,typo,\r\n+8*,typo,\r\n+81120*,free dial,\r\n"
    result = read_feed(data, source="feed:police", expires_at=None)
    assert [e.describe() for e in result.entries] == ["+81120*"]
    assert [p.line for p in result.problems] == [2, 3]
    assert "too broad" in result.problems[0].problem  # +8* is no country code at all: refused either way


@pytest.mark.parametrize("note", ['=HYPERLINK("http://evil.example/","click")', "+1+1", "-2+3", "@SUM(A1)",
                                  "'=already quoted", "ordinary note"])  # fmt: skip
@pytest.mark.parametrize("fmt", [ListFormat.CSV, ListFormat.FEED])
def test_csv_exports_never_hand_a_spreadsheet_a_formula(note: str, fmt: ListFormat) -> None:
    entry = ListEntry(ListKind.BLOCK, MatchKind.EXACT, "+81312345678", source="=cmd|' /C calc'!A0", note=note)
    data = write_entries([entry], fmt, home_region="JP")
    cells = [cell for row in csv.reader(io.StringIO(data.decode("utf-8-sig"))) for cell in row[1:]]
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells), cells
    back = read_entries(data, fmt, kind=ListKind.BLOCK, home_region="JP", source="x").entries
    assert back[0].note == note  # our own export reads back exactly
    if fmt is ListFormat.CSV:
        assert back[0].source == entry.source
