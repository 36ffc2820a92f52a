"""runtime.sources.mapping: records -> envelopes, per mapping feature.

Each table row is (mapping overrides, record fields, expected envelope changes or failure
reason), expected values written by hand (1_700_000_000_000 ms is 2023-11-14T22:13:20Z).
Then: failure messages, config errors, one bad record among 1,000 per format (parse + map +
envelope validation), and properties (arbitrary input never raises; every record ends as
exactly one envelope or one failure). The converters alone: test_adapters_coerce.py and
test_adapters_timeparse.py.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import ConfigError
from runtime.events.envelope import validate_batch
from runtime.sources import CompiledMapping, Failure, Record, compile_mapping, parse_records
from runtime.sources.bench import measure_formats
from runtime.sources.models import Mapping, Source

T = 1_700_000_000_000  # 2023-11-14T22:13:20Z
BASE_MAPPING: dict[str, Any] = {"type": "call.inbound", "id": "cid", "subject": "msisdn", "time": "ts"}
BASE_FIELDS: dict[str, Any] = {"cid": "c1", "msisdn": "138", "ts": T}
BASE_ENVELOPE: dict[str, Any] = {"id": "c1", "type": "call.inbound", "time": T, "subject": "138", "data": {}}
MISSING = object()  # in a fields override: remove the key


def compiled(overrides: dict[str, Any], name: str = "hotline") -> CompiledMapping:
    return compile_mapping(Mapping.model_validate({**BASE_MAPPING, **overrides}), source_name=name)


def map_one(overrides: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any] | Failure:
    record = {**BASE_FIELDS, **fields}
    record = {k: v for k, v in record.items() if v is not MISSING}
    good, bad = compiled(overrides).apply([Record(record, json.dumps(record, default=str).encode())])
    assert len(good) + len(bad) == 1
    return good[0][1] if good else bad[0]


def check(overrides: dict[str, Any], fields: dict[str, Any], expected: dict[str, Any] | str) -> None:
    result = map_one(overrides, fields)
    if isinstance(expected, str):
        assert isinstance(result, Failure), f"expected failure {expected}, got {result}"
        assert result.reason == expected, result.message
        assert "source 'hotline' field " in result.message
    else:
        assert not isinstance(result, Failure), result.message
        assert result == {**BASE_ENVELOPE, **expected}


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:24]


# --- envelope: type, id, subject --------------------------------------------------------

ENVELOPE_CASES = [
    ("type const", {}, {}, {}),
    (
        "type from + map",
        {"type": {"from": "res", "map": {"A": "call.answered"}}},
        {"res": "A"},
        {"type": "call.answered"},
    ),
    ("type unmapped code", {"type": {"from": "res", "map": {"A": "call.answered"}}}, {"res": "B"}, "unmapped_value"),
    (
        "type map by number",
        {"type": {"from": "res", "map": {"1": "call.answered"}}},
        {"res": 1},
        {"type": "call.answered"},
    ),
    ("type map by bool", {"type": {"from": "ok", "map": {"true": "call.ok"}}}, {"ok": True}, {"type": "call.ok"}),
    ("type from, no map", {"type": {"from": "kind"}}, {"kind": "call.other"}, {"type": "call.other"}),
    ("type from missing", {"type": {"from": "res", "map": {"A": "call.answered"}}}, {}, "missing_field"),
    ("id number", {}, {"cid": 42}, {"id": "42"}),
    ("id integral float", {}, {"cid": 42.0}, {"id": "42"}),
    ("id missing", {}, {"cid": MISSING}, "missing_field"),
    ("id null", {}, {"cid": None}, "missing_field"),
    ("id empty", {}, {"cid": ""}, "missing_field"),
    ("id object", {}, {"cid": {"a": 1}}, "invalid_value"),
    ("id digest", {"id": {"fields": ["msisdn", "ts"]}}, {}, {"id": sha('["138",1700000000000]')}),
    ("id digest, missing is null", {"id": {"fields": ["msisdn", "nope"]}}, {}, {"id": sha('["138",null]')}),
    ("subject nested path", {"subject": "user.id"}, {"user": {"id": "u1"}}, {"subject": "u1"}),
    (
        "subject: a whole key with a dot wins",
        {"subject": "user.id"},
        {"user.id": "flat", "user": {"id": "deep"}},
        {"subject": "flat"},
    ),
    ("subject path through a non-object", {"subject": "user.id"}, {"user": "u1"}, "missing_field"),
    ("subject number", {}, {"msisdn": 13800000001}, {"subject": "13800000001"}),
    ("subject list", {}, {"msisdn": ["138"]}, "invalid_value"),
    ("subject missing", {}, {"msisdn": MISSING}, "missing_field"),
]


@pytest.mark.parametrize(
    ("overrides", "fields", "expected"), [c[1:] for c in ENVELOPE_CASES], ids=[c[0] for c in ENVELOPE_CASES]
)
def test_envelope(overrides: dict[str, Any], fields: dict[str, Any], expected: Any) -> None:
    check(overrides, fields, expected)


def test_id_digest_dedupes_on_content() -> None:
    mapping = compiled({"id": {"fields": ["msisdn", "ts"]}})
    records = [Record({"msisdn": "138", "ts": T, "x": i}, b"") for i in range(3)] + [
        Record({"msisdn": "139", "ts": T}, b"")
    ]
    good, _ = mapping.apply(records)
    ids = [envelope["id"] for _, envelope in good]
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert len(ids[0]) == 24


# --- time --------------------------------------------------------------------------------


def time_spec(fmt: str, zone: str = "UTC", path: str = "ts") -> dict[str, Any]:
    return {"time": {"from": path, "format": fmt, "timezone": zone}}


TIME_CASES = [
    ("auto epoch ms", time_spec("auto"), T, T),
    ("auto numeric string", time_spec("auto"), "1700000000000", T),
    ("auto float ms", time_spec("auto"), 1700000000000.9, T),
    ("auto RFC 3339 Z", time_spec("auto"), "2023-11-14T22:13:20Z", T),
    ("auto RFC 3339 offset, ms", time_spec("auto"), "2023-11-15T06:13:20.250+08:00", T + 250),
    ("auto naive in zone", time_spec("auto", "Asia/Shanghai"), "2023-11-15 06:13:20", T),
    ("auto garbage", time_spec("auto"), "yesterday", "invalid_time"),
    ("auto bool", time_spec("auto"), True, "invalid_time"),
    ("auto beyond year 9999", time_spec("auto"), 10**16, "invalid_time"),
    ("auto object", time_spec("auto"), {"t": 1}, "invalid_time"),
    ("epoch_s int", time_spec("epoch_s"), 1700000000, T),
    ("epoch_s string with fraction", time_spec("epoch_s"), "1700000000.25", T + 250),
    ("epoch_s float keeps ms", time_spec("epoch_s"), 1700000000.001, T + 1),
    ("epoch_s garbage", time_spec("epoch_s"), "abc", "invalid_time"),
    ("epoch_s nan", time_spec("epoch_s"), float("nan"), "invalid_time"),
    ("epoch_ms string", time_spec("epoch_ms"), "1700000000000", T),
    ("epoch_ms negative", time_spec("epoch_ms"), -1000, -1000),
    ("iso naive in zone", time_spec("iso", "America/New_York"), "2023-11-14T17:13:20", T),
    ("iso aware ignores zone", time_spec("iso", "Asia/Shanghai"), "2023-11-14T22:13:20+00:00", T),
    ("iso date only", time_spec("iso"), "2023-11-14", T - (22 * 3600 + 13 * 60 + 20) * 1000),
    ("iso number", time_spec("iso"), T, "invalid_time"),
    ("pattern, zone", time_spec("%Y%m%d%H%M%S", "Asia/Shanghai"), "20231115061320", T),
    ("pattern, number", time_spec("%Y%m%d%H%M%S", "Asia/Shanghai"), 20231115061320, T),
    ("pattern, summer time", time_spec("%Y%m%d%H%M%S", "America/New_York"), "20230701120000", 1_688_227_200_000),
    ("pattern with literals", time_spec("%d/%m/%Y %H:%M"), "14/11/2023 22:13", T - 20_000),
    ("pattern, one-digit hour (strptime)", time_spec("%Y-%m-%d %H:%M:%S", "Asia/Shanghai"), "2023-11-15 6:13:20", T),
    ("pattern, month 13", time_spec("%Y%m%d%H%M%S"), "20231315061320", "invalid_time"),
    ("pattern, second 60", time_spec("%Y%m%d%H%M%S"), "20231114221360", "invalid_time"),
    ("pattern, garbage", time_spec("%Y%m%d%H%M%S"), "2023111422136x", "invalid_time"),
    ("pattern, datetime value", time_spec("%Y%m%d"), datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc), T),
    ("missing", time_spec("auto"), MISSING, "missing_field"),
    ("empty", time_spec("epoch_s"), "", "missing_field"),
]


@pytest.mark.parametrize(
    ("overrides", "value", "expected"), [c[1:] for c in TIME_CASES], ids=[c[0] for c in TIME_CASES]
)
def test_time(overrides: dict[str, Any], value: Any, expected: int | str) -> None:
    check(overrides, {"ts": value}, expected if isinstance(expected, str) else {"time": expected})


def test_time_nested_path() -> None:
    check({"time": {"from": "meta.at", "format": "epoch_s"}}, {"meta": {"at": 1700000000}}, {"time": T})


# --- data --------------------------------------------------------------------------------

DATA_CASES = [
    ("from", {"dur": "dur"}, {"dur": "42"}, {"dur": "42"}),
    ("from missing: left out", {"dur": "dur"}, {}, {}),
    ("from empty string: left out", {"dur": "dur"}, {"dur": ""}, {}),
    ("from null: left out", {"dur": "dur"}, {"dur": None}, {}),
    ("from nested path", {"site": "page.site"}, {"page": {"site": "official"}}, {"site": "official"}),
    ("default (coerced once)", {"dur": {"from": "dur", "default": "0", "type": "int"}}, {}, {"dur": 0}),
    ("default for empty", {"line": {"from": "line", "default": "unknown"}}, {"line": ""}, {"line": "unknown"}),
    (
        "default is not mapped",
        {"line": {"from": "line", "map": {"1": "billing"}, "default": "unknown"}},
        {},
        {"line": "unknown"},
    ),
    ("required missing", {"dur": {"from": "dur", "required": True}}, {}, "missing_field"),
    ("required present", {"dur": {"from": "dur", "required": True}}, {"dur": "1"}, {"dur": "1"}),
    ("const", {"channel": {"const": "hotline"}}, {}, {"channel": "hotline"}),
    ("const coerced", {"n": {"const": "5", "type": "int"}}, {}, {"n": 5}),
    ("const object", {"tags": {"const": ["a", "b"]}}, {}, {"tags": ["a", "b"]}),
    (
        "expr over earlier fields",
        {"dur": {"from": "dur", "type": "int"}, "ms": {"expr": "data.dur * 1000"}},
        {"dur": "42"},
        {"dur": 42, "ms": 42000},
    ),
    ("expr over the envelope", {"who": {"expr": "subject + '-' + type"}}, {}, {"who": "138-call.inbound"}),
    ("expr error", {"x": {"expr": "data.nope * 2"}}, {}, "mapping_error"),
    (
        "expr sees only earlier fields",
        {"ms": {"expr": "data.dur * 1000"}, "dur": {"from": "dur", "type": "int"}},
        {"dur": "42"},
        "mapping_error",
    ),
    ("expr then type", {"big": {"expr": "data.d > 10", "type": "string"}, "d": "d"}, {"d": 1}, "mapping_error"),
    ("map", {"line": {"from": "line", "map": {"1": "billing", "2": "roaming"}}}, {"line": "2"}, {"line": "roaming"}),
    ("map by number", {"line": {"from": "line", "map": {"1": "billing"}}}, {"line": 1}, {"line": "billing"}),
    ("unmapped", {"line": {"from": "line", "map": {"1": "billing"}}}, {"line": "9"}, "unmapped_value"),
    (
        "map then type",
        {"lvl": {"from": "lvl", "map": {"low": "1", "high": "9"}, "type": "int"}},
        {"lvl": "high"},
        {"lvl": 9},
    ),
    ("int from string", {"n": {"from": "n", "type": "int"}}, {"n": "42"}, {"n": 42}),
    ("int from padded string", {"n": {"from": "n", "type": "int"}}, {"n": " -42 "}, {"n": -42}),
    ("int from integral string", {"n": {"from": "n", "type": "int"}}, {"n": "42.0"}, {"n": 42}),
    ("int from integral float", {"n": {"from": "n", "type": "int"}}, {"n": 42.0}, {"n": 42}),
    ("int from fraction", {"n": {"from": "n", "type": "int"}}, {"n": "4.5"}, "invalid_value"),
    ("int from word", {"n": {"from": "n", "type": "int"}}, {"n": "abc"}, "invalid_value"),
    ("int with underscores", {"n": {"from": "n", "type": "int"}}, {"n": "1_000"}, "invalid_value"),
    ("int from bool", {"n": {"from": "n", "type": "int"}}, {"n": True}, "invalid_value"),
    ("int beyond 64 bits", {"n": {"from": "n", "type": "int"}}, {"n": "99999999999999999999"}, "invalid_value"),
    ("float from string", {"x": {"from": "x", "type": "float"}}, {"x": "1.5"}, {"x": 1.5}),
    ("float from exponent", {"x": {"from": "x", "type": "float"}}, {"x": "1e3"}, {"x": 1000.0}),
    ("float from int", {"x": {"from": "x", "type": "float"}}, {"x": 2}, {"x": 2.0}),
    ("float from nan", {"x": {"from": "x", "type": "float"}}, {"x": "nan"}, "invalid_value"),
    ("bool yes", {"b": {"from": "b", "type": "bool"}}, {"b": "Yes"}, {"b": True}),
    ("bool 0", {"b": {"from": "b", "type": "bool"}}, {"b": "0"}, {"b": False}),
    ("bool TRUE", {"b": {"from": "b", "type": "bool"}}, {"b": "TRUE"}, {"b": True}),
    ("bool from 1", {"b": {"from": "b", "type": "bool"}}, {"b": 1}, {"b": True}),
    ("bool from no", {"b": {"from": "b", "type": "bool"}}, {"b": "no"}, {"b": False}),
    ("bool from maybe", {"b": {"from": "b", "type": "bool"}}, {"b": "maybe"}, "invalid_value"),
    ("bool from 2", {"b": {"from": "b", "type": "bool"}}, {"b": 2}, "invalid_value"),
    ("string from int", {"s": {"from": "s", "type": "string"}}, {"s": 42}, {"s": "42"}),
    ("string from float", {"s": {"from": "s", "type": "string"}}, {"s": 1.5}, {"s": "1.5"}),
    ("string from bool", {"s": {"from": "s", "type": "string"}}, {"s": False}, {"s": "false"}),
    ("string from object", {"s": {"from": "s", "type": "string"}}, {"s": {"a": 1}}, "invalid_value"),
]


@pytest.mark.parametrize(("data", "fields", "expected"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_data(data: dict[str, Any], fields: dict[str, Any], expected: dict[str, Any] | str) -> None:
    check({"data": data}, fields, expected if isinstance(expected, str) else {"data": expected})


def test_data_fields_in_declaration_order() -> None:
    result = map_one({"data": {"b": {"const": 1}, "a": "x", "c": {"const": 3}}}, {"x": "2"})
    assert isinstance(result, dict)
    assert list(result["data"]) == ["b", "a", "c"]


def test_const_objects_are_not_shared_between_events() -> None:
    good, _ = compiled({"data": {"tags": {"const": ["a"]}}}).apply([Record(dict(BASE_FIELDS), b"")] * 2)
    good[0][1]["data"]["tags"].append("mutated")
    assert good[1][1]["data"]["tags"] == ["a"]


KEEP_CASES = [
    (
        "copies what no path names",
        {"line": {"from": "line", "map": {"1": "billing"}}},
        {"line": "1", "dur": "42", "extra": "x"},
        {"line": "billing", "dur": "42", "extra": "x"},
    ),
    ("mapped fields win", {"extra": {"const": "mine"}}, {"extra": "theirs"}, {"extra": "mine"}),
    ("nothing else", {}, {}, {}),
]


@pytest.mark.parametrize(("data", "fields", "expected"), [c[1:] for c in KEEP_CASES], ids=[c[0] for c in KEEP_CASES])
def test_keep_unmapped(data: dict[str, Any], fields: dict[str, Any], expected: dict[str, Any]) -> None:
    check({"data": data, "keep_unmapped": True}, fields, {"data": expected})


# --- messages, pass-through, parse failures -------------------------------------------------

MESSAGE_CASES = [
    (
        {"data": {"duration_s": {"from": "dur", "type": "int"}}},
        {"dur": "abc"},
        "source 'hotline' field data.duration_s: expected int, got 'abc'",
    ),
    ({}, {"msisdn": MISSING}, "source 'hotline' field subject: expected a value at 'msisdn', got nothing"),
    (
        {"type": {"from": "res", "map": {"A": "call.answered", "B": "call.busy"}}},
        {"res": "Z"},
        "source 'hotline' field type: expected one of ['A', 'B'] at 'res', got 'Z'",
    ),
    (
        time_spec("epoch_s"),
        {"ts": "soon"},
        "source 'hotline' field time: expected epoch seconds (years 1-9999) at 'ts', got 'soon'",
    ),
    (
        {"data": {"line": {"from": "line", "map": {"1": "billing"}}}},
        {"line": "7"},
        "source 'hotline' field data.line: expected one of ['1'], got '7'",
    ),
    (
        {"data": {"n": {"from": "n", "required": True}}},
        {},
        "source 'hotline' field data.n: expected a value at 'n', got nothing",
    ),
]


@pytest.mark.parametrize(("overrides", "fields", "message"), MESSAGE_CASES)
def test_failure_messages(overrides: dict[str, Any], fields: dict[str, Any], message: str) -> None:
    result = map_one(overrides, fields)
    assert isinstance(result, Failure)
    assert result.message == message


def test_expression_failure_message_names_the_expression() -> None:
    result = map_one({"data": {"x": {"expr": "data.nope * 2"}}}, {})
    assert isinstance(result, Failure)
    assert result.message.startswith("source 'hotline' field data.x: expected a value of expression 'data.nope * 2'")


def test_failure_keeps_raw_and_the_id_when_known() -> None:
    records = [Record({"cid": "c9", "msisdn": "138", "ts": "bad"}, b"raw-line")]
    _, (failure,) = compiled({}).apply(records)
    assert (failure.index, failure.reason, failure.raw, failure.id) == (0, "invalid_time", b"raw-line", "c9")
    assert failure.to_dict() == {"index": 0, "id": "c9", "reason": "invalid_time", "message": failure.message}


def test_unparseable_records_fail_unchanged() -> None:
    records = [Record(None, b"c3,1", ("wrong_column_count", "msg")), Record(dict(BASE_FIELDS), b"ok")]
    for mapping in (compiled({}), compile_mapping(None, source_name="hotline")):
        good, bad = mapping.apply(records)
        assert [i for i, _ in good] == [1]
        assert bad == [Failure(0, "wrong_column_count", "msg", b"c3,1")]


def test_no_mapping_passes_records_through() -> None:
    event = {"id": "e1", "type": "a.b", "time": T, "subject": "s", "data": {"k": 1}}
    good, bad = compile_mapping(None, source_name="crm").apply([Record(event, b"")])
    assert good == [(0, event)] and bad == []


def test_a_mapping_given_as_a_plain_dict() -> None:
    mapping = compile_mapping({**BASE_MAPPING}, source_name="hotline")  # type: ignore[arg-type]
    good, _ = mapping.apply([Record(dict(BASE_FIELDS), b"")])
    assert good == [(0, BASE_ENVELOPE)]


# --- config errors -----------------------------------------------------------------------

CONFIG_ERRORS = [
    ({"data": {"ms": {"expr": "data.dur *"}}}, "mapping.data.ms.expr"),
    ({"data": {"ms": {"expr": "nosuchfn(data.dur)"}}}, "mapping.data.ms.expr"),
    (time_spec("yyyymmdd"), "mapping.time.format"),
    (time_spec("%Y%m%d%Q"), "mapping.time.format"),
    ({"data": {"n": {"const": "abc", "type": "int"}}}, "mapping.data.n.const"),
    ({"data": {"n": {"from": "n", "default": "x", "type": "int"}}}, "mapping.data.n.default"),
    ({"data": {"n": {"const": "9", "map": {"1": "a"}}}}, "mapping.data.n.const"),
    ({"type": {"from": "res", "map": {"A": ""}}}, "mapping.type.map.A"),
]


@pytest.mark.parametrize(("overrides", "path"), CONFIG_ERRORS)
def test_config_errors_name_source_and_field(overrides: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compiled(overrides)
    assert f"source 'hotline' field '{path}': " in caught.value.message
    assert caught.value.errors[0]["path"] == path


def test_expression_config_error_has_position() -> None:
    with pytest.raises(ConfigError) as caught:
        compiled({"data": {"ms": {"expr": "data.dur *"}}})
    assert caught.value.errors[0]["position"] is not None


# --- one bad record among 1,000, per format -----------------------------------------------

N = 1_000
BAD = 537


def _source(fmt: str, mapping: dict[str, Any]) -> Source:
    return Source.model_validate({"kind": "source", "name": "hotline", "format": fmt, "mapping": mapping})


def _csv_case() -> tuple[Source, bytes, str]:
    lines = ["call_id,msisdn,started,dur,line,result"]
    for i in range(N):
        dur = "abc" if i == BAD else str(i)
        lines.append(f"c{i},138{i:05d},2026-09-21 08:00:{i % 60:02d},{dur},{1 + i % 2},{'ANS' if i % 3 else 'ABN'}")
    mapping = {
        "id": "call_id",
        "subject": "msisdn",
        "time": {"from": "started", "format": "iso", "timezone": "Asia/Shanghai"},
        "type": {"from": "result", "map": {"ANS": "call.answered", "ABN": "call.abandoned"}},
        "data": {"duration_s": {"from": "dur", "type": "int"}, "line": {"from": "line", "map": {"1": "a", "2": "b"}}},
    }
    return _source("csv", mapping), "\n".join(lines).encode(), "invalid_value"


def _kv_case() -> tuple[Source, bytes, str]:
    lines = [
        "garbage without pairs" if i == BAD else f"msisdn=139{i:05d}|ts=20260921{i % 24:02d}0000|cell=C{i}|lac={i}"
        for i in range(N)
    ]
    mapping = {
        "id": {"fields": ["msisdn", "ts", "cell"]},
        "subject": "msisdn",
        "time": {"from": "ts", "format": "%Y%m%d%H%M%S", "timezone": "Asia/Shanghai"},
        "type": "network.attach",
        "data": {"cell": "cell", "lac": {"from": "lac", "type": "int"}},
    }
    return _source("kv", mapping), "\n".join(lines).encode(), "malformed_pair"


def _json_case() -> tuple[Source, bytes, str]:
    lines = [
        b'{"event_id": "w537", "user": {"id":'
        if i == BAD
        else json.dumps(
            {"event_id": f"w{i}", "user": {"id": f"u{i}"}, "ts": T + i, "page": {"site": "official"}}
        ).encode()
        for i in range(N)
    ]
    mapping = {
        "id": "event_id",
        "subject": "user.id",
        "time": "ts",
        "type": "web.page_view",
        "data": {"site": "page.site"},
    }
    return _source("json", mapping), b"\n".join(lines), "unparseable"


def _arrow_case() -> tuple[Source, bytes, str]:
    table = pa.table(
        {
            "sample_id": [f"s{i}" for i in range(N)],
            "imei": [f"35300{i:05d}" for i in range(N)],
            "at": ["yesterday" if i == BAD else f"2026-09-21T08:00:00.{i:03d}Z" for i in range(N)],
            "rsrp": pa.array([-70 - i % 50 for i in range(N)], pa.int16()),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=300)
    mapping = {
        "id": "sample_id",
        "subject": "imei",
        "time": "at",
        "type": "device.sample",
        "data": {"rsrp_dbm": {"from": "rsrp", "type": "float"}},
    }
    return _source("arrow", mapping), sink.getvalue().to_pybytes(), "invalid_time"


@pytest.mark.parametrize("case", [_csv_case, _kv_case, _json_case, _arrow_case], ids=["csv", "kv", "json", "arrow"])
def test_one_bad_record_among_1000_costs_only_itself(case: Any) -> None:
    source, body, reason = case()
    records = parse_records(body, source.format, source)
    assert len(records) == N
    good, bad = compile_mapping(source.mapping, source_name=source.name).apply(records)
    assert [(f.index, f.reason) for f in bad] == [(BAD, reason)]
    assert bad[0].raw  # the original record is kept for the quarantine
    assert [i for i, _ in good] == [i for i in range(N) if i != BAD]
    batch = validate_batch([envelope for _, envelope in good], source=source.name, received_at=T)
    assert batch.rejected == [] and len(batch.events) == N - 1


# --- properties --------------------------------------------------------------------------

ROBUST_MAPPING = {
    "id": {"fields": ["a", "b.c"]},
    "subject": "a",
    "time": {"from": "t", "format": "auto"},
    "type": {"from": "k", "map": {"1": "x.one", "2": "x.two"}},
    "data": {
        "n": {"from": "n", "type": "int", "default": "0"},
        "f": {"from": "b.c", "type": "float"},
        "flag": {"from": "flag", "type": "bool"},
        "s": {"from": "s", "type": "string", "map": {"x": "ex", "1": 1}},
        "e": {"expr": "data.n + 1"},
    },
    "keep_unmapped": True,
}
MAPPINGS = [
    compile_mapping(Mapping.model_validate(ROBUST_MAPPING), source_name="p"),
    compile_mapping(None, source_name="p"),
]


def assert_partition(records: list[Record]) -> None:
    for mapping in MAPPINGS:
        good, bad = mapping.apply(records)
        indices = sorted([i for i, _ in good] + [f.index for f in bad])
        assert indices == list(range(len(records)))
        for failure in bad:
            assert isinstance(failure.raw, bytes) and failure.reason and failure.message


@settings(max_examples=120, deadline=None)
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_map_or_fail_one_by_one(body: bytes) -> None:
    for fmt in ("csv", "kv", "json"):
        assert_partition(parse_records(body, fmt, _source(fmt, ROBUST_MAPPING)))


field_text = st.sampled_from(["", "1", "2", "x", "yes", "1.5", "2023-11-14T22:13:20Z", "1700000000000", "é", '"'])


@settings(max_examples=120, deadline=None)
@given(
    lines=st.lists(
        st.lists(st.tuples(st.sampled_from(["a", "b.c", "t", "k", "n", "flag", "s", "zz"]), field_text), max_size=8),
        max_size=10,
    ),
    noise=st.lists(st.text(max_size=20), max_size=3),
)
def test_arbitrary_text_lines_map_or_fail_one_by_one(lines: list[list[tuple[str, str]]], noise: list[str]) -> None:
    kv = "\n".join(["|".join(f"{k}={v}" for k, v in line) for line in lines] + noise)
    assert_partition(parse_records(kv.encode("utf-8", "surrogatepass"), "kv", _source("kv", ROBUST_MAPPING)))
    header = "a,b.c,t,k,n,flag,s"
    rows = [",".join(v for _, v in line) for line in lines]
    body = "\n".join([header, *rows, *noise]).encode("utf-8", "surrogatepass")
    assert_partition(parse_records(body, "csv", _source("csv", ROBUST_MAPPING)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "t", "k"]), children, max_size=4)
    ),
    max_leaves=12,
)
json_records = st.fixed_dictionaries(
    {},
    optional={key: json_values for key in ("a", "b", "t", "k", "n", "flag", "s", "zz")},
)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(json_records | json_values, max_size=8))
def test_arbitrary_json_values_map_or_fail_one_by_one(items: list[Any]) -> None:
    records = parse_records(json.dumps(items).encode(), "json", _source("json", ROBUST_MAPPING))
    assert len(records) == len(items)
    assert_partition(records)


def test_bench_runs_every_format() -> None:
    """The figures agree with each other: the parts add up to the total (to the rounding) and
    the rate is the records over the total."""
    result = measure_formats(n=2000, repeat=1)
    assert set(result) == {"csv", "kv", "json", "arrow"}
    for fmt, r in result.items():
        assert r["records"] == 2000 and r["body_bytes"] > 2000 * 10, fmt
        assert abs(r["seconds"] - r["parse_s"] - r["map_s"]) <= 0.0002, (fmt, r)
        assert r["records_per_s"] == pytest.approx(2000 / r["seconds"], rel=0.05), (fmt, r)
