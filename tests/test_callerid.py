"""Caller ID parsing: real-looking modem transcripts, tables, and fuzzing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from screening.core.callerid import (
    CallerIdBuilder,
    CidField,
    caller_id_for_check,
    caller_id_from_fields,
    decode_mesg,
    parse_cid_line,
    reason_from_code,
)
from screening.core.model import CallerID, Reason

CID_DATA = Path(__file__).parent / "data" / "cid"


def read_transcript(path: Path, home_region: str) -> list[CallerID]:
    """Replay a transcript the way the modem reader does.

    Lines are split on LF like ``serial.readline()`` and decoded with
    replacement. A block is finished when it looks complete, or when the next
    non-blank, non-caller-ID line arrives (standing in for the quiet gap).
    """
    builder = CallerIdBuilder()
    calls: list[CallerID] = []
    for raw in path.read_bytes().split(b"\n"):
        line = raw.decode("utf-8", errors="replace")
        if builder.add_line(line):
            if builder.looks_complete:
                calls.append(builder.build(home_region))
                builder.reset()
        elif line.strip() and builder.started:
            calls.append(builder.build(home_region))
            builder.reset()
    if builder.started:
        calls.append(builder.build(home_region))
    return calls


def summary(caller: CallerID) -> dict[str, object]:
    return {
        "raw_number": caller.raw_number,
        "number_e164": caller.number_e164,
        "name": caller.name,
        "reason": caller.reason,
        "date": caller.date,
        "time": caller.time,
    }


def expect(
    raw_number: str | None = None,
    e164: str | None = None,
    name: str | None = None,
    reason: Reason | None = None,
    date: str | None = None,
    time: str | None = None,
) -> dict[str, object]:
    return {
        "raw_number": raw_number,
        "number_e164": e164,
        "name": name,
        "reason": reason,
        "date": date,
        "time": time,
    }


TRANSCRIPTS = [
    ("usr5637_us_name.txt", "US", expect("2125551234", "+12125551234", "SMITH JOHN", None, "0321", "1405")),
    ("usr5637_us_private.txt", "US", expect(reason=Reason.WITHHELD, date="1102", time="0930")),
    ("usr_out_of_area.txt", "US", expect(reason=Reason.OUT_OF_AREA, date="0704", time="2359")),
    (
        "usr5637_us_name_unavailable.txt",
        "US",
        expect("3125550142", "+13125550142", None, None, "0101", "0000"),
    ),
    ("usr5637_us_private_words.txt", "US", expect(reason=Reason.WITHHELD, date="0229", time="1200")),
    (
        "conexant_us_ddn_nospace.txt",
        "US",
        expect("8005550199", "+18005550199", "ACME CORP", None, "1231", "0815"),
    ),
    ("conexant_jp_number.txt", "JP", expect("0312345678", "+81312345678", None, None, "0321", "1405")),
    ("conexant_jp_withheld.txt", "JP", expect(reason=Reason.WITHHELD, date="0321", time="1406")),
    ("conexant_jp_payphone.txt", "JP", expect(reason=Reason.PAYPHONE, date="0322", time="0712")),
    ("conexant_jp_out_of_area.txt", "JP", expect(reason=Reason.OUT_OF_AREA, date="0322", time="0713")),
    (
        "conexant_jp_service_conflict.txt",
        "JP",
        expect(reason=Reason.SERVICE_CONFLICT, date="0322", time="0714"),
    ),
    ("conexant_jp_mesg_reason.txt", "JP", expect(reason=Reason.WITHHELD, date="0322", time="0715")),
    ("conexant_jp_bad_datetime.txt", "JP", expect("0612345678", "+81612345678")),
    ("uk_number_only.txt", "GB", expect("02079460000", "+442079460000")),
    ("uk_withheld_lowercase.txt", "GB", expect(reason=Reason.WITHHELD)),
    (
        "usr5637_us_noise.txt",
        "US",
        expect("2125551234", "+12125551234", "JOS\u00c9 GARC\u00cdA", None, "0321", "1405"),
    ),
    ("usr5637_us_empty_number.txt", "US", expect(date="0321", time="1405")),
]


@pytest.mark.parametrize(("filename", "region", "expected"), TRANSCRIPTS, ids=[t[0] for t in TRANSCRIPTS])
def test_transcript(filename: str, region: str, expected: dict[str, object]) -> None:
    calls = read_transcript(CID_DATA / filename, region)
    assert len(calls) == 1
    assert summary(calls[0]) == expected
    assert calls[0].raw_lines, "raw lines are kept for the call log"
    assert all("\r" not in line and "\n" not in line for line in calls[0].raw_lines)


def test_transcripts_are_crlf_framed() -> None:
    """The data files must stay byte-exact (see tests/data/cid/.gitattributes)."""
    for path in CID_DATA.glob("*.txt"):
        data = path.read_bytes()
        assert data.count(b"\n") == data.count(b"\r\n"), path.name


def test_every_transcript_is_tested() -> None:
    tested = {t[0] for t in TRANSCRIPTS} | {"no_caller_id.txt"}
    assert {p.name for p in CID_DATA.glob("*.txt")} == tested


def test_rings_only_gives_no_block() -> None:
    assert read_transcript(CID_DATA / "no_caller_id.txt", "JP") == []


def test_raw_lines_keep_exact_text() -> None:
    (call,) = read_transcript(CID_DATA / "conexant_jp_bad_datetime.txt", "JP")
    assert call.raw_lines == ("DATE = 1399", "TIME = 2575", "NMBR = 0612345678")


# ---- parse_cid_line -----------------------------------------------------------

LINES = [
    ("DATE = 0321", (CidField.DATE, "0321")),
    ("DATE=0321", (CidField.DATE, "0321")),
    ("  TIME =1405\r\n", (CidField.TIME, "1405")),
    ("NMBR = 0312345678\r", (CidField.NMBR, "0312345678")),
    ("nmbr = p", (CidField.NMBR, "p")),
    ("Name = YAMADA TARO", (CidField.NAME, "YAMADA TARO")),
    ("NAME = 山田太郎", (CidField.NAME, "山田太郎")),
    ("NAME =", (CidField.NAME, "")),
    ("NMBR = ", (CidField.NMBR, "")),
    ("MESG = 030132", (CidField.MESG, "030132")),
    ("DDN_NMBR = 8005550199", (CidField.DDN_NMBR, "8005550199")),
    ("NMBR = OUT OF AREA", (CidField.NMBR, "OUT OF AREA")),
    ("NMBR = A=B", (CidField.NMBR, "A=B")),
    ("\tNMBR\t=\t2125551234\t", (CidField.NMBR, "2125551234")),
]


@pytest.mark.parametrize(("line", "expected"), LINES)
def test_parse_cid_line(line: str, expected: tuple[CidField, str]) -> None:
    assert parse_cid_line(line) == expected


@pytest.mark.parametrize(
    "line",
    ["RING", "OK", "", "   ", "\r\n", "ERROR", "CONNECT", "VCON", "= 0321", "FOO = 1", "NMBR 0312345678",
     "NMBR: 0312345678", "ATE0", "NＭBR = 1", "NAMEX = 1", "CID = 0312345678"],
)
def test_parse_cid_line_rejects(line: str) -> None:
    assert parse_cid_line(line) is None


# ---- reason codes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("P", Reason.WITHHELD),
        ("p", Reason.WITHHELD),
        ("PRIVATE", Reason.WITHHELD),
        ("Private", Reason.WITHHELD),
        ("ANONYMOUS", Reason.WITHHELD),
        ("非通知", Reason.WITHHELD),
        ("O", Reason.OUT_OF_AREA),
        ("UNAVAILABLE", Reason.OUT_OF_AREA),
        ("OUT-OF-AREA", Reason.OUT_OF_AREA),
        ("OUT OF AREA", Reason.OUT_OF_AREA),
        ("out_of_area", Reason.OUT_OF_AREA),
        ("Ｏ", Reason.OUT_OF_AREA),  # full-width
        ("表示圏外", Reason.OUT_OF_AREA),
        ("C", Reason.PAYPHONE),
        ("公衆電話", Reason.PAYPHONE),
        ("S", Reason.SERVICE_CONFLICT),
        ("サービス競合", Reason.SERVICE_CONFLICT),
        ("0", None),  # the digit, not the letter O
        ("0312345678", None),
        ("", None),
        (None, None),
        ("PP", None),
    ],
)
def test_reason_from_code(value: str | None, reason: Reason | None) -> None:
    assert reason_from_code(value) is reason


# ---- caller_id_from_fields ------------------------------------------------------

FIELD_CASES = [
    # reason code wins over a number
    ({"NMBR": "0312345678", "DDN_NMBR": "P"}, "JP", expect(reason=Reason.WITHHELD)),
    ({"NMBR": "P", "DDN_NMBR": "0312345678"}, "JP", expect(reason=Reason.WITHHELD)),
    # NAME reason without number becomes the reason; with a number it is just "no name"
    ({"NMBR": "", "NAME": "P"}, "US", expect(reason=Reason.WITHHELD)),
    ({"NAME": "O"}, "US", expect(reason=Reason.OUT_OF_AREA)),
    ({"NMBR": "2125551234", "NAME": "P"}, "US", expect("2125551234", "+12125551234")),
    # unparsable number keeps raw
    ({"NMBR": "12"}, "JP", expect("12")),
    ({"NMBR": "ABCDEF"}, "JP", expect("ABCDEF")),
    ({"NMBR": "03-1234-5678"}, "JP", expect("03-1234-5678", "+81312345678")),
    ({"NMBR": "０３１２３４５６７８"}, "JP", expect("０３１２３４５６７８", "+81312345678")),  # full-width
    ({"NMBR": "(212) 555.1234"}, "US", expect("(212) 555.1234", "+12125551234")),
    # junk characters make it "not a number" instead of being silently dropped
    ({"NMBR": "12#45"}, "JP", expect("12#45")),
    ({"NMBR": "03X1234X5678"}, "JP", expect("03X1234X5678")),
    ({"NMBR": "03+12345678"}, "JP", expect("03+12345678")),
    # no number field at all: everything None
    ({"DATE": "0321", "TIME": "1405", "NAME": "YAMADA TARO"}, "JP", expect()),
    ({}, "JP", expect()),
    ({"MESG": "030132"}, "JP", expect()),
    # MESG reason codes (Bellcore/ND parameters the modem did not decode)
    ({"NMBR": "", "MESG": "080150"}, "US", expect(reason=Reason.WITHHELD)),
    ({"MESG": "04014F"}, "US", expect(reason=Reason.OUT_OF_AREA)),
    ({"MESG": "040143"}, "JP", expect(reason=Reason.PAYPHONE)),
    ({"NMBR": "2125551234", "MESG": "08014F"}, "US", expect("2125551234", "+12125551234")),
    # Number Display MMDDHHMM in one DATE
    ({"DATE": "03211405", "NMBR": "0312345678"}, "JP", expect("0312345678", "+81312345678", date="0321", time="1405")),
    # date/time only as an undecoded MESG parameter (type 01, MMDDHHMM)
    ({"NMBR": "P", "MESG": "01083033323131343035"}, "JP", expect(reason=Reason.WITHHELD, date="0321", time="1405")),
    # impossible or malformed date/time ignored
    ({"DATE": "1399", "TIME": "2575", "NMBR": "P"}, "JP", expect(reason=Reason.WITHHELD)),
    ({"DATE": "0230", "TIME": "2400", "NMBR": "P"}, "JP", expect(reason=Reason.WITHHELD)),
    ({"DATE": "3/21", "TIME": "14:05", "NMBR": "P"}, "JP", expect(reason=Reason.WITHHELD)),
    ({"DATE": "0229", "TIME": "2359", "NMBR": "P"}, "JP", expect(reason=Reason.WITHHELD, date="0229", time="2359")),
    # keys in any case, CidField keys
    ({"nmbr": "0312345678"}, "JP", expect("0312345678", "+81312345678")),
    ({CidField.NMBR: "C"}, "JP", expect(reason=Reason.PAYPHONE)),
    # control characters dropped from names
    ({"NMBR": "2125551234", "NAME": "SMITH\x00\x07 JOHN"}, "US", expect("2125551234", "+12125551234", "SMITH JOHN")),
]


@pytest.mark.parametrize(("fields", "region", "expected"), FIELD_CASES)
def test_caller_id_from_fields(fields: dict[str, str], region: str, expected: dict[str, object]) -> None:
    assert summary(caller_id_from_fields(fields, region)) == expected


def test_message_is_kept() -> None:
    caller = caller_id_from_fields({"NMBR": "0312345678", "MESG": "030132"}, "JP")
    assert caller.message == "030132"


def test_no_caller_id_keeps_raw_lines() -> None:
    caller = caller_id_from_fields({"DATE": "0321"}, "JP", raw_lines=["DATE = 0321"])
    assert caller == CallerID()
    assert caller.raw_lines == ("DATE = 0321",)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("080150", {0x08: b"P"}),
        ("04 01 4F", {0x04: b"O"}),
        ("01083033323131343035" "0201", {0x01: b"03211405"}),  # trailing truncated parameter dropped
        ("zz", {}),
        ("0", {}),
        ("", {}),
    ],
)
def test_decode_mesg(value: str, expected: dict[int, bytes]) -> None:
    assert decode_mesg(value) == expected


# ---- caller_id_for_check ------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "reason", "name", "region", "expected"),
    [
        ("", Reason.WITHHELD, None, "JP", expect(reason=Reason.WITHHELD)),
        ("", Reason.PAYPHONE, None, "JP", expect(reason=Reason.PAYPHONE)),
        ("", None, None, "JP", expect()),
        ("  ", None, None, "JP", expect()),
        ("0312345678", None, None, "JP", expect("0312345678", "+81312345678")),
        ("0312345678", Reason.WITHHELD, None, "JP", expect(reason=Reason.WITHHELD)),
        ("PRIVATE", None, None, "US", expect(reason=Reason.WITHHELD)),
        ("+44 20 7946 0000", None, "ACME", "JP", expect("+44 20 7946 0000", "+442079460000", "ACME")),
        ("12", None, None, "JP", expect("12")),
        ("12#45", None, None, "JP", expect("12#45")),
    ],
)
def test_caller_id_for_check(
    number: str, reason: Reason | None, name: str | None, region: str, expected: dict[str, object]
) -> None:
    assert summary(caller_id_for_check(number, reason, name, region)) == expected


# ---- builder ---------------------------------------------------------------------


def test_builder_completion_and_reset() -> None:
    builder = CallerIdBuilder()
    assert not builder.started and not builder.has_number_field and not builder.looks_complete
    builder.add(CidField.NAME, "EARLY NAME", "NAME = EARLY NAME")
    assert not builder.looks_complete, "NAME before the number does not finish the block"
    builder.add(CidField.NMBR, "2125551234", "NMBR = 2125551234")
    assert builder.has_number_field and not builder.looks_complete
    builder.add(CidField.NAME, "SMITH JOHN", "NAME = SMITH JOHN")
    assert builder.looks_complete
    assert builder.build("US").name == "SMITH JOHN"
    builder.reset()
    assert not builder.started and not builder.looks_complete
    assert builder.build("US") == CallerID()


def test_builder_empty_value_does_not_erase() -> None:
    builder = CallerIdBuilder()
    builder.add(CidField.NMBR, "0312345678", "NMBR = 0312345678")
    builder.add(CidField.NMBR, "", "NMBR =")
    assert builder.build("JP").raw_number == "0312345678"
    assert builder.fields() == {CidField.NMBR: "0312345678"}


def test_builder_empty_number_field_counts() -> None:
    builder = CallerIdBuilder()
    builder.add(CidField.NMBR, "", "NMBR =")
    assert builder.has_number_field


def test_builder_joins_mesg_lines() -> None:
    builder = CallerIdBuilder()
    builder.add(CidField.MESG, "030132", "MESG = 030132")
    builder.add(CidField.MESG, "040150", "MESG = 040150")
    assert builder.build("JP").reason is Reason.WITHHELD


# ---- fuzzing ---------------------------------------------------------------------

KEYS = st.sampled_from(["DATE", "TIME", "NMBR", "NAME", "MESG", "DDN_NMBR", "nmbr", "Name", "RING", "OK"])
REGIONS = st.sampled_from(["JP", "US", "GB", "CA", "AU"])

cid_like_lines = st.builds(
    lambda key, sep, value: f"{key}{sep}{value}",
    KEYS,
    st.sampled_from(["=", " = ", "= ", "\t=\t"]),
    st.one_of(
        st.text(),
        # any script's digits, '+' and separators: what reaches phonenumbers
        st.text(alphabet=st.one_of(st.characters(categories=["Nd", "No"]), st.sampled_from("+-() ")), max_size=20),
    ),
)
decoded_bytes = st.binary(max_size=200).map(lambda b: b.decode("utf-8", errors="replace"))
any_line = st.one_of(st.text(), decoded_bytes, cid_like_lines)


@given(any_line)
@example("NMBR = \x00")
@example("NAME = \ud800")
@example("DATE = ١٢٣٤")
@example("NMBR = ᧚᧚᧚᧚᧚᧚᧚")
def test_parse_cid_line_never_raises(line: str) -> None:
    result = parse_cid_line(line)
    if result is not None:
        cid_field, value = result
        assert isinstance(cid_field, CidField)
        assert isinstance(value, str)
        assert value == value.strip()


@given(st.lists(any_line, max_size=12), REGIONS)
@example(["NMBR = ᧚᧚᧚᧚᧚᧚᧚"], "JP")
@example(["NMBR = ١٢٣٤٥٦٧٨٩٠", "NAME = P"], "US")
@example(["DATE = ²³¹⁴", "TIME = ٩٩٩٩", "NMBR = +"], "GB")
@example(["MESG = 0401", "MESG = ff00ff"], "JP")
@example(["DATE=99999999", "NMBR=0"], "JP")
def test_builder_never_raises(lines: list[str], region: str) -> None:
    builder = CallerIdBuilder()
    for line in lines:
        builder.add_line(line)
        assert isinstance(builder.looks_complete, bool)
        assert isinstance(builder.has_number_field, bool)
    caller = builder.build(region)
    assert isinstance(caller, CallerID)
    assert caller.reason is None or isinstance(caller.reason, Reason)
    for value in (caller.raw_number, caller.number_e164, caller.name, caller.date, caller.time, caller.message):
        assert value is None or isinstance(value, str)
    if caller.reason is not None:
        assert caller.raw_number is None and caller.number_e164 is None
    if caller.number_e164 is not None:
        assert caller.number_e164.startswith("+") and caller.number_e164[1:].isdigit()
    if caller.date is not None:
        assert len(caller.date) == 4 and caller.date.isdigit()
    if caller.time is not None:
        assert len(caller.time) == 4 and caller.time.isdigit()


@given(
    st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), st.text(max_size=30), max_size=8),
    REGIONS,
)
def test_caller_id_from_fields_never_raises(fields: dict[str, str], region: str) -> None:
    assert isinstance(caller_id_from_fields(fields, region), CallerID)


@given(st.text(max_size=30), st.sampled_from([None, *Reason]), st.one_of(st.none(), st.text(max_size=20)), REGIONS)
def test_caller_id_for_check_never_raises(
    number: str, reason: Reason | None, name: str | None, region: str
) -> None:
    caller = caller_id_for_check(number, reason, name, region)
    if reason is not None:
        assert caller.reason is reason
