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

Entries written before columns (a msgpack array of events) still decode, as rows.

Pure logic: no Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import compress, count, pairwise
from operator import itemgetter
from typing import Any, overload

import msgspec

from runtime.events.envelope import Event

FORMAT = 2  # a columnar entry's first item; a row entry's first item is an event (an array)


Codes = bytes | list[int]  # per event, its value's index among the distinct values: bytes up to 256 of them


class _Wire(msgspec.Struct, array_like=True, gc=False):
    format: int
    types: list[str]  # distinct, in order of first appearance
    type_codes: Codes
    sources: list[str]
    source_codes: Codes
    times: list[int]
    customers: list[str]
    ids: list[str]
    subjects: msgspec.Raw  # list[str], or nil when each event's subject is its customer
    data: msgspec.Raw  # list[dict]
    received_at: msgspec.Raw  # list[int]


# how a columnar entry starts: an array of _Wire's fields, then FORMAT (a row entry's array of
# events starts with an event, an array itself)
_COLUMNAR = bytes((0x90 | len(_Wire.__struct_fields__), FORMAT))
_encoder = msgspec.msgpack.Encoder()
_wire = msgspec.msgpack.Decoder(_Wire)
_rows = msgspec.msgpack.Decoder(list[Event])
_strings = msgspec.msgpack.Decoder(list[str])
_dicts = msgspec.msgpack.Decoder(list[dict[str, Any]])
_ints = msgspec.msgpack.Decoder(list[int])


_NIL = msgspec.Raw(b"\xc0")  # msgpack's nil: no subjects of their own


Pick = Callable[[list[Any]], list[Any]]  # which items of a column, in what order


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


def _encoded(column: Any, decoder: msgspec.msgpack.Decoder) -> msgspec.Raw:
    """A column as msgpack: as it came when it was never decoded."""
    return column if type(column) is msgspec.Raw else msgspec.Raw(_encoder.encode(_value(column, decoder)))


class Coded:
    """A column of few distinct strings (event types, sources): each distinct value once, in
    order of first appearance, and per event its value's index among them."""

    __slots__ = ("codes", "names")

    def __init__(self, names: list[str], codes: Codes) -> None:
        self.names, self.codes = names, codes

    @classmethod
    def of(cls, values: list[str]) -> Coded:
        if values and values.count(values[0]) == len(values):  # one value (an entry's source, mostly): counted in C
            return cls([values[0]], bytes(len(values)))
        index: dict[str, int] = {}
        codes = [index.setdefault(v, len(index)) for v in values]
        return cls(list(index), bytes(codes) if len(index) <= 256 else codes)

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
    the subjects, ``data`` and arrival times are decoded when first read."""

    __slots__ = (
        "_data",
        "_received",
        "_rows",
        "_sources",
        "_subjects",
        "_types",
        "coded_sources",
        "coded_types",
        "customers",
        "ids",
        "payload",
        "times",
    )

    def __init__(
        self,
        types: Coded,
        sources: Coded,
        times: list[int],
        customers: list[str],
        ids: list[str],
        subjects: list[str] | msgspec.Raw | _Later | None,  # None: each is its customer
        data: list[dict[str, Any]] | msgspec.Raw | _Later,
        received: list[int] | msgspec.Raw | _Later,
        rows: list[Event] | None = None,
    ) -> None:
        self.coded_types, self.coded_sources = types, sources
        self.times, self.customers, self.ids = times, customers, ids
        self._subjects, self._data, self._received, self._rows = subjects, data, received, rows
        self._types: list[str] | None = None
        self._sources: list[str] | None = None
        self.payload: bytes | None = None  # the log entry's bytes these events were decoded from, all of them

    @classmethod
    def of(cls, events: Sequence[Event]) -> EventColumns:
        """``events`` as columns (itself when it is already), keeping the events as they are."""
        if type(events) is EventColumns:
            return events
        rows = list(events)
        subjects = [e.subject for e in rows]
        customers = [e.customer for e in rows]
        return cls(
            Coded.of([e.type for e in rows]),
            Coded.of([e.source for e in rows]),
            [e.time for e in rows],
            customers,
            [e.id for e in rows],
            None if subjects == customers else subjects,
            [e.data for e in rows],
            [e.received_at for e in rows],
            rows,
        )

    # --- the log entry's form --------------------------------------------------------------

    def encode(self) -> bytes:
        if self.payload is not None:
            return self.payload
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
                _NIL if self._subjects is None else _encoded(self._subjects, _strings),
                _encoded(self._data, _dicts),
                _encoded(self._received, _ints),
            )
        )

    @classmethod
    def decode(cls, payload: bytes) -> EventColumns:
        """A log entry's events, columnar or (written before columns) rows."""
        if payload[:2] != _COLUMNAR:
            return cls.of(_rows.decode(payload))
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

    def positions(self, types: dict[str, Any]) -> Iterator[int]:
        """The positions of the events whose type is a key of ``types`` (with a true value)."""
        coded = self.coded_types
        return compress(count(), map([types.get(n) for n in coded.names].__getitem__, coded.codes))

    @property
    def types(self) -> list[str]:
        if self._types is None:
            self._types = self.coded_types.values()
        return self._types

    @property
    def sources(self) -> list[str]:
        if self._sources is None:
            self._sources = self.coded_sources.values()
        return self._sources

    @property
    def subjects(self) -> list[str]:
        if self._subjects is None:
            return self.customers
        if type(self._subjects) is not list:
            self._subjects = _value(self._subjects, _strings)
        return self._subjects  # type: ignore[return-value]

    @property
    def data(self) -> list[dict[str, Any]]:
        if type(self._data) is not list:
            self._data = _value(self._data, _dicts)
        return self._data  # type: ignore[return-value]

    @property
    def received(self) -> list[int]:
        if type(self._received) is not list:
            self._received = _value(self._received, _ints)
        return self._received  # type: ignore[return-value]

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
            None if self._rows is None else take(self._rows),
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
            if all(p._subjects is None for p in parts)
            else later(lambda p: p.customers if p._subjects is None else p._subjects, _strings),
            later(lambda p: p._data, _dicts),
            later(lambda p: p._received, _ints),
            joined(lambda p: p._rows) if all(p._rows is not None for p in parts) else None,  # type: ignore[arg-type, return-value]
        )
