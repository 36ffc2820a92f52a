"""Which TCP addresses the processes a test started listen on, read from ``/proc`` (Linux), so
a test can prove that nothing ESP starts is reachable from another host."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

LISTEN = "0A"  # TCP_LISTEN in the "st" column of /proc/net/tcp
PR_SET_CHILD_SUBREAPER = 36


@contextmanager
def subreaper() -> Iterator[None]:
    """While active, processes orphaned below this one (daemons that ``ray start`` or ``esp up``
    leave behind when they exit) are re-parented to it, so they stay in its process tree."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    return children


def descendants(root: int, *, skip: set[int] = frozenset()) -> set[int]:  # type: ignore[assignment]
    """Every process below ``root``, leaving out the subtrees of the pids in ``skip`` (what was
    running before the test started its own)."""
    children, found, todo = _children(), set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in skip:
                found.add(child)
                todo.append(child)
    return found


def kill_all(pids: set[int], timeout_s: float = 15.0) -> None:
    """SIGKILL the processes and reap those that are (or become, as their parents die) ours."""
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            with suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not Path(f"/proc/{pid}").exists():
                alive.discard(pid)
        time.sleep(0.05)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with suppress(OSError):
        for fd in (Path("/proc") / str(pid) / "fd").iterdir():
            with suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _address(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # /proc prints each 32-bit word in host (little-endian) order
    ip = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
    return str(getattr(ip, "ipv4_mapped", None) or ip), int(port, 16)


def listening(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state the given processes hold."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN and fields[9] in owner:
                found.append((owner[fields[9]], *_address(fields[1])))
    return sorted(found)


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback
