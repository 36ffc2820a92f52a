"""runtime.events.envelope: body decoding, batch validation and event times.

Invariant 4 ("bad input never costs good input") is shown here for every body format and for
both ways in: ``decode_body`` + ``validate_batch`` (item by item) and ``decode_events`` (the
typed fast path that falls back to item by item). One malformed event among 1,000 good ones
is rejected with its index and reason, and the other 999 are accepted in request order.
"""

from __future__ import annotations

import calendar
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import EspError, InputError, UnparseableBody, UnsupportedContentType
from runtime.events.envelope import (
    Batch,
    Event,
    Rejection,
    decode_events,
    format_time_ms,
    parse_time_ms,
    validate_batch,
)
from runtime.sources.decode import decode_body

SOURCE = "crm"
RECEIVED_AT = 1_700_000_999_000
BASE_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
N = 1_000
BAD = 537  # index of the malformed event in the 1,000-event batches


def good(i: int) -> dict[str, Any]:
    return {"id": f"e{i}", "type": "app.login", "time": BASE_MS + i, "subject": f"c{i % 7}", "data": {"n": i}}


def expected_event(i: int) -> Event:
    return Event(
        id=f"e{i}",
        type="app.login",
        time=BASE_MS + i,
        subject=f"c{i % 7}",
        customer=f"c{i % 7}",
        source=SOURCE,
        data={"n": i},
        received_at=RECEIVED_AT,
    )


GOOD_INDICES = [i for i in range(N) if i != BAD]


def validate(body: bytes, content_type: str | None) -> Batch:
    """The item-by-item path: decode_body, then validate_batch."""
    return validate_batch(decode_body(body, content_type), source=SOURCE, received_at=RECEIVED_AT)


def fast(body: bytes, content_type: str | None) -> Batch:
    """decode_events, checking that its item count agrees with the batch it returns."""
    batch, items = decode_events(body, content_type, source=SOURCE, received_at=RECEIVED_AT)
    assert items == len(batch.events) + len(batch.rejected)
    assert sorted(batch.indices + [r.index for r in batch.rejected]) == list(range(items))
    return batch


PATHS = pytest.mark.parametrize("decode", [validate, fast], ids=["validate_batch", "decode_events"])


def assert_one_rejected(batch, reason: str, rejected_id: str | None) -> None:
    assert [(r.index, r.id, r.reason) for r in batch.rejected] == [(BAD, rejected_id, reason)]
    assert batch.indices == GOOD_INDICES
    assert batch.events == [expected_event(i) for i in GOOD_INDICES]


# -- one bad event among 1,000, per body format ------------------------------------------------


@PATHS
def test_json_array_rejects_only_the_event_missing_its_subject(decode):
    items = [good(i) for i in range(N)]
    del items[BAD]["subject"]
    batch = decode(json.dumps(items).encode(), "application/json")
    assert_one_rejected(batch, "missing_field", f"e{BAD}")
    assert "subject" in batch.rejected[0].message


@PATHS
def test_ndjson_rejects_only_the_unparseable_line(decode):
    lines = [json.dumps(good(i)) for i in range(N)]
    lines[BAD] = '{"id": "e537", "type": "app.login", "time": '  # truncated line
    batch = decode("\n".join(lines).encode(), "application/x-ndjson")
    assert_one_rejected(batch, "unparseable", None)
    assert "not valid JSON" in batch.rejected[0].message


@PATHS
def test_cloudevents_batch_rejects_only_the_event_with_a_bad_time(decode):
    items = [{"specversion": "1.0", "source": SOURCE, **good(i)} for i in range(N)]
    items[BAD]["time"] = "yesterday at noon"
    batch = decode(json.dumps(items).encode(), "application/cloudevents-batch+json")
    assert_one_rejected(batch, "invalid_time", f"e{BAD}")
    assert "yesterday at noon" in batch.rejected[0].message


def arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@PATHS
def test_arrow_ipc_stream_rejects_only_the_row_with_a_null_subject(decode):
    rows = [good(i) for i in range(N)]
    subjects: list[str | None] = [r["subject"] for r in rows]
    subjects[BAD] = None
    table = pa.table(
        {
            "id": [r["id"] for r in rows],
            "type": [r["type"] for r in rows],
            "time": pa.array([r["time"] for r in rows], pa.int64()),
            "subject": subjects,
            "data": pa.array([r["data"] for r in rows], pa.struct([("n", pa.int64())])),
        }
    )
    batch = decode(arrow_stream(table), "application/vnd.apache.arrow.stream")
    assert_one_rejected(batch, "missing_field", f"e{BAD}")


@PATHS
@pytest.mark.parametrize("content_type", ["application/json", "application/cloudevents+json"])
def test_single_object_body_is_a_batch_of_one(decode, content_type):
    batch = decode(json.dumps(good(3)).encode(), content_type)
    assert batch.events == [expected_event(3)]
    assert batch.indices == [0]
    assert batch.rejected == []


@PATHS
def test_single_bad_object_is_rejected_at_index_zero(decode):
    item = {**good(3), "data": [1, 2]}
    batch = decode(json.dumps(item).encode(), "application/cloudevents+json")
    assert batch.events == []
    assert [(r.index, r.id, r.reason) for r in batch.rejected] == [(0, "e3", "invalid_field")]


# -- whole-body errors -------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_unsupported_content_type_raises_with_reason(content_type):
    with pytest.raises(UnsupportedContentType) as info:
        decode_body(b"{}", content_type)
    assert isinstance(info.value, InputError)
    assert isinstance(info.value, EspError)
    assert info.value.reason == "unsupported_content_type"
    assert info.value.to_dict()["reason"] == "unsupported_content_type"
    assert content_type.split(";")[0] in info.value.message


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[{'id': 1}]", "application/json"),
        (b"", "application/json"),
        (b'[{"id": "a"},', "application/cloudevents-batch+json"),
        (b"not arrow at all", "application/vnd.apache.arrow.stream"),
        (b"", "application/vnd.apache.arrow.stream"),
    ],
)
def test_unparseable_whole_body_raises_with_reason(body, content_type):
    with pytest.raises(UnparseableBody) as info:
        decode_body(body, content_type)
    assert isinstance(info.value, InputError)
    assert info.value.reason == "unparseable_body"


def test_content_type_parameters_and_case_are_ignored():
    assert decode_body(b'{"a": 1}', "Application/JSON; charset=utf-8") == [{"a": 1}]


def test_missing_content_type_means_json():
    assert decode_body(b"[1, 2]", None) == [1, 2]


def test_ndjson_skips_blank_lines_and_accepts_crlf():
    # Indices count events, not lines: the blank lines are not events.
    body = b'{"a": 1}\r\n\r\n   \n{"a": 2}\n'
    assert decode_body(body, "application/x-ndjson") == [{"a": 1}, {"a": 2}]


def test_empty_ndjson_body_is_an_empty_batch():
    assert decode_body(b"", "application/x-ndjson") == []


# -- per-event validation ----------------------------------------------------------------------


def one(item: Any) -> Rejection | Event:
    batch = validate_batch([item], source=SOURCE, received_at=RECEIVED_AT)
    assert len(batch.events) + len(batch.rejected) == 1
    return batch.rejected[0] if batch.rejected else batch.events[0]


def without(key: str) -> dict[str, Any]:
    item = good(1)
    del item[key]
    return item


@pytest.mark.parametrize(
    ("item", "reason", "rejected_id"),
    [
        ([1, 2], "not_an_object", None),
        ("e1", "not_an_object", None),
        (None, "not_an_object", None),
        (without("id"), "missing_field", None),
        (without("type"), "missing_field", "e1"),
        (without("subject"), "missing_field", "e1"),
        (without("time"), "missing_field", "e1"),
        ({**good(1), "id": ""}, "invalid_field", ""),
        ({**good(1), "id": 17}, "invalid_field", None),
        ({**good(1), "id": "x" * 257}, "invalid_field", "x" * 257),
        ({**good(1), "type": "t" * 129}, "invalid_field", "e1"),
        ({**good(1), "subject": ""}, "invalid_field", "e1"),
        ({**good(1), "subject": 13800138000}, "invalid_field", "e1"),
        ({**good(1), "time": "soon"}, "invalid_time", "e1"),
        ({**good(1), "time": None}, "invalid_time", "e1"),
        ({**good(1), "time": True}, "invalid_time", "e1"),
        ({**good(1), "time": [BASE_MS]}, "invalid_time", "e1"),
        ({**good(1), "data": "x=1"}, "invalid_field", "e1"),
        ({**good(1), "source": "billing"}, "source_mismatch", "e1"),
    ],
)
def test_rejection_reasons(item, reason, rejected_id):
    rejection = one(item)
    assert isinstance(rejection, Rejection)
    assert (rejection.index, rejection.id, rejection.reason) == (0, rejected_id, reason)
    assert rejection.message
    assert rejection.to_dict() == {"index": 0, "id": rejected_id, "reason": reason, "message": rejection.message}


def test_limits_are_inclusive():
    event = one({**good(1), "id": "x" * 256, "type": "t" * 128, "subject": "s" * 256})
    assert isinstance(event, Event)
    assert (len(event.id), len(event.type), len(event.subject)) == (256, 128, 256)


def test_event_naming_its_own_source_is_accepted():
    event = one({**good(1), "source": SOURCE})
    assert isinstance(event, Event)
    assert event.source == SOURCE


def test_standardised_event_fields():
    event = one({"id": "x1", "type": "call.inbound", "time": "2024-01-01T00:00:00Z", "subject": "138"})
    assert event == Event(
        id="x1",
        type="call.inbound",
        time=1_704_067_200_000,
        subject="138",
        customer="138",  # identity resolution happens later; until then customer = subject
        source=SOURCE,
        data={},  # no data means an empty object
        received_at=RECEIVED_AT,
    )


def test_extra_attributes_are_ignored():
    event = one({**good(2), "specversion": "1.0", "datacontenttype": "application/json"})
    assert event == expected_event(2)


def test_rejection_message_quotes_long_values_truncated():
    rejection = one({**good(1), "time": "z" * 10_000})
    assert isinstance(rejection, Rejection)
    assert len(rejection.message) < 200


def test_validated_events_survive_the_log_encoding():
    batch = validate_batch([good(i) for i in range(5)], source=SOURCE, received_at=RECEIVED_AT)
    wire = msgspec.msgpack.encode(batch.events)
    assert msgspec.msgpack.decode(wire, type=list[Event]) == [expected_event(i) for i in range(5)]


@PATHS
def test_nan_time_in_an_arrow_batch_costs_only_that_row(decode):
    """A NaN time (possible in an Arrow float64 column) is one bad row, not a failed request."""
    table = pa.table(
        {
            "id": ["a", "b"],
            "type": ["t", "t"],
            "time": pa.array([1.0, float("nan")], pa.float64()),
            "subject": ["c", "c"],
        }
    )
    batch = decode(arrow_stream(table), "application/vnd.apache.arrow.stream")
    assert [(r.index, r.reason) for r in batch.rejected] == [(1, "invalid_time")]
    assert [e.id for e in batch.events] == ["a"]


@pytest.mark.parametrize("time_ms", [10**20, -(10**20), 253_402_300_800_000, -62_135_596_800_001])
def test_out_of_range_epoch_time_is_rejected(time_ms):
    """Times outside years 1..9999 cannot be logged (msgpack int range) or rendered, so they
    are refused at the edge rather than failing the whole request later."""
    rejection = one({**good(1), "time": time_ms})
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "invalid_time"


@pytest.mark.parametrize("time_ms", [253_402_300_799_999, -62_135_596_800_000])  # 9999-12-31T23:59:59.999Z, 0001-01-01
def test_extreme_epoch_times_within_range_are_accepted(time_ms):
    event = one({**good(1), "time": time_ms})
    assert isinstance(event, Event) and event.time == time_ms


@PATHS
def test_json_seq_records_are_parsed(decode):
    """RFC 7464 JSON text sequences: each record starts with the RS byte 0x1E."""
    body = b"".join(b"\x1e" + json.dumps(good(i)).encode() + b"\n" for i in range(3))
    batch = decode(body, "application/json-seq")
    assert batch.rejected == []
    assert batch.events == [expected_event(i) for i in range(3)]


# -- event time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01T00:00:00Z", 1_704_067_200_000),
        ("2024-01-01T00:00:00.250Z", 1_704_067_200_250),
        ("2024-01-01T00:00:00+00:00", 1_704_067_200_000),
        ("2024-03-01T08:00:00+08:00", 1_709_251_200_000),  # = 2024-03-01T00:00:00Z (leap year)
        ("2023-12-31T18:30:00-05:30", 1_704_067_200_000),
        ("2024-01-01T00:00:00", 1_704_067_200_000),  # naive = UTC
        ("1970-01-01T00:00:00Z", 0),
        (1_704_067_200_000, 1_704_067_200_000),  # epoch milliseconds
        (0, 0),
        (1_704_067_200_000.0, 1_704_067_200_000),
    ],
)
def test_parse_time_ms(value, expected):
    assert parse_time_ms(value) == expected


@pytest.fixture
def local_time_in_shanghai(monkeypatch):
    """A process whose local time zone is UTC+8, so "naive means UTC" is observable."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_naive_time_is_utc_whatever_the_local_zone(local_time_in_shanghai):
    assert time.localtime(0).tm_hour == 8  # the fixture took effect
    assert parse_time_ms("2024-01-01T00:00:00") == 1_704_067_200_000
    assert parse_time_ms("2024-01-01T08:00:00+08:00") == 1_704_067_200_000


@pytest.mark.parametrize(
    "value",
    ["", "noon", "2024-13-01T00:00:00Z", "2024-01-01T25:00:00Z", None, True, False, [1], float("nan"), float("inf")],
)
def test_parse_time_ms_refuses(value):
    assert parse_time_ms(value) is None


OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
SECONDS = st.integers(0, 4_102_444_799)  # 1970 .. 2099


@settings(max_examples=200, deadline=None)
@given(SECONDS, OFFSETS)
def test_rfc3339_with_any_offset_matches_calendar_arithmetic(epoch_s, offset):
    local = datetime.fromtimestamp(epoch_s, tz=offset)
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]
    assert calendar.timegm(local.utctimetuple()) == epoch_s  # the text names that instant
    assert parse_time_ms(text) == epoch_s * 1000


def test_format_time_ms():
    assert format_time_ms(1_704_067_200_250) == "2024-01-01T00:00:00.250Z"
    assert format_time_ms(0) == "1970-01-01T00:00:00.000Z"


def test_millisecond_fractions_are_exact():
    """Regression: float arithmetic (timestamp() * 1000) used to lose 1 ms on these."""
    assert parse_time_ms("2004-03-15T07:55:47.472Z") == 1_079_337_347_472
    assert parse_time_ms("2039-03-08T19:46:13.411Z") == 2_183_226_373_411
    assert parse_time_ms("2038-08-15T15:00:50.430Z") == 2_165_497_250_430


MS_1970_TO_2099 = st.integers(0, 4_102_444_799_999)


@settings(max_examples=300, deadline=None)
@given(MS_1970_TO_2099)
def test_format_then_parse_round_trips(ms):
    text = format_time_ms(ms)
    assert text.endswith("Z") and len(text) == len("2024-01-01T00:00:00.000Z")
    assert parse_time_ms(text) == ms


@settings(max_examples=300, deadline=None)
@given(MS_1970_TO_2099)
def test_format_agrees_with_calendar_arithmetic(ms):
    seconds, millis = divmod(ms, 1000)
    expected = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds)
    assert format_time_ms(ms) == expected.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def test_format_before_1970():
    assert format_time_ms(-1) == "1969-12-31T23:59:59.999Z"
    assert parse_time_ms("1969-12-31T23:59:59.999Z") == -1


def test_format_of_early_years_is_rfc3339():
    """Regression, once a bug: runtime/events/envelope.py format_time_ms: time.strftime('%Y') does not zero-pad years
    below 1000 on glibc, so an accepted time of 0001-01-01 (-62135596800000, inside
    MIN_TIME_MS) renders as '1-01-01T00:00:00.000Z', which is not RFC 3339 and which
    parse_time_ms itself refuses. Expected '0001-01-01T00:00:00.000Z'."""
    assert format_time_ms(-62_135_596_800_000) == "0001-01-01T00:00:00.000Z"


def test_cloudevent_rendering():
    event = expected_event(0)
    assert event.to_cloudevent() == {
        "specversion": "1.0",
        "id": "e0",
        "source": SOURCE,
        "type": "app.login",
        "time": "2023-11-14T22:13:20.000Z",
        "subject": "c0",
        "customer": "c0",
        "receivedat": "2023-11-14T22:29:59.000Z",
        "data": {"n": 0},
    }
    assert event.as_context() == {
        "id": "e0",
        "type": "app.login",
        "time": BASE_MS,
        "subject": "c0",
        "customer": "c0",
        "source": SOURCE,
        "data": {"n": 0},
    }


# -- decode_events (fast path) agrees with decode_body + validate_batch -----------------------

ITEM_VARIANTS: list[Any] = [
    {"time": "2024-01-01T00:00:00.5Z"},
    {"time": 1.5},
    {"time": "later"},
    {"time": None},
    {"time": True},
    {"data": None},
    {"data": []},
    {"source": SOURCE},
    {"source": "other"},
    {"source": 7},
    {"id": ""},
    {"id": "é" * 256},
    {"id": "é" * 257},
    {"id": 5},
    {"subject": None},
    {"type": "t" * 129},
    {"extra": {"nested": [1]}},
]


@st.composite
def items(draw) -> list[Any]:
    out: list[Any] = []
    for i in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["good", "variant", "missing", "scalar"]))
        if kind == "good":
            out.append(good(i))
        elif kind == "variant":
            out.append({**good(i), **draw(st.sampled_from(ITEM_VARIANTS))})
        elif kind == "missing":
            item = good(i)
            del item[draw(st.sampled_from(["id", "type", "time", "subject", "data"]))]
            out.append(item)
        else:
            out.append(draw(st.sampled_from([1, "e", None, [good(i)]])))
    return out


def outcome(decode, body: bytes, content_type: str) -> Batch | str:
    try:
        return decode(body, content_type)
    except EspError as exc:
        return exc.reason


@settings(max_examples=300, deadline=None)
@given(items(), st.sampled_from(["application/json", "application/cloudevents-batch+json", "application/x-ndjson"]))
def test_fast_path_agrees_with_item_by_item(batch_items, content_type):
    if content_type == "application/x-ndjson":
        body = "\n".join(json.dumps(item) for item in batch_items).encode()
    else:
        body = json.dumps(batch_items).encode()
    assert outcome(fast, body, content_type) == outcome(validate, body, content_type)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["{", "nope", '{"id": ', "1,2", "", "  ", "null"]), max_size=4), items())
def test_fast_path_agrees_on_ndjson_with_broken_lines(broken, batch_items):
    lines = [json.dumps(item) for item in batch_items] + broken
    body = "\n".join(sorted(lines, key=len)).encode()  # broken lines mixed in, deterministically
    assert outcome(fast, body, "application/x-ndjson") == outcome(validate, body, "application/x-ndjson")


def test_fast_path_rejects_an_ndjson_line_holding_two_objects():
    """Regression, once a bug: runtime/events/envelope.py decode_events: the NDJSON fast path joins the lines with ','
    inside '[...]', so a line '{...},{...}' (not valid JSON) decodes as two good events: 3
    events accepted for 2 lines, and later indices shift. decode_body + validate_batch
    reject that line as 'unparseable' (index 0) and accept line 1 (index 1)."""
    body = (json.dumps(good(1)) + "," + json.dumps(good(2)) + "\n" + json.dumps(good(3))).encode()
    batch = fast(body, "application/x-ndjson")
    assert [(r.index, r.reason) for r in batch.rejected] == [(0, "unparseable")]
    assert batch.events == [expected_event(3)]


def test_fast_path_refuses_comma_separated_objects_that_are_not_an_array():
    """Regression, once a bug: runtime/events/envelope.py decode_events: a JSON body '{...},{...}' (not valid JSON) is
    wrapped in '[...]' by the single-object shortcut and accepted as two events; decode_body
    raises UnparseableBody for it. Expected: UnparseableBody (reason 'unparseable_body')."""
    body = (json.dumps(good(1)) + "," + json.dumps(good(2))).encode()
    with pytest.raises(UnparseableBody):
        fast(body, "application/json")


def test_format_time_ms_agrees_with_datetime_across_second_boundaries():
    from datetime import UTC, datetime, timedelta

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for ms in [0, 1, 999, 1000, 1_758_464_000_180, 1_758_464_000_999, 1_758_464_001_000, -1, -1001]:
        expected = (epoch + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
        assert format_time_ms(ms) == expected == format_time_ms(ms)  # formatted, then from the kept second
