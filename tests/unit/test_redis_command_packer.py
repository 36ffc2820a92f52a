"""ESP's command packer must put on the wire exactly the bytes redis-py's own packer does, for
every argument type redis-py accepts, and refuse what redis-py refuses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.connection import Connection
from redis.exceptions import DataError

from runtime.redis_client import CommandPacker

ARGUMENT = st.one_of(
    st.text(),
    st.binary(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.binary().map(bytearray),
    st.binary().map(memoryview),
)
NAME = st.sampled_from(["SET", "EVAL", "CLIENT SETNAME", b"SCRIPT LOAD", b"XADD", "HSET"])


def reference(*args: object) -> bytes:
    return b"".join(bytes(chunk) for chunk in Connection().pack_command(*args))


@settings(max_examples=400, deadline=None)
@given(NAME, st.lists(ARGUMENT, max_size=12))
def test_the_same_bytes_as_redis_py(name: object, args: list[object]) -> None:
    packed = CommandPacker().pack(name, *args)
    assert b"".join(bytes(chunk) for chunk in packed) == reference(name, *args)


@pytest.mark.parametrize("value", [True, None, object(), [1]])
def test_what_redis_py_refuses_is_refused(value: object) -> None:
    with pytest.raises(DataError):
        CommandPacker().pack("SET", "key", value)
    with pytest.raises(DataError):
        Connection().pack_command("SET", "key", value)


def test_clients_made_by_connect_use_it(redis_server) -> None:
    from runtime.redis_client import connect

    client = connect(redis_server.url)
    client.set("packed", "é" * 3)
    pipe = client.pipeline(transaction=False)
    pipe.hset("h", mapping={"a": 1.5, "b": 10**20})
    pipe.hgetall("h")
    assert pipe.execute()[1] == {b"a": b"1.5", b"b": b"100000000000000000000"}
    assert client.get("packed") == "é".encode() * 3
    connection = client.connection_pool.get_connection()
    try:
        assert isinstance(connection._command_packer, CommandPacker)
    finally:
        client.connection_pool.release(connection)
