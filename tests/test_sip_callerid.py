"""SIP INVITE headers → CallerID: trust order, privacy, gateway reason forms, hostile input."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from screening.core.model import CallerID, Reason
from screening.core.sip_callerid import MAX_HEADERS, MAX_NAME_CHARS, caller_id_from_sip
from tests.support.examples import examples

UPSTREAM = "192.0.2.10"
STRANGER = "198.51.100.7"
TRUSTED = ("192.0.2.10", "2001:db8::/64")


def cid(headers: list[tuple[str, str]], source_ip: str = UPSTREAM, region: str = "JP") -> CallerID:
    return caller_id_from_sip(headers, source_ip=source_ip, trusted_upstreams=TRUSTED, home_region=region)


# (headers, expected raw_number, expected e164, expected reason, expected name)
CASES = [
    pytest.param([("From", '"Yamada Taro" <sip:+81312345678@gw.example;user=phone>;tag=a1')],
                 "+81312345678", "+81312345678", None, "Yamada Taro", id="name-addr-e164"),
    pytest.param([("From", "<sip:03-1234-5678@gw>;tag=1")], "0312345678", "+81312345678", None, None,
                 id="national-with-separators"),
    pytest.param([("f", "<tel:+442071234567>;tag=x")], "+442071234567", "+442071234567", None, None,
                 id="compact-from-tel"),
    pytest.param([("FROM", "sip:0312345678@10.0.0.1;tag=zz")], "0312345678", "+81312345678", None, None,
                 id="bare-uri-params-are-header-params"),
    pytest.param([("From", "<sip:01044201234567@gw>")], "01044201234567", "+44201234567", None, None,
                 id="jp-idd-010"),
    pytest.param([("From", "<sip:0044201234567@gw>")], "0044201234567", "+44201234567", None, None,
                 id="idd-00"),
    pytest.param([("From", "<sip:０３１２３４５６７８@gw>")], "0312345678", "+81312345678", None, None,
                 id="full-width-digits"),
    pytest.param([("From", "<sip:%2B81312345678@gw>")], "+81312345678", "+81312345678", None, None,
                 id="percent-escaped-plus"),
    pytest.param([("From", '"Tanaka \\"Boss\\" ,Ltd" <sip:0312345678@gw>')], "0312345678", "+81312345678",
                 None, 'Tanaka "Boss" ,Ltd', id="quoted-display-escapes-comma"),
    pytest.param([("From", "Suzuki  Hanako <sip:0312345678@gw>")], "0312345678", "+81312345678", None,
                 "Suzuki  Hanako", id="token-display-name"),
    pytest.param([("From", "<sip:0312345678;npdi;rn=123@gw>")], "0312345678", "+81312345678", None, None,
                 id="user-params-dropped"),
    pytest.param([("From", "<sip:12#45@gw>")], "12#45", None, None, None, id="dial-string-kept-raw"),
    # withheld
    pytest.param([("From", '"Anonymous" <sip:anonymous@anonymous.invalid>;tag=1'), ("Privacy", "id")],
                 None, None, Reason.WITHHELD, None, id="rfc3323-anonymous-privacy-id"),
    pytest.param([("From", "<sip:Anonymous@gw.example>")], None, None, Reason.WITHHELD, None,
                 id="user-Anonymous"),
    pytest.param([("From", "<sip:someone@anonymous.invalid>")], None, None, Reason.WITHHELD, None,
                 id="host-anonymous-invalid"),
    pytest.param([("From", "<sip:0312345678@gw>"), ("Privacy", "header; id")], None, None, Reason.WITHHELD,
                 None, id="privacy-header-id"),
    pytest.param([("From", "<sip:0312345678@gw>"), ("Privacy", "user")], None, None, Reason.WITHHELD, None,
                 id="privacy-user"),
    pytest.param([("From", "<sip:0312345678@gw>"), ("Privacy", "none")], "0312345678", "+81312345678", None,
                 None, id="privacy-none-shows"),
    pytest.param([("From", "<sip:0312345678@gw>"),
                  ("Remote-Party-ID", '"X" <sip:0312345678@gw>;party=calling;privacy=full;screen=yes')],
                 None, None, Reason.WITHHELD, None, id="rpid-privacy-full"),
    # gateway reason forms
    pytest.param([("From", "<sip:unavailable@gw>")], None, None, Reason.OUT_OF_AREA, None, id="user-unavailable"),
    pytest.param([("From", "<sip:Unavailable@gw>")], None, None, Reason.OUT_OF_AREA, None, id="user-Unavailable"),
    pytest.param([("From", "<sip:out-of-area@gw>")], None, None, Reason.OUT_OF_AREA, None, id="user-out-of-area"),
    pytest.param([("From", "<sip:O@gw>")], None, None, Reason.OUT_OF_AREA, None, id="user-O"),
    pytest.param([("From", "<sip:P@gw>")], None, None, Reason.WITHHELD, None, id="user-P"),
    pytest.param([("From", "<sip:C@gw>")], None, None, Reason.PAYPHONE, None, id="user-C"),
    pytest.param([("From", "<sip:S@gw>")], None, None, Reason.SERVICE_CONFLICT, None, id="user-S"),
    pytest.param([("From", '"Coin line/payphone" <sip:ntt-hgw@192.168.1.1>')], None, None, Reason.PAYPHONE, None,
                 id="ntt-display-payphone"),
    pytest.param([("From", '"Interaction with other service" <sip:x@192.168.1.1>')], None, None,
                 Reason.SERVICE_CONFLICT, None, id="ntt-display-service-conflict"),
    pytest.param([("From", '"Unavailable" <sip:x@192.168.1.1>')], None, None, Reason.OUT_OF_AREA, None,
                 id="ntt-display-unavailable"),
    pytest.param([("From", '"公衆電話" <sip:x@192.168.1.1>')], None, None, Reason.PAYPHONE, None,
                 id="japanese-display-payphone"),
    pytest.param([("From", '"Unavailable" <sip:0312345678@gw>')], "0312345678", "+81312345678", None, None,
                 id="reason-name-with-number-is-just-no-name"),
    # nothing usable
    pytest.param([("From", "<sip:alice@example.com>")], None, None, None, None, id="non-numeric-user"),
    pytest.param([("From", "<http://evil.example/0312345678>")], None, None, None, None, id="foreign-scheme"),
    pytest.param([], None, None, None, None, id="no-headers"),
]


@pytest.mark.parametrize(("headers", "raw", "e164", "reason", "name"), CASES)
def test_table(headers, raw, e164, reason, name) -> None:
    caller = cid(headers)
    assert (caller.raw_number, caller.number_e164, caller.reason, caller.name) == (raw, e164, reason, name)


def test_pai_trusted_wins_over_rpid_and_from() -> None:
    headers = [
        ("From", "<sip:0312345678@gw>"),
        ("Remote-Party-ID", "<sip:0667778888@gw>;party=calling"),
        ("P-Asserted-Identity", '"Shop" <sip:+819012345678@gw>, <tel:+819012345678>'),
    ]
    assert cid(headers).number_e164 == "+819012345678"
    assert cid(headers).name == "Shop"
    no_pai = [h for h in headers if h[0] != "P-Asserted-Identity"]
    assert cid(no_pai).number_e164 == "+81667778888"


def test_pai_and_rpid_ignored_from_untrusted_source() -> None:
    headers = [
        ("From", "<sip:0312345678@gw>"),
        ("P-Asserted-Identity", "<sip:+81901234567@gw>"),
        ("Remote-Party-ID", "<sip:0667778888@gw>;privacy=off"),
    ]
    caller = cid(headers, source_ip=STRANGER)
    assert caller.number_e164 == "+81312345678"
    assert any("not a trusted upstream" in line for line in caller.raw_lines)


def test_trusted_ipv6_network_and_bad_entries() -> None:
    headers = [("From", "<sip:0312345678@gw>"), ("P-Asserted-Identity", "<tel:+442071234567>")]
    got = caller_id_from_sip(headers, source_ip="2001:db8::5", trusted_upstreams=["not-an-ip", "2001:db8::/64"],
                             home_region="JP")
    assert got.number_e164 == "+442071234567"
    got = caller_id_from_sip(headers, source_ip="garbage", trusted_upstreams=["0.0.0.0/0"], home_region="JP")
    assert got.number_e164 == "+81312345678"


def test_ipv4_mapped_source_is_trusted_like_ipv4() -> None:
    headers = [("From", "<sip:0312345678@gw>"), ("P-Asserted-Identity", "<tel:+442071234567>")]
    assert cid(headers, source_ip="::ffff:192.0.2.10").number_e164 == "+442071234567"


def test_withheld_identity_is_redacted_from_raw_lines() -> None:
    caller = cid([("P-Asserted-Identity", '"Real Name" <tel:+81312345678>'), ("From", "<sip:anonymous@x>"),
                  ("Privacy", "id")])
    assert caller.reason is Reason.WITHHELD
    assert not any("312345678" in line or "Real Name" in line for line in caller.raw_lines)
    assert "p-asserted-identity: (withheld on request)" in caller.raw_lines
    assert "privacy: id" in caller.raw_lines


def test_trusted_pai_anonymous_beats_from_number() -> None:
    headers = [("From", "<sip:0312345678@gw>"), ("P-Asserted-Identity", "<sip:anonymous@anonymous.invalid>")]
    assert cid(headers).reason is Reason.WITHHELD
    assert cid(headers).raw_number is None


def test_untrusted_rpid_privacy_is_ignored_but_privacy_header_honoured() -> None:
    rpid = [("From", "<sip:0312345678@gw>"), ("Remote-Party-ID", "<sip:0312345678@gw>;privacy=full")]
    assert cid(rpid, source_ip=STRANGER).reason is None
    assert cid([*rpid, ("Privacy", "id")], source_ip=STRANGER).reason is Reason.WITHHELD


def test_international_detected_like_modem_path() -> None:
    caller = cid([("From", '"Intl" <sip:+442071234567@trunk>')])
    assert caller.number_e164 == "+442071234567"
    from screening.core.numbers import try_parse_number

    parsed = try_parse_number(caller.number_e164, "JP")
    assert parsed is not None and parsed.is_international("JP")


def test_unterminated_quote_and_unclosed_angle_give_no_number() -> None:
    assert cid([("From", '"Yamada <sip:0312345678@gw>')]).raw_number is None
    assert cid([("From", "Yamada <sip:0312345678@gw")]).raw_number is None
    assert cid([("From", '"Yamada" sip:0312345678@gw')]).raw_number is None


def test_only_first_from_is_used() -> None:
    assert cid([("From", "<sip:0312345678@gw>"), ("From", "<sip:0667778888@gw>")]).raw_number == "0312345678"


def test_bytes_and_junk_items_are_survived() -> None:
    headers = [("From", None), (b"From", b"<sip:0312345678@gw>"), ("x",), 42, ("Privacy", 3)]
    assert cid(headers).number_e164 == "+81312345678"  # type: ignore[arg-type]


def test_non_iterable_headers_give_note_not_exception() -> None:
    caller = cid(None)  # type: ignore[arg-type]
    assert caller == CallerID()
    assert caller.raw_lines and caller.raw_lines[0].startswith("note:")


def test_huge_header_is_cut_and_noted() -> None:
    big = '"' + "A" * 1_000_000 + '" <sip:0312345678@gw>'
    start = time.perf_counter()
    caller = cid([("From", big)])
    assert time.perf_counter() - start < 0.5
    assert caller.raw_number is None  # the URI was past the cut: no number, never a guessed one
    assert any("cut to" in line for line in caller.raw_lines)
    assert all(len(line) <= 256 for line in caller.raw_lines)


def test_header_flood_is_bounded() -> None:
    def endless():
        while True:
            yield ("X-Junk", "y" * 100)

    start = time.perf_counter()
    caller = cid(endless())
    assert time.perf_counter() - start < 0.5
    assert any(f"more than {MAX_HEADERS}" in line for line in caller.raw_lines)


def test_long_display_name_is_bounded_and_control_chars_dropped() -> None:
    caller = cid([("From", '"' + "\x07\x1b[31m" + "N" * 500 + '" <sip:0312345678@gw>')])
    assert caller.name is not None and len(caller.name) == MAX_NAME_CHARS
    assert all(ch.isprintable() for ch in caller.name)


def test_many_pai_entries_are_bounded() -> None:
    pai = ", ".join(["<sip:alice@x>"] * 10_000) + ", <tel:+442071234567>"
    caller = cid([("P-Asserted-Identity", pai), ("From", "<sip:0312345678@gw>")])
    assert caller.number_e164 == "+81312345678"  # the PAI number was past the cap


# ---- fuzz ------------------------------------------------------------------------

_NAMES = st.sampled_from(["From", "f", "F", "P-Asserted-Identity", "Remote-Party-ID", "Privacy", "Via", "X"])
_SIPPY = st.text(alphabet=st.sampled_from(list('"<>;,@:\\ =+0123456789abcdnoyPOCS%2B\x00\u3000０あ')), max_size=80)
_VALUES = st.one_of(_SIPPY, st.text(max_size=200))


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=12),
       source_ip=st.sampled_from([UPSTREAM, STRANGER, "::1", "", "x"]))
def test_fuzz_never_raises_and_is_bounded(headers, source_ip) -> None:
    start = time.perf_counter()
    caller = caller_id_from_sip(headers, source_ip=source_ip, trusted_upstreams=TRUSTED, home_region="JP")
    assert time.perf_counter() - start < 0.5
    assert isinstance(caller, CallerID)
    assert caller.reason is None or caller.raw_number is None  # a reason always wins over a number
    assert caller.name is None or len(caller.name) <= MAX_NAME_CHARS
    if caller.number_e164 is not None:
        assert caller.number_e164.startswith("+") and caller.number_e164[1:].isdigit()
