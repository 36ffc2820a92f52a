"""Input limits at the edge (runtime.events.limits, runtime.events.envelope, runtime.keys, serve.sse): every
bad-input class is rejected with its own reason, and never costs the good input around it."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import keys
from runtime.config.documents import parse_document
from runtime.errors import ConfigError, InputError
from runtime.events.envelope import decode_events
from runtime.events.limits import MAX_DEPTH, MAX_KEYS, MAX_STRING_LENGTH, value_problem, within_limits
from runtime.sources.decode import split_json_array
from runtime.subscriptions.pull import check_entry_id
from serve.sse import frame


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def event(i: int, data: bytes = b'{"n":1}', kind: bytes = b'"t.x"') -> bytes:
    return b'{"id":"e%d","type":%s,"time":1,"subject":"s","data":%s}' % (i, kind, data)


BAD_DATA = [
    ("too_deep", b'{"x":' + nested(10_000) + b"}"),
    ("too_deep", b'{"x":' + nested(MAX_DEPTH + 5) + b"}"),
    ("integer_out_of_range", b'{"x":9223372036854775808}'),
    ("integer_out_of_range", b'{"x":{"y":[-9223372036854775809]}}'),
    ("integer_out_of_range", b'{"x":1' + b"0" * 5000 + b"}"),
    ("string_too_long", b'{"x":"' + b"a" * (MAX_STRING_LENGTH + 1) + b'"}'),
    ("string_too_long", b'{"' + b"k" * 300 + b'":1}'),
    ("too_many_keys", b"{" + b",".join(b'"k%d":1' % i for i in range(MAX_KEYS + 1)) + b"}"),
    ("invalid_number", b'{"x":NaN}'),
    ("invalid_number", b'{"x":-Infinity}'),
    ("invalid_number", b'{"x":[1e999]}'),
    ("invalid_unicode", b'{"x":"\\ud800"}'),
    ("invalid_unicode", b'{"\\udc00":1}'),
]


@pytest.mark.parametrize(("reason", "data"), BAD_DATA, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD_DATA)])
@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_a_bad_event_is_rejected_with_its_reason_and_the_others_go_on(reason, data, content_type):
    records = [event(0), event(1, data), event(2, b'{"deep":{"ok":[1,2,{"z":"y"}]}}')]
    body = b"[" + b",".join(records) + b"]" if content_type == "application/json" else b"\n".join(records)
    batch, total = decode_events(body, content_type, source="src", received_at=1)
    assert total == 3
    assert [e.id for e in batch.events] == ["e0", "e2"]
    assert [(r.index, r.reason) for r in batch.rejected] == [(1, reason)]


@pytest.mark.parametrize("kind", ["t.x\r\ndata: forged", "T.X", "a b", "", "t.x\u2028"])
def test_event_types_follow_the_catalogue_name_pattern(kind):
    body = b"[" + event(0) + b"," + event(1, kind=orjson.dumps(kind)) + b"]"
    batch, _ = decode_events(body, "application/json", source="src", received_at=1)
    assert [e.id for e in batch.events] == ["e0"]
    assert [r.reason for r in batch.rejected] == ["invalid_field" if not kind else "invalid_type"]


def test_a_single_event_body_gets_a_per_event_reason_and_syntax_errors_stay_whole_body():
    batch, _ = decode_events(event(0, b'{"x":NaN}'), "application/json", source="src", received_at=1)
    assert [(r.index, r.id, r.reason) for r in batch.rejected] == [(0, "e0", "invalid_number")]
    from runtime.errors import UnparseableBody

    for body in (b'[{"id":1,}]', b"[" + nested(10_000), b'["abc', b"[1]x"):
        with pytest.raises(UnparseableBody):
            decode_events(body, "application/json", source="src", received_at=1)


def test_the_array_splitter_needs_no_recursion():
    deep = nested(100_000)
    assert split_json_array(b" [1, " + deep + b', {"a":"],["}] ') == [b"1", deep, b'{"a":"],["}']
    assert split_json_array(b'{"a":1}') == [b'{"a":1}']
    assert split_json_array(b"[1,2") is None
    assert split_json_array(b'["a\\"]') is None


def test_the_walk_reports_where_and_stops_at_the_depth_limit():
    deep: list = []
    node = deep
    for _ in range(10_000):
        node.append([])
        node = node[0]
    assert not within_limits(deep)
    assert value_problem(deep)[0] == "too_deep"
    assert value_problem({"a": [1, {"b": 2**64}]}) == (
        "integer_out_of_range",
        "'data.a[1].b' is outside the 64-bit integer range [-2^63, 2^63-1]",
    )
    assert value_problem({"a": [1, {"b": "x" * 100}], "c": 2**63 - 1, "d": -(2**63), "e": 1.5, "f": None}) is None


# --- config documents --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"kind": "event-type", "name": "a.b", "description": "\ud800"}, "invalid_unicode"),
        ({"kind": "event-type", "name": "a.b", "attributes": {"x": {"enum": ["\udc00"]}}}, "invalid_unicode"),
        ({"kind": "event-type", "name": "a.b", "attributes": {"x": {"min": float("nan")}}}, "invalid_number"),
        ({"kind": "event-type", "name": "a.b", "attributes": {"x": {"enum": [2**64]}}}, "integer_out_of_range"),
        ({"kind": "\ud800", "name": "a.b"}, "invalid_unicode"),
    ],
)
def test_config_documents_breaking_a_limit_are_invalid_config(document, reason):
    with pytest.raises(ConfigError) as refused:
        parse_document(document)
    assert refused.value.errors[0]["expected"] == reason
    refused.value.message.encode()  # the answer itself can always be encoded


def test_config_nested_10000_deep_is_invalid_config():
    attributes: dict = {}
    node = attributes
    for _ in range(10_000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(ConfigError) as refused:
        parse_document({"kind": "event-type", "name": "a.b", "attributes": attributes})
    assert refused.value.errors[0]["expected"] == "too_deep"


@pytest.mark.parametrize(
    "document",
    [
        {"kind": "source", "name": "s", "dedupe": {"horizon": "99999999w"}},
        {"kind": "source", "name": "s", "rate_limit_per_s": 10**12},
        {"kind": "rule", "name": "r", "when": {"event": "a", "count": 2, "within": "401d"}, "then": [{"emit": "x"}]},
        {"kind": "rule", "name": "r", "when": {"event": "a"}, "then": [{"emit": "x"}], "cooldown": "1000d"},
        {"kind": "policy", "name": "p", "caps": [{"name": "c", "window": "7d", "max": 1, "max_by_tier": {"g": 10**9}}]},
    ],
)
def test_durations_and_counts_in_documents_are_bounded(document):
    with pytest.raises(ConfigError):
        parse_document(document)


# --- Redis keys ----------------------------------------------------------------------------

KEY_TYPES = {
    name: fn
    for name, fn in {
        "fires": lambda n: keys.fires(3, n),
        "subscription_stream": keys.subscription_stream,
        "channel_stream": keys.channel_stream,
        "emitted": lambda n: keys.emitted(3, n),
        "forwarded": lambda n: keys.forwarded(keys.subscription_stream(n)),
        "deliveries": keys.deliveries,
        "profile": keys.profile,
        "ledger": keys.ledger,
        "ledger_version": keys.ledger_version,
        "optouts": keys.optouts,
        "capacity": keys.capacity,
        "capacity_version": keys.capacity_version,
        "decision": keys.decision,
        "customer_decisions": keys.customer_decisions,
        "identity": keys.identity,
        "config_docs": keys.config_docs,
        "subscription_dead": lambda n: keys.deadletters(keys.subscription_stream(n)),
        "subscription_chunks": lambda n: keys.delivery_chunks(keys.subscription_stream(n)),
        "channel_state": lambda n: keys.delivery_state(keys.channel_stream(n)),
        "idempotency": lambda n: keys.idempotency(3, n, 20000),
        "dropped": lambda n: keys.dropped(n, 20000),
        "late": lambda n: keys.late(n, 20000),
        "hits": lambda n: keys.hits(3, "src", n),
        "hits_source": lambda n: keys.hits(3, n, "e"),
        "config_history": lambda n: keys.config_history("rule", n),
        "config_version": lambda n: keys.config_version("rule", n),
        "batch_profile": lambda n: keys.batch_profile("v1", n),
    }.items()
}
FIXED = {
    keys.CONFIG_VERSION,
    keys.META,
    keys.HEARTBEATS,
    keys.QUARANTINE,
    keys.CONSENT,
    keys.BATCH_PROFILE_VERSION,
    keys.HELD,
    keys.TOKENS,
    keys.TOKEN_NAMES,
    keys.AUDIT,
    keys.log_stream(0),
    keys.epoch(0),
    keys.outbox(0),
    keys.policy_requests(0),
}
NAMES = st.one_of(
    st.text(alphabet=st.sampled_from(list("av:%{}*?[]\\-_.\r\n\x00/")), max_size=12),
    st.sampled_from(["v", "v:x", "x", "v%3Ax", "current", "history:rule:x", "dead", "", "%", "%25"]),
    st.text(max_size=8),
)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(sorted(KEY_TYPES)), NAMES, st.sampled_from(sorted(KEY_TYPES)), NAMES)
def test_distinct_key_types_and_names_never_give_the_same_key(type_a, name_a, type_b, name_b):
    key_a, key_b = KEY_TYPES[type_a](name_a), KEY_TYPES[type_b](name_b)
    if (type_a, name_a) != (type_b, name_b):
        assert key_a != key_b
    assert key_a not in FIXED
    assert not any(c in key_a for c in "\r\n\x00*?[")
    assert key_a.count("{") <= 1 and key_a.count("}") <= 1  # only ESP's own hash tag: a name cannot add one


@settings(max_examples=1000, deadline=None)
@given(st.one_of(NAMES, st.text(), st.text(alphabet=st.characters(categories=["L", "N"]))))
def test_a_key_segment_escapes_exactly_the_unsafe_characters(name):
    def escaped(c: str) -> str:
        if c in "%:{}*?[]\\\x7f" or c < " " or "\ud800" <= c <= "\udfff":
            return f"%{ord(c):02X}" if ord(c) < 0x100 else f"%u{ord(c):04X}"
        return c

    assert keys.part(name) == "".join(map(escaped, name))


def test_the_ledger_collision_of_issue_12_is_gone_and_plain_names_keep_their_keys():
    assert keys.ledger("v:alice") != keys.ledger_version("alice")
    assert keys.profile("c-123_x.y@z") == "esp:profile:c-123_x.y@z"  # stored data of such ids stays found
    assert keys.part("\ud800").encode()  # a key is always encodable


# --- SSE and acks --------------------------------------------------------------------------


def test_no_sse_field_can_break_its_line():
    kind = "t.x\r\ndata: forged\rid: 9\n"
    out = frame("1-0", kind, {"type": kind, "note": "a\nb\u2028"})
    lines = out.split(b"\n")
    assert lines[0] == b"id: 1-0" and lines[1].startswith(b"event: t.x") and lines[2].startswith(b"data: ")
    assert lines[3:] == [b"", b""]
    assert b"\r" not in out


@pytest.mark.parametrize("bad", [5, None, ["1-0"], "1-", "x-1", "1-0-0", "9" * 30 + "-0", "18446744073709551616-0"])
def test_an_entry_id_that_is_not_one_is_input_error(bad):
    with pytest.raises(InputError) as refused:
        check_entry_id(bad, "Last-Event-ID")
    assert refused.value.reason == "invalid_event_id"
