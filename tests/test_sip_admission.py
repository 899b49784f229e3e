"""Admission of INVITEs before pjsua opens media sockets (firmware/sip_admission.py): pure rules."""

from __future__ import annotations

import pytest

from firmware.sip_admission import WITHHELD, Admission, AdmissionLimits, Refusal

UPSTREAM = "192.168.1.1"


def admit(adm: Admission, key: str, now: float, *, slot_free: bool = True, holds: bool = False) -> Refusal | None:
    return adm.decide(key, now, slot_free=slot_free, key_holds_slot=holds)


def test_only_the_upstreams_are_taken_when_set() -> None:
    adm = Admission(frozenset({UPSTREAM, "10.0.0.0/8"}))
    assert adm.refuses_source("192.168.1.77")
    assert not adm.refuses_source(UPSTREAM)
    assert not adm.refuses_source("10.2.3.4")
    assert adm.from_upstream("10.2.3.4")
    assert not Admission(frozenset()).refuses_source("192.168.1.77")
    assert not Admission(frozenset()).from_upstream("192.168.1.77")


def test_one_caller_is_its_address_or_through_the_upstream_its_number() -> None:
    adm = Admission(frozenset({UPSTREAM}))
    assert adm.key_for("192.168.1.77", "+81312345678") == "source:192.168.1.77"
    assert adm.key_for(UPSTREAM, "+81312345678") == "number:+81312345678"
    assert adm.key_for(UPSTREAM, None) == WITHHELD
    assert Admission(frozenset()).key_for("192.168.1.77", None) == "source:192.168.1.77"


def test_one_slot_per_key_except_withheld_callers_leave_the_last_slot() -> None:
    assert Admission.slots_for("source:192.168.1.77", 4) == 1
    assert Admission.slots_for(WITHHELD, 4) == 3
    assert Admission.slots_for(WITHHELD, 1) == 1
    adm = Admission(frozenset())
    assert admit(adm, "source:a", 0.0, holds=True) is Refusal.BUSY
    assert admit(adm, "source:a", 0.0, slot_free=False) is Refusal.BUSY
    assert admit(adm, "source:a", 0.0) is None


def test_a_source_gets_its_burst_then_its_rate() -> None:
    adm = Admission(frozenset(), AdmissionLimits(source_rate_per_s=2.0, source_burst=4.0))
    assert [admit(adm, "source:a", 0.0) for _ in range(5)] == [None] * 4 + [Refusal.OVERLOADED]
    assert admit(adm, "source:b", 0.0) is None  # another source has its own bucket
    assert admit(adm, "source:a", 0.2) is Refusal.OVERLOADED  # 0.4 of a call earned
    assert admit(adm, "source:a", 0.5) is None  # 1.0 earned
    assert adm.refused[Refusal.OVERLOADED] == 2


def test_sockets_are_budgeted_until_their_slots_are_free_again() -> None:
    limits = AdmissionLimits(media_handles=12, handles_per_call=2, reserve_handles=4, handle_free_delay_s=1.0,
                             source_burst=100.0)
    assert limits.max_media_calls == 4
    adm = Admission(frozenset(), limits)
    for _ in range(4):
        assert admit(adm, "source:a", 0.0) is None
        adm.media_opened()
    assert admit(adm, "source:a", 0.0) is Refusal.OVERLOADED
    assert adm.has_room(0.0)  # our own household leg / alert call may use the margin
    for _ in range(4):
        adm.media_closed(0.1)
    assert adm.media_calls(0.5) == 4  # closed, but pjlib frees the slots only later
    assert admit(adm, "source:a", 0.5) is Refusal.OVERLOADED
    assert adm.media_calls(1.2) == 0
    assert admit(adm, "source:a", 1.2) is None


def test_the_wheel_budget_keeps_a_margin_below_pjlibs_64_slots() -> None:
    limits = AdmissionLimits()
    assert limits.max_media_calls * limits.handles_per_call + limits.reserve_handles <= limits.media_handles
    assert limits.handle_free_delay_s >= 0.5  # PJ_IOQUEUE_KEY_FREE_DELAY


@pytest.mark.parametrize("n", [5000])
def test_a_flood_from_many_addresses_does_not_grow_memory_without_bound(n: int) -> None:
    adm = Admission(frozenset())
    for i in range(n):
        admit(adm, f"source:10.{i // 65536}.{i // 256 % 256}.{i % 256}", i * 1e-4)
    assert len(adm._buckets) <= 4096
