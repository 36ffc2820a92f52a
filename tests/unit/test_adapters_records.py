"""runtime.sources.records: bodies in a source's own format -> records.

Table-driven per format (input bytes -> expected fields or error reason, and raw bytes, all
written by hand), then properties: arbitrary bytes, text lines and JSON values never raise
and give one record per record of the body; the CSV fast path (text without quotes) reads
exactly what the csv module reads.
"""

from __future__ import annotations

import csv
import gc
import io
import json
from datetime import datetime
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.errors import UnparseableBody, UnsupportedContentType
from runtime.sources import Record, parse_records
from runtime.sources.models import Source
from runtime.sources.records import _csv_rows, gc_paused


def source(fmt: str = "json", **settings_: Any) -> Source:
    return Source.model_validate({"kind": "source", "name": "feed", "format": fmt, **settings_})


def shape(records: list[Record]) -> list[Any]:
    """Each record as its fields, or its error reason."""
    return [r.fields if r.error is None else r.error[0] for r in records]


# --- CSV ---------------------------------------------------------------------------------

CSV_CASES = [
    # (id, csv settings, body, expected fields / reasons, expected raw of each record)
    (
        "header",
        {},
        b"id,msisdn,dur\nc1,138,42\nc2,139,7\n",
        [{"id": "c1", "msisdn": "138", "dur": "42"}, {"id": "c2", "msisdn": "139", "dur": "7"}],
        [b"c1,138,42", b"c2,139,7"],
    ),
    (
        "no trailing newline, CRLF, BOM",
        {},
        b"\xef\xbb\xbfid,dur\r\nc1,42\r\nc2,7",
        [{"id": "c1", "dur": "42"}, {"id": "c2", "dur": "7"}],
        [b"c1,42", b"c2,7"],
    ),
    (
        "declared columns, no header",
        {"header": False, "columns": ["id", "dur"]},
        b"c1,42\nc2,7\n",
        [{"id": "c1", "dur": "42"}, {"id": "c2", "dur": "7"}],
        [b"c1,42", b"c2,7"],
    ),
    (
        "declared columns rename the header line",
        {"header": True, "columns": ["call", "seconds"]},
        b"CALL_ID,DURATION\nc1,42\n",
        [{"call": "c1", "seconds": "42"}],
        [b"c1,42"],
    ),
    (
        "quoted fields: delimiter, doubled quote, newline inside",
        {},
        b'id,note\nc1,"a,b"\nc2,"say ""hi"""\nc3,"two\nlines"\n',
        [{"id": "c1", "note": "a,b"}, {"id": "c2", "note": 'say "hi"'}, {"id": "c3", "note": "two\nlines"}],
        [b'c1,"a,b"', b'c2,"say ""hi"""', b'c3,"two\nlines"'],
    ),
    (
        "empty and blank lines are not records",
        {},
        b"\n\nid,dur\n\nc1,42\n   \n\r\nc2,7\n\n",
        [{"id": "c1", "dur": "42"}, {"id": "c2", "dur": "7"}],
        [b"c1,42", b"c2,7"],
    ),
    (
        "wrong column count is one unparseable record",
        {},
        b"id,dur\nc1,42\nc2\nc3,1,2\nc4,9\n",
        [{"id": "c1", "dur": "42"}, "wrong_column_count", "wrong_column_count", {"id": "c4", "dur": "9"}],
        [b"c1,42", b"c2", b"c3,1,2", b"c4,9"],
    ),
    (
        "semicolon delimiter, header names trimmed",
        {"delimiter": ";"},
        b" id ; dur \nc1;4,2\n",
        [{"id": "c1", "dur": "4,2"}],
        [b"c1;4,2"],
    ),
    (
        "empty values stay empty strings",
        {},
        b"id,dur,line\nc1,,\n",
        [{"id": "c1", "dur": "", "line": ""}],
        [b"c1,,"],
    ),
    ("header only", {}, b"id,dur\n", [], []),
    ("empty body", {}, b"", [], []),
    (
        "invalid UTF-8 costs only its line, raw bytes kept exactly",
        {},
        b"id,name\nc1,ok\nc2,caf\xe9\nc3,caf\xc3\xa9\n",
        [{"id": "c1", "name": "ok"}, "invalid_encoding", {"id": "c3", "name": "café"}],
        [b"c1,ok", b"c2,caf\xe9", "c3,café".encode()],
    ),
    (
        "a single column: blank lines are still skipped",
        {"header": False, "columns": ["msisdn"]},
        b"138\n\n 139 \n",
        [{"msisdn": "138"}, {"msisdn": " 139 "}],
        [b"138", b" 139 "],
    ),
]


@pytest.mark.parametrize(
    ("settings_", "body", "expected", "raws"), [c[1:] for c in CSV_CASES], ids=[c[0] for c in CSV_CASES]
)
def test_csv(settings_: dict[str, Any], body: bytes, expected: list[Any], raws: list[bytes]) -> None:
    records = parse_records(body, "csv", source("csv", csv=settings_))
    assert shape(records) == expected
    assert [r.raw for r in records] == raws


def test_csv_wrong_column_count_message_names_source_and_columns() -> None:
    (record,) = parse_records(b"id,dur\nc1\n", "csv", source("csv"))
    assert record.fields is None
    assert record.error == ("wrong_column_count", "source 'feed' record: expected 2 columns (id, dur), got 1")


def test_csv_field_over_the_csv_modules_limit_costs_only_its_record() -> None:
    huge = "x" * (csv.field_size_limit() + 10)
    body = f'id,note\nc1,"a"\nc2,"{huge}"\nc3,"b"\n'.encode()
    records = parse_records(body, "csv", source("csv"))
    assert shape(records)[0] == {"id": "c1", "note": "a"}
    assert records[1].error is not None and records[1].error[0] == "unparseable"
    assert shape(records)[-1] == {"id": "c3", "note": "b"}


# --- kv ----------------------------------------------------------------------------------

KV_CASES = [
    (
        "pipe and equals",
        {},
        b"msisdn=138|cell=46001A|ts=1700000000\nmsisdn=139|cell=46001B|ts=1700000001\n",
        [
            {"msisdn": "138", "cell": "46001A", "ts": "1700000000"},
            {"msisdn": "139", "cell": "46001B", "ts": "1700000001"},
        ],
        [b"msisdn=138|cell=46001A|ts=1700000000", b"msisdn=139|cell=46001B|ts=1700000001"],
    ),
    (
        "whitespace around keys, values and lines trimmed; CRLF",
        {},
        b"  msisdn = 138 |\tcell=46001A  \r\n",
        [{"msisdn": "138", "cell": "46001A"}],
        [b"  msisdn = 138 |\tcell=46001A  "],
    ),
    (
        "value keeps later separators; empty value kept",
        {},
        b"url=/a?x=1|note=\n",
        [{"url": "/a?x=1", "note": ""}],
        [b"url=/a?x=1|note="],
    ),
    ("duplicate keys: last wins", {}, b"a=1|a=2\n", [{"a": "2"}], [b"a=1|a=2"]),
    ("trailing delimiter is fine", {}, b"a=1|b=2|\n", [{"a": "1", "b": "2"}], [b"a=1|b=2|"]),
    (
        "a pair without the separator is malformed; blank lines skipped",
        {},
        b"a=1\n\n   \na=2|junk|c=3\na=4\n",
        [{"a": "1"}, "malformed_pair", {"a": "4"}],
        [b"a=1", b"a=2|junk|c=3", b"a=4"],
    ),
    ("an empty key is malformed", {}, b"=5|a=1\n", ["malformed_pair"], [b"=5|a=1"]),
    (
        "custom delimiters",
        {"pair_delimiter": ", ", "separator": ":"},
        b"msisdn: 138, cell: 46001A\n",
        [{"msisdn": "138", "cell": "46001A"}],
        [b"msisdn: 138, cell: 46001A"],
    ),
    ("space-separated pairs", {"pair_delimiter": " "}, b"a=1  b=2\n", [{"a": "1", "b": "2"}], [b"a=1  b=2"]),
    (
        "invalid UTF-8 costs only its line",
        {},
        b"a=1\na=\xff\xfe\na=3\n",
        [{"a": "1"}, "invalid_encoding", {"a": "3"}],
        [b"a=1", b"a=\xff\xfe", b"a=3"],
    ),
    ("empty body", {}, b"", [], []),
]


@pytest.mark.parametrize(
    ("settings_", "body", "expected", "raws"), [c[1:] for c in KV_CASES], ids=[c[0] for c in KV_CASES]
)
def test_kv(settings_: dict[str, Any], body: bytes, expected: list[Any], raws: list[bytes]) -> None:
    records = parse_records(body, "kv", source("kv", kv=settings_))
    assert shape(records) == expected
    assert [r.raw for r in records] == raws


def test_json_messages_name_the_source() -> None:
    bad_line, scalar = parse_records(b'{"id":\n5\n', "json", source())
    assert bad_line.error is not None and bad_line.error[1].startswith("source 'feed' record: line is not valid JSON")
    assert scalar.error == ("not_an_object", "source 'feed' record: expected a JSON object, got int 5")


def test_kv_malformed_message() -> None:
    (record,) = parse_records(b"a=1|junk\n", "kv", source("kv"))
    assert record.error == (
        "malformed_pair",
        "source 'feed' record: expected pairs separated by '|', each key=value, got 'junk'",
    )


# --- JSON --------------------------------------------------------------------------------

JSON_CASES = [
    ("one object", b'{"id": "e1", "n": 1}', [{"id": "e1", "n": 1}], [b'{"id":"e1","n":1}']),
    (
        "array",
        b'[{"id": "e1"}, {"id": "e2", "p": {"q": [1, 2]}}]',
        [{"id": "e1"}, {"id": "e2", "p": {"q": [1, 2]}}],
        [b'{"id":"e1"}', b'{"id":"e2","p":{"q":[1,2]}}'],
    ),
    (
        "NDJSON with blank lines and CRLF",
        b'{"id": "e1"}\r\n\n{"id": "e2"}\n',
        [{"id": "e1"}, {"id": "e2"}],
        [b'{"id":"e1"}', b'{"id":"e2"}'],
    ),
    (
        "NDJSON: a bad line costs only itself, raw is the line",
        b'{"id": "e1"}\n{"id": \n{"id": "e3"}\n',
        [{"id": "e1"}, "unparseable", {"id": "e3"}],
        [b'{"id":"e1"}', b'{"id":', b'{"id":"e3"}'],
    ),
    (
        "JSON text sequence (RS-prefixed records)",
        b'\x1e{"id": "e1"}\n\x1e{"id": "e2"}\n',
        [{"id": "e1"}, {"id": "e2"}],
        [b'{"id":"e1"}', b'{"id":"e2"}'],
    ),
    (
        "array items that are not objects",
        b'[{"id": "e1"}, 5, "x", null, [1]]',
        [{"id": "e1"}, "not_an_object", "not_an_object", "not_an_object", "not_an_object"],
        [b'{"id":"e1"}', b"5", b'"x"', b"null", b"[1]"],
    ),
    (
        "invalid UTF-8 inside a string costs only its line",
        b'{"id": "e1"}\n{"id": "\x80"}\n{"id": "e3"}\n',
        [{"id": "e1"}, "unparseable", {"id": "e3"}],
        [b'{"id":"e1"}', b'{"id": "\x80"}', b'{"id":"e3"}'],
    ),
    ("invalid UTF-8 in a one-value body", b'"\x80"', ["unparseable"], [b'"\x80"']),
    ("a scalar body", b"42", ["not_an_object"], [b"42"]),
    ("empty array", b"[]", [], []),
    ("empty body", b"", [], []),
    ("garbage", b"not json", ["unparseable"], [b"not json"]),
]


@pytest.mark.parametrize(("body", "expected", "raws"), [c[1:] for c in JSON_CASES], ids=[c[0] for c in JSON_CASES])
def test_json(body: bytes, expected: list[Any], raws: list[bytes]) -> None:
    records = parse_records(body, "json", source())
    assert shape(records) == expected
    assert [r.raw for r in records] == raws


# --- Arrow -------------------------------------------------------------------------------


def arrow_body(table: pa.Table, chunk: int | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=chunk)
    return sink.getvalue().to_pybytes()


def test_arrow_rows_in_order_across_batches() -> None:
    table = pa.table(
        {
            "id": ["e1", "e2", "e3"],
            "n": pa.array([1, None, 3], pa.int32()),
            "p": [{"q": "a"}, {"q": "b"}, {"q": None}],
        }
    )
    records = parse_records(arrow_body(table, chunk=2), "arrow", source("arrow"))
    assert shape(records) == [
        {"id": "e1", "n": 1, "p": {"q": "a"}},
        {"id": "e2", "n": None, "p": {"q": "b"}},
        {"id": "e3", "n": 3, "p": {"q": None}},
    ]
    assert records[1].raw == b'{"id":"e2","n":null,"p":{"q":"b"}}'


def test_arrow_zoned_timestamps_become_epoch_ms_naive_ones_stay_datetimes() -> None:
    table = pa.table(
        {
            "utc": pa.array([1_700_000_000_123_456], pa.timestamp("us", tz="UTC")),
            "shanghai": pa.array([1_700_000_000], pa.timestamp("s", tz="Asia/Shanghai")),
            "naive": pa.array([1_700_000_000_000], pa.timestamp("ms")),
        }
    )
    (record,) = parse_records(arrow_body(table), "arrow", source("arrow"))
    assert record.fields == {
        "utc": 1_700_000_000_123,
        "shanghai": 1_700_000_000_000,
        "naive": datetime(2023, 11, 14, 22, 13, 20),
    }


def test_arrow_not_a_stream_is_a_whole_body_error() -> None:
    with pytest.raises(UnparseableBody, match="not an Arrow IPC stream"):
        parse_records(b"id,dur\nc1,42\n", "arrow", source("arrow"))


def test_arrow_empty_table() -> None:
    table = pa.table({"id": pa.array([], pa.string())})
    assert parse_records(arrow_body(table), "arrow", source("arrow")) == []


# --- general -----------------------------------------------------------------------------


def test_unknown_format() -> None:
    with pytest.raises(UnsupportedContentType, match="'xml'"):
        parse_records(b"<a/>", "xml", source())


def test_gc_is_paused_during_a_batch_and_restored() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    parse_records(b'{"id": "e1"}', "json", source())
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off: left off
    finally:
        gc.enable()


def test_record_equality_and_repr() -> None:
    a = parse_records(b"a=1\n", "kv", source("kv"))
    b = parse_records(b"a=1\n", "kv", source("kv"))
    assert a == b
    assert "a" in repr(a[0])
    (bad,) = parse_records(b"junk\n", "kv", source("kv"))
    assert "malformed_pair" in repr(bad)


# --- properties --------------------------------------------------------------------------

text_lines = st.lists(st.text(max_size=30), max_size=12)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(body: bytes) -> None:
    for fmt, src in (("csv", source("csv")), ("kv", source("kv")), ("json", source()), ("arrow", source("arrow"))):
        try:
            records = parse_records(body, fmt, src)
        except UnparseableBody:
            assert fmt == "arrow"
            continue
        for record in records:
            assert (record.fields is None) == (record.error is not None)
            assert isinstance(record.raw, bytes)


@settings(max_examples=150, deadline=None)
@given(lines=text_lines, delimiter=st.sampled_from([",", ";", "|", "\t"]))
def test_quote_free_csv_fast_path_reads_what_the_csv_module_reads(lines: list[str], delimiter: str) -> None:
    text = "\n".join(line.replace('"', "") for line in lines)
    rows, raws = _csv_rows(text, delimiter)
    assert len(raws) == len(rows)
    expected = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    # the csv module yields no row for an empty line; the fast path an empty field
    assert [r for r in rows if r != [""]] == [r for r in expected if r]


@settings(max_examples=100, deadline=None)
@given(lines=text_lines)
def test_kv_lines_one_record_per_non_blank_line(lines: list[str]) -> None:
    clean = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    records = parse_records("\n".join(clean).encode(), "kv", source("kv"))
    assert len(records) == sum(1 for line in clean if line.strip())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(json_values, max_size=6))
def test_arbitrary_json_items_one_record_each(items: list[Any]) -> None:
    as_array = parse_records(json.dumps(items).encode(), "json", source())
    assert len(as_array) == len(items)
    for item, record in zip(items, as_array, strict=True):
        assert (record.fields is not None) == isinstance(item, dict)
        assert json.loads(record.raw) == item
    if len(items) != 1:  # one line is one JSON value: an array there is a batch, not a record
        ndjson = b"\n".join(json.dumps(item).encode() for item in items)
        assert shape(parse_records(ndjson, "json", source())) == shape(as_array)
