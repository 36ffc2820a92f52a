"""The identity and consent stores' pure logic, without Redis: encodings, link choice by time,
timeline merge, consent precedence, validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.events.consent import ConsentRecord, Flag, decide, decode_consents, encode_consents, merge_consents, wins
from runtime.events.identity import (
    MAX_LINKS,
    IdentityLink,
    InvalidRecord,
    Link,
    choose_encoded,
    choose_link,
    decode_links,
    encode_links,
    merge_links,
    validate_links,
)

T = 1_767_225_600_000  # 2026-01-01T00:00:00Z

times = st.none() | st.integers(min_value=-50, max_value=50)
customers = st.text(alphabet="abcxyz|;:,[\\ 0123456789é", min_size=1, max_size=6)


@st.composite
def links(draw: st.DrawFn) -> Link:
    start, end = draw(times), draw(times)
    if start is not None and end is not None and start >= end:
        start, end = end - 1 if start == end else end, start
    return Link(draw(customers), start, end)


def brute_force(timeline: list[Link], at: int) -> str | None:
    """The oracle: every link valid at ``at``, ranked by (start, position)."""
    valid = [
        (float("-inf") if link.valid_from is None else link.valid_from, position, link.customer)
        for position, link in enumerate(timeline)
        if (link.valid_from is None or link.valid_from <= at) and (link.valid_to is None or at < link.valid_to)
    ]
    return max(valid)[2] if valid else None


@given(st.lists(links(), max_size=8), st.integers(min_value=-60, max_value=60))
def test_choose_link_matches_brute_force(timeline, at):
    assert choose_link(timeline, at) == brute_force(timeline, at)


@given(st.lists(links(), min_size=1, max_size=8), st.integers(min_value=-60, max_value=60))
def test_choose_encoded_is_choose_link_on_the_stored_form(timeline, at):
    assert choose_encoded(encode_links(timeline).encode(), at) == choose_link(timeline, at)


@given(st.lists(links(), min_size=1, max_size=8))
def test_encoding_round_trips(timeline):
    assert decode_links(encode_links(timeline)) == timeline
    assert decode_links(encode_links(timeline).encode()) == timeline


def test_single_unbounded_link_is_stored_as_the_bare_customer():
    assert encode_links([Link("c-1")]) == "c-1"
    assert decode_links(b"c-1") == [Link("c-1")]
    assert encode_links([Link("c-1", T)]) == f"c-1\x1f{T}\x1f"


@given(st.lists(links(), max_size=10), st.lists(links(), max_size=10), st.integers(min_value=-60, max_value=60))
def test_merge_replaces_by_valid_from_and_keeps_order(existing, new, at):
    merged = merge_links(merge_links((), existing), new)
    starts = [link.valid_from for link in merged]
    assert len(set(starts)) == len(starts)
    assert starts == sorted(starts, key=lambda s: -(2**63) if s is None else s)
    # every new link is present unless a later new link with the same valid_from replaced it
    last_new = {link.valid_from: link for link in new}
    assert all(link in merged for link in last_new.values())
    # what resolves at any time is what a full timeline resolves (no link dropped below the cap)
    assert choose_link(merged, at) == brute_force(
        list({**{x.valid_from: x for x in existing}, **last_new}.values()), at
    )


def test_merge_caps_links_dropping_the_oldest():
    timeline = [Link(f"c{i}", i) for i in range(MAX_LINKS + 5)]
    merged = merge_links((), timeline)
    assert len(merged) == MAX_LINKS
    assert merged[0] == Link("c5", 5)


def test_recycled_number_resolves_by_time():
    timeline = merge_links((), [Link("alice"), Link("bob", T)])
    assert choose_link(timeline, T - 1) == "alice"
    assert choose_link(timeline, T) == "bob"
    closed = merge_links(timeline, [Link("bob", T, T + 10)])
    assert choose_link(closed, T + 10) == "alice"  # alice's open-ended link shows through again
    assert choose_link([Link("alice", None, T)], T) is None


@pytest.mark.parametrize(
    ("link", "field"),
    [
        (IdentityLink("", phone="1"), "customer"),
        (IdentityLink("c"), "phone"),
        (IdentityLink("c", phone=""), "phone"),
        (IdentityLink("c", imei=5), "imei"),  # type: ignore[arg-type]
        (IdentityLink("c", phone="1", valid_from_ms=T, valid_to_ms=T), "valid_to_ms"),
        (IdentityLink("c", phone="1", valid_from_ms=True), "valid_from_ms"),  # type: ignore[arg-type]
        (IdentityLink("c", phone="1", valid_to_ms=10**18), "valid_to_ms"),
        (IdentityLink("c\x1fd", phone="1"), "customer"),
    ],
)
def test_invalid_links_name_index_and_field(link, field):
    good = IdentityLink("c", phone="1")
    with pytest.raises(InvalidRecord) as info:
        validate_links([good, good, link], first_index=100)
    assert info.value.reason == "invalid_identity"
    assert (info.value.index, info.value.field) == (102, field)
    assert info.value.to_dict()["index"] == 102
    assert "record 102" in info.value.message


# ---- consent


def test_consent_encoding_round_trips():
    flags = {"": Flag(True, T), "sms": Flag(False, T + 1), "marketing.email": Flag(True, -5)}
    assert decode_consents(encode_consents(flags)) == flags


@given(
    st.lists(
        st.tuples(st.sampled_from(["", "sms", "marketing"]), st.booleans(), st.integers(min_value=0, max_value=3)),
        max_size=12,
    )
)
def test_consent_merge_is_order_independent(records):
    entries = [(purpose, Flag(flag, at)) for purpose, flag, at in records]
    forward = merge_consents({}, entries)
    backward = merge_consents({}, list(reversed(entries)))
    assert forward == backward
    for purpose, flag in forward.items():
        same = [f for p, f in entries if p == purpose]
        latest = max(f.at_ms for f in same)
        assert flag.at_ms == latest
        assert flag.opted_in == all(f.opted_in for f in same if f.at_ms == latest)


def test_consent_precedence():
    stored = encode_consents({"": Flag(True, T), "sms": Flag(False, T)})
    assert decide(stored, None) is True
    assert decide(stored, "sms") is False  # the purpose's flag overrides the global one
    assert decide(stored, "marketing") is True  # no purpose flag: the global one
    assert decide(encode_consents({"sms": Flag(True, T)}), None) is False
    assert decide(None, "sms") is False
    assert wins(Flag(True, T + 1), Flag(False, T)) and not wins(Flag(True, T), Flag(False, T))


def test_pure_modules_import_neither_redis_nor_pyarrow():
    code = (
        "import sys, runtime.events.identity, runtime.events.consent\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'redis', 'pyarrow', 'ray'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    )
    assert result.stdout.strip() == "[]"


def test_consent_record_defaults():
    record = ConsentRecord("c", True)
    assert (record.purpose, record.at_ms) == (None, None)
