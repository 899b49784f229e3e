"""The Hikari Denwa home gateway (HGW) layout without forked ringing, end to end with SIPp as the HGW.

Layout (docs/japan-lines.md): the external number rings only mamoru's SIP extension; mamoru
registers with the HGW, and rings the household phone as an internal extension (TEL1, internal
number 1) through the HGW when a call is allowed, or once the warning has played.

On an HGW extension the caller arrives in ``From`` only (no P-Asserted-Identity): the number as the
user part, or, without a number, ``anonymous@anonymous.invalid`` with the Number Display reason in
the display name.
"""

from __future__ import annotations

import pytest

from screening.model import Reason
from screening.sip_callerid import caller_id_from_sip

HGW = "127.0.0.1"

# (From as the HGW writes it, expected raw number, expected reason)
HGW_FROM = [
    ('"0312345678" <sip:0312345678@ntt-east.ne.jp>;tag=1', "0312345678", None),
    ('<sip:0312345678@192.168.1.1>;tag=1', "0312345678", None),
    ('"Anonymous" <sip:anonymous@anonymous.invalid>;tag=1', None, Reason.WITHHELD),
    ('<sip:anonymous@anonymous.invalid>;tag=1', None, Reason.WITHHELD),
    ('"Coin line/payphone" <sip:anonymous@anonymous.invalid>;tag=1', None, Reason.PAYPHONE),
    ('"Unavailable" <sip:anonymous@anonymous.invalid>;tag=1', None, Reason.OUT_OF_AREA),
    ('"Interaction with other service" <sip:anonymous@anonymous.invalid>;tag=1', None, Reason.SERVICE_CONFLICT),
    ('"公衆電話" <sip:anonymous@anonymous.invalid>;tag=1', None, Reason.PAYPHONE),
    ('"Coin line/payphone" <sip:anonymous@192.168.1.1>;tag=1', None, Reason.PAYPHONE),
]


@pytest.mark.parametrize(("from_", "raw", "reason"), HGW_FROM)
def test_hgw_from_forms_give_the_number_display_reason(from_: str, raw: str | None, reason: Reason | None) -> None:
    caller = caller_id_from_sip([("From", from_)], source_ip=HGW, trusted_upstreams=[HGW], home_region="JP")
    assert (caller.raw_number, caller.reason) == (raw, reason)


def test_privacy_header_still_withholds_whatever_the_display_name() -> None:
    headers = [("From", '"Coin line/payphone" <sip:anonymous@anonymous.invalid>'), ("Privacy", "id")]
    assert caller_id_from_sip(headers, source_ip=HGW, trusted_upstreams=[HGW], home_region="JP").reason \
        is Reason.WITHHELD
