"""The profile store: per customer, attributes and tags the rules read (``tag``, ``segment``,
``score`` conditions) and enrichment copies onto events.

One Redis hash per customer, ``esp:profile:<customer>``: field = attribute name, value = the
attribute as JSON, so strings, numbers, booleans and lists of them (tag sets) read back with
their types. Writes of many customers are one script run (atomic), reads one script call
that reads the current batch version and every customer's hashes at once.

On a Redis Cluster the profiles carry no hash tag and so spread over the slots: a write of many
customers is one pipeline of a small script per customer (each customer's change atomic, the
batch not), and a read is two round trips, the current batch version and then one pipeline of
HGETALLs. Between the two the batch version may be switched: the read still sees one version
whole, since a switch leaves the previous version's keys to expire (``keep_s``), not deleted.

:class:`ProfileStorage` and :class:`BatchProfileStorage` are what callers use;
:class:`ProfileStore` and :class:`BatchProfiles` keep profiles in Redis,
:mod:`runtime.events.memory` in memory for unit tests. Both store the same encoded values and
read through :func:`merge_profile`, so types and merge rules cannot drift apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import orjson

from runtime import keys
from runtime.errors import InputError
from runtime.events.identity import InvalidRecord
from runtime.events.limits import MAX_KEY_LENGTH, MAX_KEYS, MAX_STRING_LENGTH, string_problem, value_problem
from runtime.lua import queue_script, read_script

if TYPE_CHECKING:
    import redis

Scalar = str | int | float | bool
Value = Scalar | list[Scalar]

_INT64 = 2**63
MAX_CUSTOMER_LENGTH = 256  # as an event's subject
MAX_LIST_ITEMS = 10_000  # items of one list attribute (a tag set)
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # batch profile versions: safe in keys and scripts

# attributes the platform reads as sets (rule audiences, profile reads): lists of strings only
RESERVED_LISTS = ("tags", "segments")


def profile_key(customer: str) -> str:
    """The hash of one customer's profile. (Belongs in :mod:`runtime.keys`.)"""
    return keys.profile(customer)


def encode_value(value: Any) -> bytes:
    return orjson.dumps(value)


def decode_value(raw: bytes | str) -> Any:
    """A stored attribute; a field that is not JSON (written by another tool) reads as its raw
    string, whatever its bytes."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None if -_INT64 <= value < _INT64 else f"integer out of the 64-bit range: {value}"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"must be a finite number, got {value}"
    return f"must be a string, number, boolean, null, or a list or one-level map of those, got {type(value).__name__}"


def _attrs_problem(customer: Any, attrs: Any) -> tuple[str, str] | None:
    if not isinstance(customer, str) or not customer:
        return "customer", f"must be a non-empty string, got {customer!r:.80}"
    problem = string_problem(customer, MAX_CUSTOMER_LENGTH)
    if problem is not None:
        return "customer", problem[1]
    if not isinstance(attrs, Mapping):
        return "attrs", f"must be a mapping of attribute names to values, got {type(attrs).__name__}"
    if len(attrs) > MAX_KEYS:
        return "attrs", f"has {len(attrs)} attributes; at most {MAX_KEYS} are accepted"
    for name, value in attrs.items():
        if not isinstance(name, str) or not name:
            return str(name), "attribute names must be non-empty strings"
        problem = string_problem(name, MAX_KEY_LENGTH)
        if problem is not None:  # named escaped: the answer must stay encodable
            return name[:40].encode("utf-8", "backslashreplace").decode(), f"the name {problem[1]}"
        if value is None:
            continue
        problem = _shape_problem(name, value)
        if problem is not None:
            return problem
        if isinstance(value, Mapping):  # one level, e.g. scores: {product: 0..100}
            for key, item in value.items():
                problem = None if isinstance(key, str) and key else "keys must be non-empty strings"
                problem = problem or (None if item is None else _scalar_problem(item))
                if problem is not None:
                    return f"{name}.{key}", problem
            continue
        if isinstance(value, list | tuple | set | frozenset):
            for item in value:
                problem = _scalar_problem(item)
                if problem is not None:
                    return name, f"list item {problem}"
            continue
        problem = _scalar_problem(value)
        if problem is not None:
            return name, problem
    return None


def _shape_problem(name: str, value: Any) -> tuple[str, str] | None:
    """Limits (string length, Unicode, integer range, sizes) and the shape of reserved
    attributes: ``{"tags": 1}`` is refused here, so it can never break a later read."""
    items = list(value) if isinstance(value, set | frozenset | tuple) else value
    if isinstance(items, list) and len(items) > MAX_LIST_ITEMS:
        return name, f"has {len(items)} items; at most {MAX_LIST_ITEMS} are accepted"
    problem = value_problem(dict(value) if isinstance(value, Mapping) else items, name, depth=2)
    if problem is not None:
        return name, problem[1]
    if name in RESERVED_LISTS and not (isinstance(items, list) and all(isinstance(i, str) for i in items)):
        return name, f"'{name}' is reserved: a list of strings, got {type(value).__name__}"
    return None


def _plainly_valid(customer: Any, attrs: Any) -> bool:
    """True only for a profile :func:`_attrs_problem` accepts, decided cheaply for the common
    shapes (ASCII strings, a dict of strings, numbers, lists of strings and flat maps of
    numbers); anything else (False) gets the precise check. Bulk writes spent most of their time
    in that walk, one isinstance chain per list item."""
    if customer.__class__ is not str or not 0 < len(customer) <= MAX_CUSTOMER_LENGTH or not customer.isascii():
        return False
    if attrs.__class__ is not dict or len(attrs) > MAX_KEYS:
        return False
    for name, value in attrs.items():
        if name.__class__ is not str or not 0 < len(name) <= MAX_KEY_LENGTH or not name.isascii():
            return False
        cls = value.__class__
        if value is None:
            continue
        if cls is not list and name in RESERVED_LISTS:
            return False
        if cls is str:
            if len(value) > MAX_STRING_LENGTH or not value.isascii():
                return False
        elif cls is list:  # a list of strings (tags, segments): one join says all are str, all ASCII
            if len(value) > MAX_LIST_ITEMS:
                return False
            try:
                joined = "".join(value)
            except TypeError:
                return False
            if len(joined) > MAX_STRING_LENGTH or not joined.isascii():
                return False
        elif cls is dict:  # a flat map of numbers (scores)
            if len(value) > MAX_KEYS or not _plain_scores(value):
                return False
        elif not _plain_number(value):
            return False
    return True


def _plain_scores(value: dict[Any, Any]) -> bool:
    """A flat map of non-empty ASCII names to finite numbers (scores, usually floats) or None;
    any other map goes through the per-item check. One pass with the float case inline: for
    the few items of a score map that is faster than the calls in C it replaced (set of types,
    join, sum), which each walked the map again."""
    for key, item in value.items():
        if key.__class__ is not str or not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii():
            return False
        if item.__class__ is float:
            if item - item != 0.0:  # inf or nan
                return False
        elif item is not None and not _plain_number(item):
            return False
    return True


def _plain_number(value: Any) -> bool:
    cls = value.__class__
    if cls is float:
        return math.isfinite(value)
    if cls is int:
        return -_INT64 <= value < _INT64
    return cls is bool


def validate_profiles(profiles: Sequence[tuple[str, Mapping[str, Any]]], offset: int = 0) -> None:
    """Raise :class:`InvalidRecord` for the first invalid profile, its index counted from ``offset``."""
    for index, (customer, attrs) in enumerate(profiles, offset):
        if _plainly_valid(customer, attrs):
            continue
        problem = _attrs_problem(customer, attrs)
        if problem is not None:
            field, message = problem
            raise InvalidRecord(message, reason="invalid_profile", index=index, field=field)


def stored_value(value: Any) -> Any:
    """Sets are stored as sorted lists, so a tag set reads back in a stable order."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=lambda item: (type(item).__name__, item))
    return value


_READ = read_script("runtime.events", "profiles_read.lua")
_PUT = read_script("runtime.events", "profiles_put.lua")
_WRITE = read_script("runtime.events", "profiles_write.lua")
_BATCH_WRITE = read_script("runtime.events", "profiles_batch_write.lua")
_BATCH_READ = read_script("runtime.events", "profiles_batch_read.lua")
WRITE_CHUNK = 1000  # customers per run of the write script: each run blocks Redis for a few ms


_PACK = msgspec.msgpack.Encoder()


def _write_args(replace: bool, ttl_s: int, rows: list[tuple[list[Any], list[Any]]]) -> list[Any]:
    """ARGV of ``profiles_write.lua`` for (names to remove, name/value pairs to set) per key."""
    return ["1" if replace else "0", ttl_s, _PACK.encode(rows)]


_STORED_AS_IS = frozenset({str, int, float, bool, list, dict})


def _encoded_pairs(attrs: Mapping[str, Any]) -> list[str]:
    """The attributes to set (all but those set to None), as flat name, encoded value pairs;
    values as str, since Redis's Lua msgpack reads no binary type (the bytes stored are the same)."""
    pairs: list[str] = []
    for name, value in attrs.items():
        if value is not None:
            stored = value if value.__class__ in _STORED_AS_IS else stored_value(value)
            pairs += (name, orjson.dumps(stored).decode())
    return pairs


def packed_value(attrs: Mapping[str, Any]) -> bytes:
    """A batch profile as stored: its attributes (but those set to None) as one JSON object,
    each value as :func:`encode_value` would store it on its own; ``b""`` for none."""
    for value in attrs.values():
        if value is None or value.__class__ not in _STORED_AS_IS:
            attrs = {n: stored_value(v) for n, v in attrs.items() if v is not None}
            break
    return orjson.dumps(attrs) if attrs else b""


def _unpacked(raw: bytes) -> dict[str, Any]:
    """A packed batch profile as attributes: what :func:`_decoded` gives for the same profile
    stored a hash field per attribute."""
    try:
        attrs = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return attrs if isinstance(attrs, dict) else {}


def _batch_decoded(reply: Any) -> dict[str, Any]:
    """A batch profile as a read script returns it: packed (a string), or a hash of the layout
    before (flat name, value pairs), or nothing."""
    if isinstance(reply, bytes | str):
        return _unpacked(reply.encode() if isinstance(reply, str) else reply)
    return _decoded(reply) if reply else {}


def _decoded(flat: list[Any]) -> dict[str, Any]:
    """An HGETALL reply (flat name, value pairs) as attributes."""
    return {
        (flat[i].decode("utf-8", "replace") if isinstance(flat[i], bytes) else flat[i]): decode_value(flat[i + 1])
        for i in range(0, len(flat), 2)
    }


def _attributes(stored: Mapping[Any, Any]) -> dict[str, Any]:
    """An HGETALL reply as redis-py gives it outside a script (a dict) as attributes."""
    return {(k.decode("utf-8", "replace") if isinstance(k, bytes) else k): decode_value(v) for k, v in stored.items()}


def _tags(value: Any) -> set[str]:
    """A stored tag (or segment) set, read defensively: whatever another writer left there,
    a read gives a list of strings, so no rule's audience check can fail on it."""
    return {t for t in value if isinstance(t, str)} if isinstance(value, list) else set()


def check_version(version: str) -> str:
    """A batch profile version, safe to put in keys and the read script as it is."""
    if not isinstance(version, str) or VERSION_PATTERN.match(version) is None:
        raise InputError(
            f"batch profile version {version!r:.80} must match {VERSION_PATTERN.pattern}", reason="invalid_version"
        )
    return version


def merge_profile(own: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
    """A customer's profile as readers see it: the attributes put on it over the current batch
    version's, the ``tags`` of both, ``segments`` read as a set of strings. ``own`` itself when
    there is nothing to merge or normalise (every caller passes a dict it has just decoded):
    most profiles of a contact batch, whose copy cost a tenth of the decision's client CPU."""
    if not batch and "tags" not in own and "segments" not in own:
        return own
    profile = dict(batch)
    tags = _tags(profile.get("tags")) | _tags(own.get("tags"))
    profile.update(own)
    if tags or "tags" in profile:
        profile["tags"] = sorted(tags)
    segments = profile.get("segments")
    if segments is not None and not (isinstance(segments, list) and all(isinstance(x, str) for x in segments)):
        profile["segments"] = sorted(_tags(segments))
    return profile


class ProfileStorage(Protocol):
    """Attributes and tags per customer; see :class:`ProfileStore` for each method's contract."""

    def put(self, customer: str, attrs: Mapping[str, Any], *, replace: bool = False) -> int: ...

    def put_many(self, profiles: Mapping[str, Mapping[str, Any]], *, replace: bool = False) -> int: ...

    def get(self, customer: str) -> dict[str, Any]: ...

    def get_many(self, customers: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def delete(self, customer: str) -> bool: ...


class BatchProfileStorage(Protocol):
    """Versions of the batch jobs' profiles; see :class:`BatchProfiles`."""

    def current(self) -> str | None: ...

    def write(self, version: str, profiles: Mapping[str, Mapping[str, Any]]) -> int: ...

    def switch(self, version: str) -> str | None: ...


class BatchProfiles:
    """Publishing what the batch jobs computed per customer (``tags``, ``segments``, ``scores``,
    ...) as a new version, then switching readers to it at once: a reader sees the old version
    or the new one, never half of each. The old version's keys expire after ``keep_s``.

    A version stores one string per customer, its attributes packed as one JSON object
    (:func:`packed_value`): a SET per customer instead of a DEL, an HSET and an EXPIRE. Readers
    still read a version written the way before (a hash per customer, a JSON value per field)."""

    def __init__(self, client: redis.Redis, *, keep_s: int = 86_400, batch: int = 5000) -> None:
        from runtime.redis_client import is_cluster  # imported here: this module stays free of redis

        self._redis = client
        self._keep_s = keep_s
        self._batch = batch
        self._cluster = is_cluster(client)

    def current(self) -> str | None:
        raw = self._redis.get(keys.BATCH_PROFILE_VERSION)
        return raw.decode() if isinstance(raw, bytes) else raw

    def write(self, version: str, profiles: Mapping[str, Mapping[str, Any]]) -> int:
        """Stage attributes of ``version`` (call as often as needed, then ``switch``). An invalid
        profile raises :class:`InvalidRecord` (its index in ``profiles``); the profiles before it
        may be staged already, which no reader sees until ``switch``."""
        check_version(version)
        items = list(profiles.items())
        prefix = keys.batch_profile_prefix(version)  # keys.batch_profile, its version part once
        if not self._cluster:
            self._write_runs(prefix, items)
            return len(items)
        validate_profiles(items)
        for start in range(0, len(items), self._batch):  # the keys spread over the slots: a command each
            pipe = self._redis.pipeline(transaction=False)
            self._queue_spread(pipe, prefix, items[start : start + self._batch])
            pipe.execute()
        return len(items)

    def _write_runs(self, prefix: str, items: list[tuple[str, Mapping[str, Any]]]) -> None:
        """One script run per thousand customers, one packed value each, on one connection:
        each run is sent before the reply of the one before is read, so Redis runs one while the
        next is validated and encoded (the two take about as long as each other). A reply is
        read before the next run is sent: a failure stops the write there."""
        pool = self._redis.connection_pool
        connection = pool.get_connection()
        sent = False
        try:
            for start in range(0, len(items), WRITE_CHUNK):
                part = items[start : start + WRITE_CHUNK]
                validate_profiles(part, start)
                names = [prefix + keys.part(c) for c, _ in part]
                values = [packed_value(attrs) for _, attrs in part]
                if sent:
                    connection.read_response()
                connection.send_command("EVAL", _BATCH_WRITE, len(names), *names, self._keep_s * 30, *values)
                sent = True
            if sent:
                connection.read_response()
                sent = False
        finally:
            if sent:  # a reply left unread: the connection cannot serve another command
                connection.disconnect()
            pool.release(connection)

    def _queue_spread(self, pipe: Any, prefix: str, chunk: list[tuple[str, Mapping[str, Any]]]) -> None:
        for customer, attrs in chunk:
            key = prefix + keys.part(customer)
            value = packed_value(attrs)
            if value:
                pipe.set(key, value, ex=self._keep_s * 30)
            else:
                pipe.delete(key)

    def switch(self, version: str) -> str | None:
        """Make ``version`` the one readers see; the previous one expires. Returns it."""
        check_version(version)
        previous = self.current()
        self._redis.set(keys.BATCH_PROFILE_VERSION, version)
        if previous and previous != version and VERSION_PATTERN.match(previous):
            # scan_iter: a cluster client scans every primary
            found = self._redis.scan_iter(match=keys.batch_profile_prefix(previous) + "*", count=10_000)
            for chunk in _chunks(found, 10_000):
                pipe = self._redis.pipeline(transaction=False)
                for key in chunk:
                    pipe.expire(key, self._keep_s)
                pipe.execute()
        return previous


class ProfileStore:
    """Attributes and tags per customer."""

    def __init__(self, client: redis.Redis) -> None:
        from runtime.redis_client import is_cluster  # imported here: this module stays free of redis

        self._redis = client
        self._cluster = is_cluster(client)

    def put(self, customer: str, attrs: Mapping[str, Any], *, replace: bool = False) -> int:
        """Set ``attrs`` on the customer's profile (an attribute set to ``None`` is removed);
        with ``replace`` the profile becomes exactly ``attrs``. Returns attributes written."""
        return self.put_many({customer: attrs}, replace=replace)

    def put_many(self, profiles: Mapping[str, Mapping[str, Any]], *, replace: bool = False) -> int:
        """:meth:`put` for many customers, atomically, in one round trip (one script run).
        A bad attribute raises :class:`InvalidRecord` (reason ``invalid_profile``, ``index`` =
        the customer's position) before anything is written. Returns attributes written."""
        items = list(profiles.items())
        validate_profiles(items)
        if not items:
            return 0
        if self._cluster:
            return self._put_spread(items, replace=replace)
        # one script run: atomic as the MULTI/EXEC it replaces, without a command per customer
        rows = [
            ([] if replace else [n for n, v in attrs.items() if v is None], _encoded_pairs(attrs)) for _, attrs in items
        ]
        names = [profile_key(c) for c, _ in items]  # EVAL, not EVALSHA: one round trip even the first time
        self._redis.execute_command("EVAL", _WRITE, len(names), *names, *_write_args(replace, 0, rows))
        return sum(len(pairs) // 2 for _, pairs in rows)

    def _put_spread(self, items: list[tuple[str, Mapping[str, Any]]], *, replace: bool) -> int:
        """:meth:`put_many` on a Redis Cluster: one pipeline, one atomic script per customer."""

        written = 0
        pipe = self._redis.pipeline(transaction=False)
        for customer, attrs in items:
            mapping = [(name, encode_value(stored_value(v))) for name, v in attrs.items() if v is not None]
            removed = [] if replace else [name for name, v in attrs.items() if v is None]
            args = ["1" if replace else "0", len(removed), *removed, *(x for pair in mapping for x in pair)]
            queue_script(pipe, _PUT, [profile_key(customer)], args)
            written += len(mapping)
        pipe.execute()
        return written

    def get(self, customer: str) -> dict[str, Any]:
        return self.get_many([customer])[customer]

    def get_many(self, customers: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each customer's profile (``{}`` when it has none) in one round trip: the attributes
        put here over what the current batch version computed (``BatchProfiles``), with the
        ``tags`` of both."""
        unique = list(dict.fromkeys(customers))
        if not unique:
            return {}
        if self._cluster:
            return self._get_spread(unique)
        return self.from_reply(unique, self._redis.execute_command(*self.read_command(unique)))

    def read_command(self, customers: Sequence[str]) -> list[Any]:
        """The command that reads the profiles of ``customers`` (distinct, on a single Redis),
        for a caller that pipelines it; :meth:`from_reply` reads its reply."""
        prefixes = [keys.profile(""), keys.batch_profile_prefix("")[:-1]]  # the script inserts the version
        # the script appends each customer to the prefixes: encoded as keys.profile would
        return ["EVAL", _READ, 0, keys.BATCH_PROFILE_VERSION, *prefixes, *(keys.part(c) for c in customers)]

    @staticmethod
    def from_reply(customers: Sequence[str], replies: list[Any]) -> dict[str, dict[str, Any]]:
        pairs = zip(customers, replies[0::2], replies[1::2], strict=True)
        return {customer: merge_profile(_decoded(own), _batch_decoded(batch)) for customer, own, batch in pairs}

    def _get_spread(self, unique: list[str]) -> dict[str, dict[str, Any]]:
        """:meth:`get_many` on a Redis Cluster: the batch version, then one pipeline."""
        raw = self._redis.get(keys.BATCH_PROFILE_VERSION)
        version = raw.decode() if isinstance(raw, bytes) else raw
        pipe = self._redis.pipeline(transaction=False)
        for customer in unique:
            pipe.hgetall(profile_key(customer))
            if version:  # packed, or a hash of the layout before
                queue_script(pipe, _BATCH_READ, [keys.batch_profile(version, customer)], [])
        replies = pipe.execute()
        step = 2 if version else 1
        return {
            customer: merge_profile(
                _attributes(replies[k * step]), _batch_decoded(replies[k * step + 1]) if version else {}
            )
            for k, customer in enumerate(unique)
        }

    def delete(self, customer: str) -> bool:
        """Remove the customer's profile; whether it existed."""
        return bool(self._redis.delete(profile_key(customer)))


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
