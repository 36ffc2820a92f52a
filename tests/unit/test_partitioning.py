"""runtime.log.partitioning: virtual partition = crc32(customer id) mod P, and assignment to actors."""

from __future__ import annotations

import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.log.partitioning import assign, partition_of

# CRC-32 (IEEE) of b"123456789" is the standard check value 0xCBF43926 = 3421780262.
CHECK = 0xCBF43926


@pytest.mark.parametrize("partitions", [1, 2, 64, 256, 1000, 2**32])
def test_partition_is_crc32_mod_p(partitions):
    assert partition_of("123456789", partitions) == CHECK % partitions


def test_known_values():
    assert partition_of("123456789", 64) == 38  # 0x...26
    assert partition_of("123456789", 1000) == 262
    assert partition_of("", 64) == 0  # crc32(b"") == 0


def test_customer_id_is_hashed_as_utf8():
    assert partition_of("张", 2**32) == zlib.crc32(b"\xe5\xbc\xa0")  # "张" in UTF-8


def test_stable_across_processes_and_hash_seeds():
    customers = ["13800138000", "cust-42", "imei:356938035643809", "张三"]
    here = [partition_of(c, 256) for c in customers]
    code = f"from runtime.log.partitioning import partition_of; print([partition_of(c, 256) for c in {customers!r}])"
    for seed in ("0", "12345"):
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            cwd=Path(__file__).resolve().parents[2],
        )
        assert result.stdout.strip() == str(here)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.integers(1, 4096))
def test_partition_in_range(customer, partitions):
    assert 0 <= partition_of(customer, partitions) < partitions


def test_spread_over_64_partitions_is_even():
    counts = Counter(partition_of(f"1380013{i:04d}", 64) for i in range(10_000))
    assert len(counts) == 64
    # expected 156.25 per partition; crc32 over sequential phone numbers stays within +-40%
    assert min(counts.values()) > 94 and max(counts.values()) < 219


def test_assign_round_robin():
    assert assign(8, 3) == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert assign(4, 1) == [[0, 1, 2, 3]]
    assert assign(2, 4) == [[0], [1], [], []]
    assert assign(0, 2) == [[], []]


@pytest.mark.parametrize("actors", [0, -1])
def test_assign_needs_an_actor(actors):
    with pytest.raises(ValueError, match=str(actors)):
        assign(64, actors)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 512), st.integers(1, 40))
def test_assign_covers_every_partition_once_and_evenly(partitions, actors):
    owned = assign(partitions, actors)
    assert len(owned) == actors
    flat = sorted(p for ps in owned for p in ps)
    assert flat == list(range(partitions))
    sizes = [len(ps) for ps in owned]
    assert max(sizes) - min(sizes) <= 1
    assert all(ps == sorted(ps) for ps in owned)
