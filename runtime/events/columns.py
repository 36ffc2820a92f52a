"""Events as columns: how a log entry carries its events, and how the rules read them.

A log entry holds one list per field: the types and sources once each, with a byte per event
(:class:`Coded`); the event times, customers and ids as lists; the subjects, ``data`` and arrival
times still encoded, decoded when first read. Decoding one costs a few list reads instead of a
struct and five strings per event (about 80 against 250–280 ns an event), and what no rule
reads (most ``data``) is never decoded.

:class:`EventColumns` is a sequence of :class:`Event`: whatever walks events one by one gets
them, built when first asked for (about 150 ns each). The rules' kernels read the columns
instead (``positions`` of their types, then the columns at those positions) and build an
``Event`` only for the events they act on (``event``).

Entries of fewer than ``COLUMNS_FROM`` events are written as rows (a msgpack array of events),
as every entry was before columns; they decode to rows, kept as rows until a column is read.

Pure logic: no Redis.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from itertools import compress, count, pairwise
from operator import attrgetter, itemgetter
from typing import Any, Generic, TypeVar, overload

import msgspec

from runtime.events.envelope import Event

FORMAT = 2  # a columnar entry's first item; a row entry's first item is an event (an array)
COLUMNS_FROM = 16  # events in an entry from which it is written as columns


Codes = bytes | list[int]  # per event, its value's index among the distinct values: bytes up to 256 of them


# A columnar entry: one msgpack array of these fields. It is written from values (``_Written``)
# and read with the columns of ``_LATER`` kept encoded until first read (``_Wire``): one field
# list, so the two cannot drift apart.
_FIELDS: list[tuple[str, Any]] = [
    ("format", int),
    ("types", list[str]),  # distinct, in order of first appearance
    ("type_codes", Codes),
    ("sources", list[str]),
    ("source_codes", Codes),
    ("times", list[int]),
    ("customers", list[str]),
    ("ids", list[str]),
    ("subjects", list[str] | None),  # nil when each event's subject is its customer
    ("data", list[dict[str, Any]]),
    ("received_at", list[int]),
]
_LATER = ("subjects", "data", "received_at")
_Written = msgspec.defstruct("_Written", _FIELDS, array_like=True, gc=False, module=__name__)
_Wire = msgspec.defstruct(
    "_Wire",
    [(name, msgspec.Raw if name in _LATER else kind) for name, kind in _FIELDS],
    array_like=True,
    gc=False,
    module=__name__,
)


# how a columnar entry starts: an array of _Wire's fields, then FORMAT (a row entry's array of
# events starts with an event, an array itself)
_COLUMNAR = bytes((0x90 | len(_Wire.__struct_fields__), FORMAT))
_encoder = msgspec.msgpack.Encoder()
_wire = msgspec.msgpack.Decoder(_Wire)
_row_entry = msgspec.msgpack.Decoder(list[Event])
_strings = msgspec.msgpack.Decoder(list[str])
_dicts = msgspec.msgpack.Decoder(list[dict[str, Any]])
_ints = msgspec.msgpack.Decoder(list[int])


_NIL = msgspec.Raw(b"\xc0")  # msgpack's nil: no subjects of their own
_UNSET = object()  # subjects not read from the rows yet


Pick = Callable[[list[Any]], list[Any]]  # which items of a column, in what order
T = TypeVar("T")


class _Later:
    """A column not decoded yet: its parts (encoded, decoded, or later themselves) one after
    the other, then ``pick`` (a slice, a selection, an order) applied. Slicing, ordering and
    joining entries' columns so never decodes what no one reads."""

    __slots__ = ("decoder", "parts", "pick")

    def __init__(self, decoder: msgspec.msgpack.Decoder, parts: list[Any], pick: Pick | None) -> None:
        self.decoder, self.parts, self.pick = decoder, parts, pick

    def value(self) -> list[Any]:
        parts = [_value(part, self.decoder) for part in self.parts]
        joined = parts[0] if len(parts) == 1 else [x for part in parts for x in part]
        return joined if self.pick is None else self.pick(joined)


def _value(column: Any, decoder: msgspec.msgpack.Decoder) -> list[Any]:
    """A column's values, decoding it if it is not yet."""
    if type(column) is msgspec.Raw:
        return decoder.decode(column)  # type: ignore[no-any-return]
    if type(column) is _Later:
        return column.value()
    return column  # type: ignore[no-any-return]


class _Column(Generic[T]):
    """A column of :class:`EventColumns` held in the slot of its name with an underscore:
    None until read from the events' ``field`` when the columns came as rows, encoded (or
    :class:`_Later`) until decoded when they came as a log entry; each built once."""

    def __init__(self, field: str, decoder: msgspec.msgpack.Decoder | None = None) -> None:
        self.read, self.decoder = attrgetter(field), decoder

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = getattr(owner, f"_{name}")  # the slot's own descriptor

    def __get__(self, columns: Any, owner: type | None = None) -> list[T]:
        value = self.slot.__get__(columns)
        if type(value) is list:
            return value
        value = list(map(self.read, columns._rows)) if value is None else _value(value, self.decoder)
        self.slot.__set__(columns, value)
        return value


FIELDS_DECODED = 2  # fields read one by one from an encoded data column before the dicts are decoded


@functools.lru_cache(maxsize=256)
def _field_decoder(name: str, missing: object) -> msgspec.msgpack.Decoder:
    """A data column's maps as structs of the one field ``name`` (``missing`` where absent)."""
    one = msgspec.defstruct("_Field", [("f", Any, missing)], rename={"f": name}, gc=False, module=__name__)
    return msgspec.msgpack.Decoder(list[one])  # type: ignore[valid-type]


def _field(column: Any, name: str, missing: object) -> list[Any]:
    """``data[name]`` per event of an encoded (or :class:`_Later`) data column, decoding that
    field alone: maps decoded as a struct of one field skip the others' keys and values."""
    if type(column) is msgspec.Raw:
        return [s.f for s in _field_decoder(name, missing).decode(column)]
    if type(column) is _Later:
        parts = [_field(part, name, missing) for part in column.parts]
        joined = parts[0] if len(parts) == 1 else [x for part in parts for x in part]
        return joined if column.pick is None else column.pick(joined)
    return _field_of_dicts(column, name, missing)


def _field_of_dicts(data: list[Any], name: str, missing: object) -> list[Any]:
    return [d.get(name, missing) if type(d) is dict else missing for d in data]


def _encoded(column: Any, decoder: msgspec.msgpack.Decoder) -> msgspec.Raw:
    """A column as msgpack: as it came when it was never decoded."""
    return column if type(column) is msgspec.Raw else msgspec.Raw(_encoder.encode(_value(column, decoder)))


def _coded(values: list[str]) -> tuple[list[str], Codes]:
    """The distinct values in order of first appearance, and each value's index among them."""
    if values and values.count(values[0]) == len(values):  # one value (an entry's source, mostly): counted in C
        return [values[0]], bytes(len(values))
    index: dict[str, int] = {}
    codes = [index.setdefault(v, len(index)) for v in values]
    return list(index), bytes(codes) if len(index) <= 256 else codes


def encode_rows(rows: Sequence[Event], columns_from: int = COLUMNS_FROM) -> bytes:
    """Events as a log entry, straight from the events (what ingestion appends): as columns
    from ``COLUMNS_FROM`` events on, below that as rows (columns cost a microsecond or two per
    entry however few its events, rows a tenth of that)."""
    if len(rows) < columns_from:
        return _encoder.encode(rows)
    customers, subjects = [e.customer for e in rows], [e.subject for e in rows]
    return _encoder.encode(
        _Written(
            FORMAT,
            *_coded([e.type for e in rows]),
            *_coded([e.source for e in rows]),
            [e.time for e in rows],
            customers,
            [e.id for e in rows],
            None if subjects == customers else subjects,
            [e.data for e in rows],
            [e.received_at for e in rows],
        )
    )


class Coded:
    """A column of few distinct strings (event types, sources): each distinct value once, in
    order of first appearance, and per event its value's index among them."""

    __slots__ = ("codes", "names")

    def __init__(self, names: list[str], codes: Codes) -> None:
        self.names, self.codes = names, codes

    @classmethod
    def of(cls, values: list[str]) -> Coded:
        return cls(*_coded(values))

    def values(self) -> list[str]:
        return list(map(self.names.__getitem__, self.codes))

    def take(self, take: Pick) -> Coded:
        return Coded(self.names, take(self.codes))  # type: ignore[arg-type]

    @classmethod
    def join(cls, parts: list[Coded]) -> Coded:
        if all(p.names == parts[0].names for p in parts):
            codes: list[int] = [c for p in parts for c in p.codes]
            names = parts[0].names
        else:
            index = {n: i for i, n in enumerate(dict.fromkeys(n for p in parts for n in p.names))}
            codes = [c for p in parts for c in map([index[n] for n in p.names].__getitem__, p.codes)]
            names = list(index)
        return cls(names, bytes(codes) if len(names) <= 256 else codes)


class EventColumns(Sequence[Event]):
    """Events as one list per field (see the module). The types and sources are :class:`Coded`;
    the subjects, ``data`` and arrival times are decoded when first read. Events that came as
    :class:`Event` rows (``of``) stay rows until a column is read, each column then built once:
    a small entry or a run of them costs no more than the rows it holds."""

    __slots__ = (
        "_coded_sources",
        "_coded_types",
        "_customers",
        "_data",
        "_fields",
        "_ids",
        "_received",
        "_rows",
        "_sources",
        "_subjects",
        "_times",
        "_types",
        "payload",
    )

    times: _Column[int] = _Column("time")  # type: ignore[assignment]
    customers: _Column[str] = _Column("customer")  # type: ignore[assignment]
    ids: _Column[str] = _Column("id")  # type: ignore[assignment]
    data: _Column[dict[str, Any]] = _Column("data", _dicts)  # type: ignore[assignment]
    received: _Column[int] = _Column("received_at", _ints)  # type: ignore[assignment]

    def __init__(
        self,
        types: Coded | None,
        sources: Coded | None,
        times: list[int] | None,
        customers: list[str] | None,
        ids: list[str] | None,
        subjects: list[str] | msgspec.Raw | _Later | object | None,  # None: each is its customer
        data: list[dict[str, Any]] | msgspec.Raw | _Later | None,
        received: list[int] | msgspec.Raw | _Later | None,
        rows: list[Event] | None = None,  # a None column (_UNSET subjects) is built from these
    ) -> None:
        self._coded_types, self._coded_sources = types, sources
        self._times, self._customers, self._ids = times, customers, ids
        self._subjects, self._data, self._received, self._rows = subjects, data, received, rows
        self._types: list[str] | None = None
        self._sources: list[str] | None = None
        self._fields: dict[str, list[Any]] | None = None  # field(): data field -> its values
        self.payload: bytes | None = None  # the log entry's bytes these events were decoded from, all of them

    @classmethod
    def of(cls, events: Sequence[Event]) -> EventColumns:
        """``events`` as columns (itself when it is already), built from the events when read."""
        if type(events) is EventColumns:
            return events
        return cls(None, None, None, None, None, _UNSET, None, None, list(events))

    # --- the log entry's form --------------------------------------------------------------

    def encode(self) -> bytes:
        if self.payload is not None:
            return self.payload
        if self._rows is not None:
            return encode_rows(self._rows)
        types, sources = self.coded_types, self.coded_sources
        return _encoder.encode(
            _Wire(
                FORMAT,
                types.names,
                types.codes,
                sources.names,
                sources.codes,
                self.times,
                self.customers,
                self.ids,
                _NIL if self.subjects_or_none() is None else _encoded(self._subjects, _strings),
                _encoded(self._data, _dicts),
                _encoded(self._received, _ints),
            )
        )

    @classmethod
    def decode(cls, payload: bytes) -> EventColumns:
        """A log entry's events, columnar or (written before columns) rows."""
        if payload[:2] != _COLUMNAR:
            columns = cls.of(_row_entry.decode(payload))
            columns.payload = payload
            return columns
        wire = _wire.decode(payload)
        columns = cls(
            Coded(wire.types, wire.type_codes),
            Coded(wire.sources, wire.source_codes),
            wire.times,
            wire.customers,
            wire.ids,
            None if wire.subjects == _NIL else wire.subjects,
            wire.data,
            wire.received_at,
        )
        columns.payload = payload
        return columns

    # --- columns built or decoded when first read --------------------------------------------

    @property
    def coded_types(self) -> Coded:
        if self._coded_types is None:
            self._coded_types = Coded.of(self.types)
        return self._coded_types

    @property
    def coded_sources(self) -> Coded:
        if self._coded_sources is None:
            self._coded_sources = Coded.of(self.sources)
        return self._coded_sources

    def field(self, name: str, missing: object) -> list[Any]:
        """Each event's ``data[name]``, ``missing`` where it has none: what a filter on one
        field of ``data`` reads. While ``data`` is still encoded, the field alone is decoded
        (three quarters of the cost of the dicts when ``data`` holds one field, a third when it
        holds four); from ``FIELDS_DECODED`` fields on, the dicts are decoded once instead."""
        fields = self._fields
        if fields is None:
            fields = self._fields = {}
        values = fields.get(name)
        if values is None:
            data = self._data
            if data is None or type(data) is list or len(fields) >= FIELDS_DECODED:  # None: from the rows
                values = _field_of_dicts(self.data, name, missing)
            else:
                try:
                    values = _field(data, name, missing)
                except msgspec.ValidationError:  # a data that is not a map: read from the dicts
                    values = _field_of_dicts(self.data, name, missing)
            fields[name] = values
        return values

    def positions(self, types: dict[str, Any]) -> Iterator[int]:
        """The positions of the events whose type is a key of ``types`` (with a true value)."""
        coded = self.coded_types
        return compress(count(), map([types.get(n) for n in coded.names].__getitem__, coded.codes))

    @property
    def types(self) -> list[str]:
        if self._types is None:
            coded = self._coded_types
            self._types = [e.type for e in self._rows] if coded is None else coded.values()  # type: ignore[union-attr]
        return self._types

    @property
    def sources(self) -> list[str]:
        if self._sources is None:
            coded = self._coded_sources
            self._sources = [e.source for e in self._rows] if coded is None else coded.values()  # type: ignore[union-attr]
        return self._sources

    def subjects_or_none(self) -> Any:
        """The subjects column as held: None when each subject is its customer."""
        if self._subjects is _UNSET:
            self.subjects  # noqa: B018  # read from the rows
        return self._subjects

    @property
    def subjects(self) -> list[str]:
        if self._subjects is _UNSET:
            subjects = [e.subject for e in self._rows]  # type: ignore[union-attr]
            self._subjects = None if subjects == self.customers else subjects
        if self._subjects is None:
            return self.customers
        if type(self._subjects) is not list:
            self._subjects = _value(self._subjects, _strings)
        return self._subjects  # type: ignore[return-value]

    def source(self, i: int) -> str:
        coded = self.coded_sources
        return coded.names[coded.codes[i]]

    # --- as a sequence of events -----------------------------------------------------------

    @property
    def rows(self) -> list[Event]:
        """Every event, built once."""
        if self._rows is None:
            self._rows = list(
                map(
                    Event,
                    self.ids,
                    self.types,
                    self.times,
                    self.subjects,
                    self.customers,
                    self.sources,
                    self.data,
                    self.received,
                )
            )
        return self._rows

    def event(self, i: int) -> Event:
        """The event at ``i`` (built without building the others)."""
        if self._rows is not None:
            return self._rows[i]
        types = self.coded_types
        return Event(
            self.ids[i],
            types.names[types.codes[i]],
            self.times[i],
            self.subjects[i],
            self.customers[i],
            self.source(i),
            self.data[i],
            self.received[i],
        )

    def __len__(self) -> int:
        return len(self.times)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.rows)

    @overload
    def __getitem__(self, i: int) -> Event: ...
    @overload
    def __getitem__(self, i: slice) -> EventColumns: ...
    def __getitem__(self, i: int | slice) -> Event | EventColumns:
        if isinstance(i, slice):
            return self._gather(lambda column: column[i])
        return self.event(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EventColumns({self.rows!r})"

    def select(self, keep: Sequence[bool]) -> EventColumns:
        """The events whose ``keep`` is true, in order."""
        return self._gather(lambda column: list(compress(column, keep)))

    def ordered(self) -> EventColumns:
        """The events in event-time order, arrival order among equal times (itself when they are)."""
        times = self.times
        if all(map(int.__le__, times, times[1:])):
            return self
        pick = itemgetter(*sorted(range(len(times)), key=times.__getitem__))  # stable; two or more
        return self._gather(lambda column: list(pick(column)))

    def _gather(self, take: Pick) -> EventColumns:
        if self._rows is not None:
            return EventColumns.of(take(self._rows))

        def later(column: Any, decoder: msgspec.msgpack.Decoder) -> Any:
            return take(column) if type(column) is list else _Later(decoder, [column], take)

        return EventColumns(
            self.coded_types.take(take),
            self.coded_sources.take(take),
            take(self.times),
            take(self.customers),
            take(self.ids),
            None if self._subjects is None else later(self._subjects, _strings),
            later(self._data, _dicts),
            later(self._received, _ints),
        )

    @classmethod
    def merge(cls, runs: Sequence[EventColumns]) -> EventColumns:
        """The events of ``runs`` (each in event-time order, given in arrival order) in
        event-time order, arrival order among equal times. Runs that follow one another in
        time (what concurrent senders of ordered streams mostly give) are only joined."""
        if len(runs) == 1:
            return runs[0]
        after = sorted(range(len(runs)), key=lambda k: (runs[k].times[0], k))
        if all(
            runs[a].times[-1] < runs[b].times[0] or (runs[a].times[-1] == runs[b].times[0] and a < b)
            for a, b in pairwise(after)
        ):
            return cls._join([runs[k] for k in after])
        return cls._join(runs).ordered()

    @classmethod
    def _join(cls, parts: Sequence[EventColumns]) -> EventColumns:
        if all(p._rows is not None for p in parts):
            return cls.of([e for p in parts for e in p._rows])  # type: ignore[union-attr]

        def joined(column: Callable[[EventColumns], list[Any]]) -> list[Any]:
            return [x for part in parts for x in column(part)]

        def later(column: Callable[[EventColumns], Any], decoder: msgspec.msgpack.Decoder) -> Any:
            return _Later(decoder, [column(p) for p in parts], None)

        return cls(
            Coded.join([p.coded_types for p in parts]),
            Coded.join([p.coded_sources for p in parts]),
            joined(lambda p: p.times),
            joined(lambda p: p.customers),
            joined(lambda p: p.ids),
            None
            if all(p.subjects_or_none() is None for p in parts)
            else later(lambda p: p.customers if p.subjects_or_none() is None else p._subjects, _strings),
            later(lambda p: p._data if p._rows is None else p.data, _dicts),
            later(lambda p: p._received if p._rows is None else p.received, _ints),
        )
