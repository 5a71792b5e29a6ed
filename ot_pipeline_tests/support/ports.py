"""Free loopback ports for the servers a test starts.

They come from below the kernel's ephemeral range: a port the kernel hands out for `bind(0)` is
an ephemeral one, and any outgoing connection of the test run may take it (or a neighbour a
broker needs, such as its controller port) before the server binds. Seen here: a three-broker
cluster whose second broker could not bind.

A port is handed out once per test run: a server of an earlier test that is down when a port is
picked (stopped by its test, restarting) may come back on its own port later. Seen here: `make
start` refused a Kafka port that a test stack's PostgreSQL held by then.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 20_000  # above the local stack's defaults (11883 ... 19192)
_GIVEN: set[int] = set()  # ports handed out in this run


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_base_port(offsets: tuple[int, ...] = (0,)) -> int:
    """A port `p` such that every `p + offset` is free and outside the ephemeral range."""
    high = _ephemeral_start() - 1 - max(offsets)
    pick = random.SystemRandom()
    for _ in range(500):
        base = pick.randint(LOWEST, high)
        ports = {base + o for o in offsets}
        if not ports & _GIVEN and all(_bindable(p) for p in ports):
            _GIVEN.update(ports)
            return base
    raise AssertionError(f"no free ports at offsets {offsets} in {LOWEST}..{high}")


def free_port() -> int:
    return free_base_port()
