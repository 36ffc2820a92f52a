"""Events as columns (runtime.events.columns): a log entry's form. Whatever the events, the
columns decode to the very events that went in, in order, and every operation the partition
runner and the rules use (slices, selection, time order, concatenation) gives what the same
operation on a list of events gives. Entries written as rows, before columns, still decode."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.events.columns import COLUMNS_FROM, EventColumns, _Later, encode_rows
from runtime.events.envelope import Event, event_time
from runtime.log.partition_log import decode_entry

text = st.text(max_size=6)
values = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), text)


@st.composite
def events(draw, max_size: int = 40) -> list[Event]:
    """Few types, sources and customers (repeats are what the columns' dictionaries are for),
    subjects sometimes their customer and sometimes not, arbitrary ``data``."""
    size = draw(st.integers(0, max_size))
    result = []
    for n in range(size):
        customer = draw(st.sampled_from(["c0", "c1", "ç2"]))
        result.append(
            Event(
                draw(st.text(min_size=1, max_size=8)) + str(n),
                draw(st.sampled_from(["a", "b.c", "d"])),
                draw(st.integers(0, 50)),
                draw(st.one_of(st.just(customer), text)),
                customer,
                draw(st.sampled_from(["s", "t"])),
                draw(st.dictionaries(text, st.one_of(values, st.lists(values, max_size=3)), max_size=3)),
                draw(st.integers(0, 2**40)),
            )
        )
    return result


def entry(rows: list[Event]) -> EventColumns:
    """``rows`` appended as a log entry's columns (however few), then read."""
    return EventColumns.decode(encode_rows(rows, columns_from=0))


@settings(max_examples=200, deadline=None)
@given(events())
def test_an_entry_decodes_to_the_events_that_went_in(rows):
    decoded = entry(rows)
    assert len(decoded) == len(rows)
    assert list(decoded) == rows
    assert [decoded.event(i) for i in range(len(rows))] == rows  # one at a time, nothing else built
    assert decoded.types == [e.type for e in rows] and decoded.times == [e.time for e in rows]
    assert decoded.data == [e.data for e in rows] and decoded.subjects == [e.subject for e in rows]


@settings(max_examples=200, deadline=None)
@given(events(), st.data())
def test_columns_slice_select_order_and_join_as_lists_of_events_do(rows, data):
    decoded = entry(rows)
    a, b = sorted(data.draw(st.lists(st.integers(0, len(rows)), min_size=2, max_size=2)))
    assert list(decoded[a:b]) == rows[a:b]
    keep = data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    assert list(decoded.select(keep)) == [e for e, k in zip(rows, keep, strict=True) if k]
    assert list(decoded.ordered()) == sorted(rows, key=event_time)  # stable: arrival order among equal times
    runs = [decoded[:a].ordered(), entry(rows[a:b]).ordered(), EventColumns.of(rows[b:]).ordered()]
    runs = [r for r in runs if len(r)]
    arrived = [e for run in runs for e in run]
    merged = EventColumns.merge(runs) if runs else EventColumns.of([])
    assert list(merged) == sorted(arrived, key=event_time)  # stable: arrival order among equal times
    assert merged.data == [e.data for e in merged] and merged.subjects == [e.subject for e in merged]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 4)), min_size=1, max_size=5), st.data())
def test_runs_that_follow_one_another_in_time_are_joined_in_time_order(spans, data):
    """Runs as concurrent senders of ordered streams give them: each a span of time, arriving
    in any order, touching at their ends or overlapping."""
    runs, n = [], 0
    for start, size in spans:
        times = sorted(data.draw(st.lists(st.integers(start, start + 3), min_size=size, max_size=size)))
        rows = [Event(f"e{n + i}", "a", t, "c", "c", "s", {"i": n + i}, 0) for i, t in enumerate(times)]
        runs.append(entry(rows))
        n += size
    merged = EventColumns.merge(runs)
    assert list(merged) == sorted([e for run in runs for e in run], key=event_time)


@settings(max_examples=100, deadline=None)
@given(events(max_size=20), st.integers(0, 800))
def test_an_entry_written_as_rows_still_decodes(rows, repeat):
    """Entries appended before columns (a msgpack array of events) hold any number of events,
    up to thousands: the array's header never passes for the columns' own."""
    rows = (rows * (repeat // max(len(rows), 1) + 1))[:repeat] if rows else rows
    assert list(EventColumns.decode(msgspec.msgpack.encode(rows))) == rows


ABSENT = object()


def fields_of(columns: EventColumns, names: list[str]) -> list[list[object]]:
    return [columns.field(name, ABSENT) for name in names]


@settings(max_examples=200, deadline=None)
@given(events(), st.data())
def test_a_field_of_data_reads_as_from_the_events_however_the_columns_were_made(rows, data):
    """``field`` decodes one field of ``data`` alone while ``data`` is encoded (sliced, selected,
    reordered, joined or not), and reads the dicts once they are decoded or the events came
    as rows: the values are those of the events' own ``data``, ``ABSENT`` where it has none."""
    names = data.draw(st.lists(st.one_of(text, st.sampled_from(["", "a-b", "f"])), min_size=1, max_size=4))
    decoded = entry(rows)
    a, b = sorted(data.draw(st.lists(st.integers(0, len(rows)), min_size=2, max_size=2)))
    keep = data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    runs = [entry(rows[:a]).ordered(), entry(rows[a:b])[1:], EventColumns.of(rows[b:])]
    for columns in (
        decoded,
        entry(rows)[a:b],
        entry(rows).select(keep),
        entry(rows).ordered(),
        EventColumns.merge([r for r in runs if len(r)] or [EventColumns.of([])]),
        EventColumns.of(rows),
    ):
        expected = [[e.data.get(name, ABSENT) for e in columns] for name in names]
        assert fields_of(columns, names) == expected
        assert fields_of(columns, names) == expected  # read again: the same lists


def test_an_entry_with_subjects_of_their_own_joins_a_small_entry_still_held_as_rows():
    """A large entry whose subjects are not its customers (a phone number linked to a customer),
    then a small one (rows): the join reads the small one's subjects from its rows."""
    rows = [Event(f"e{n}", "a", n, "+8613800000000" if n < 2 else "c", "c", "s", {}, 0) for n in range(3)]
    merged = EventColumns.merge([entry(rows[:2]), EventColumns.decode(encode_rows(rows[2:]))])
    assert list(merged) == rows and merged.subjects == [e.subject for e in rows]


def test_a_field_is_decoded_alone_until_several_are_read_then_the_dicts_once():
    rows = [Event(f"e{n}", "a", n, "c", "c", "s", {"v": n, "w": -n, "x": str(n)}, 7) for n in range(20)]
    decoded = entry(rows)
    assert decoded.field("v", ABSENT) == list(range(20)) and isinstance(decoded._data, msgspec.Raw)
    assert decoded.field("nope", ABSENT) == [ABSENT] * 20 and isinstance(decoded._data, msgspec.Raw)
    assert decoded.field("x", ABSENT) == [str(n) for n in range(20)] and type(decoded._data) is list


def test_what_no_rule_reads_stays_encoded_until_read():
    rows = [Event(f"e{n}", "a", n, f"x{n}", "c", "s", {"v": n}, 7) for n in range(3)]
    decoded = entry(rows)
    assert decoded.times == [0, 1, 2] and decoded._rows is None
    assert all(isinstance(c, msgspec.Raw) for c in (decoded._data, decoded._subjects, decoded._received))
    assert decoded.data == [{"v": 0}, {"v": 1}, {"v": 2}] and isinstance(decoded._subjects, msgspec.Raw)
    assert decoded.event(1) == rows[1] and decoded._rows is None
    later = EventColumns.merge([decoded[2:], entry(rows)[:2]]).ordered()  # sliced, joined, reordered
    assert isinstance(later._received, _Later) and later.times == [0, 1, 2]
    assert later.subjects == ["x0", "x1", "x2"] and later.received == [7, 7, 7] and later._rows is None


def test_events_of_one_type_share_one_string_and_subjects_equal_to_customers_are_not_stored():
    rows = [Event(f"e{n}", "a.b", n, "c", "c", "s", {}, 0) for n in range(3)]
    decoded = entry(rows)
    assert decoded.types[0] is decoded.types[2]
    assert decoded._subjects is None and decoded.subjects == ["c", "c", "c"]
    assert len(encode_rows(rows, columns_from=0)) < len(msgspec.msgpack.encode(rows))


def test_a_log_entry_of_either_form_reads_without_its_duplicates():
    rows = [Event(f"e{n}", "a", n, "c", "c", "s", {"v": n}, 7) for n in range(4)]
    for body in (msgspec.msgpack.encode(rows), encode_rows(rows, columns_from=0)):
        entry_ = decode_entry(5, "9-0", {b"b": body, b"d": b"1,3", b"v": b"4"})
        assert list(entry_.events) == [rows[0], rows[2]] and entry_.config_version == 4
        assert entry_.events.payload is None  # no longer all of the entry's events


def test_entries_with_more_types_than_a_byte_counts_and_runs_of_other_types_join():
    many = [Event(f"m{n}", f"t{n}", n, "c", "c", f"s{n % 3}", {}, 0) for n in range(300)]
    few = [Event(f"f{n}", "t7" if n % 2 else "u", 300 + n, "c", "c", "s9", {}, 0) for n in range(5)]
    decoded = entry(many)
    assert isinstance(decoded.coded_types.codes, list) and list(decoded) == many
    merged = EventColumns.merge([decoded, entry(few)])
    assert list(merged) == many + few and list(merged.positions({"t7": True})) == [7, 301, 303]
    assert list(entry(few).positions({"u": True, "t7": False})) == [0, 2, 4]


def test_small_entries_are_written_as_rows_and_stay_rows_until_a_column_is_read():
    rows = [Event(f"e{n}", "a", n, "c", "c", "s", {}, 0) for n in range(COLUMNS_FROM)]
    assert encode_rows(rows[:-1]) == msgspec.msgpack.encode(rows[:-1])  # as entries were before columns
    small = EventColumns.decode(encode_rows(rows[:-1]))
    joined = EventColumns.merge([small, EventColumns.decode(encode_rows(rows[-1:]))])
    assert joined._rows is not None and joined._times is None and list(joined) == rows
    assert list(joined.positions({"a": True})) == list(range(COLUMNS_FROM))
    assert EventColumns.decode(encode_rows(rows)).payload is not None  # as columns


@st.composite
def composed(draw, depth: int = 0) -> tuple[EventColumns, list[Event]]:
    """Columns made by any composition of what the partition runner does to them (entries of
    either form, rows, slices, selections, time order, merges), with the list of events the
    same composition gives."""
    rows = draw(events(max_size=20))
    made = ["entry", "small entry", "rows"] + (["slice", "select", "ordered", "merge"] if depth < 3 else [])
    kind = draw(st.sampled_from(made))
    if kind == "entry":
        return entry(rows), rows
    if kind == "small entry":
        return EventColumns.decode(encode_rows(rows)), rows
    if kind == "rows":
        return EventColumns.of(rows), rows
    columns, rows = draw(composed(depth + 1))
    if kind == "slice":
        a, b = sorted(draw(st.lists(st.integers(0, len(rows)), min_size=2, max_size=2)))
        return columns[a:b], rows[a:b]
    if kind == "select":
        keep = draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
        return columns.select(keep), [e for e, k in zip(rows, keep, strict=True) if k]
    if kind == "ordered":
        return columns.ordered(), sorted(rows, key=event_time)
    other, other_rows = draw(composed(depth + 1))
    runs = [(c.ordered(), sorted(r, key=event_time)) for c, r in ((columns, rows), (other, other_rows)) if r]
    if not runs:
        return EventColumns.of([]), []
    return EventColumns.merge([c for c, _ in runs]), sorted([e for _, r in runs for e in r], key=event_time)


@settings(max_examples=200, deadline=None)
@given(composed(), st.lists(st.sampled_from(["subjects", "data", "received", "field", "types", "encode"]), max_size=3))
def test_any_composition_reads_as_the_same_composition_of_lists_of_events(made, reads):
    """Whatever column is read first (each is decoded or built once, when first read)."""
    columns, rows = made
    for read in reads:
        if read == "subjects":
            assert columns.subjects == [e.subject for e in rows]
        elif read == "data":
            assert columns.data == [e.data for e in rows]
        elif read == "received":
            assert columns.received == [e.received_at for e in rows]
        elif read == "field":
            assert columns.field("", ABSENT) == [e.data.get("", ABSENT) for e in rows]
        elif read == "types":
            assert columns.types == [e.type for e in rows] and columns.sources == [e.source for e in rows]
        else:
            assert list(EventColumns.decode(columns.encode())) == rows
    assert list(columns) == rows
