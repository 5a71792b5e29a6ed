"""WebSocket clients for `ot bench api`, run as their own process:

    python -m ot_tools.bench.wsload --port 8000 --clients 200 --duration 20

(the API key comes from `OT_BENCH_KEY`). Opens `--clients` connections to `/api/v1/stream`, each
subscribed to the state changes of every machine, and reads every frame they get. Once all are
subscribed (their snapshots read), for `--duration` seconds each machine change a client receives
is timed against the newest event time among the values it carries: the bench's producer stamps
each reading with the wall clock just before handing it to Kafka, so the latency is from the Kafka
message to the client (same machine, same clock). The result is one JSON line on stdout:
changes received, latency percentiles, frames, clients lost, and the process's own CPU share (a
run where the clients themselves were the bottleneck shows it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from ot_tools.bench.loadgen import _cpu_seconds, percentile


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    frames: int = 0
    changes: int = 0
    snapshot_machines: list[int] = field(default_factory=list)
    closed: int = 0
    retries: int = 0
    close_reasons: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


CONNECTING = 20  # clients opening at once (a server on busy cores takes them in waves)
ATTEMPTS = 3


async def client(
    url: str,
    tally: Tally,
    subscribed: asyncio.Event,
    window: list[float],
    ready: list[int],
    opening: asyncio.Semaphore,
) -> None:
    """One subscriber: the snapshot, then changes until cancelled; changes received inside the
    measuring window (`window` = [start, end] wall clock, set once all are subscribed) count."""
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed

    ws: ClientConnection | None = None
    try:
        async with opening:
            for attempt in range(ATTEMPTS):
                try:
                    ws = await connect(url, max_size=None, open_timeout=30, ping_interval=None)
                    subscribed_frame = orjson.loads(await ws.recv())
                    break
                except (OSError, TimeoutError):
                    tally.retries += 1
                    if attempt == ATTEMPTS - 1:
                        raise
            assert ws is not None
            if subscribed_frame.get("type") != "subscribed":
                raise RuntimeError(f"not subscribed: {subscribed_frame}")
            snapshot = orjson.loads(await ws.recv())
        tally.snapshot_machines.append(len(snapshot.get("machines", ())))
        ready[0] += 1
        async with ws:
            if ready[0] == ready[1]:
                subscribed.set()
            while True:
                raw = await ws.recv()
                now_ms = time.time() * 1000
                frame = orjson.loads(raw)
                if frame.get("type") != "changes":
                    continue
                tally.frames += 1
                if not window or not window[0] <= now_ms <= window[1]:
                    continue
                for change in frame["changes"]:
                    if change["type"] != "machine":
                        continue
                    values = change["data"].get("values")
                    if not values:
                        continue
                    newest = max(v["ts"] for v in values.values())
                    if newest < window[0]:  # produced before the window: warming up
                        continue
                    tally.changes += 1
                    tally.latencies_ms.append(now_ms - newest)
    except ConnectionClosed as exc:
        tally.closed += 1
        tally.close_reasons.append(str(exc)[:200])
    except (OSError, RuntimeError, TimeoutError) as exc:
        tally.errors.append(f"{type(exc).__name__}: {exc}"[:200])


async def run(port: int, key: str, clients: int, duration: float) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{port}/api/v1/stream?key={key}&alerts=false"
    tally = Tally()
    subscribed = asyncio.Event()
    window: list[float] = []
    ready = [0, clients]
    opening = asyncio.Semaphore(CONNECTING)
    tasks = [
        asyncio.create_task(client(url, tally, subscribed, window, ready, opening))
        for _ in range(clients)
    ]
    started = time.perf_counter()
    try:
        async with asyncio.timeout(300):
            await subscribed.wait()
    except TimeoutError:
        for t in tasks:
            t.cancel()
        raise RuntimeError(
            f"{ready[0]} of {clients} clients subscribed: {tally.errors[:3]}"
        ) from None
    connect_s = time.perf_counter() - started
    await asyncio.sleep(1.0)  # settle: the snapshots' followers catch up
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    now = time.time() * 1000
    window += [now, now + duration * 1000]
    print(json.dumps({"event": "measuring"}), flush=True)  # the bench samples the server's CPU
    await asyncio.sleep(duration + 1.0)  # and a second for the last readings to arrive
    print(json.dumps({"event": "measured"}), flush=True)
    wall = time.perf_counter() - wall0
    cpu = _cpu_seconds() - cpu0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = sorted(tally.latencies_ms)
    return {
        "clients": clients,
        "duration_s": duration,
        "connect_s": round(connect_s, 2),
        "snapshot_machines_min": min(tally.snapshot_machines, default=0),
        "changes": tally.changes,
        "changes_per_s": round(tally.changes / duration),
        "frames": tally.frames,
        "p50_ms": round(percentile(lat, 50), 1),
        "p90_ms": round(percentile(lat, 90), 1),
        "p99_ms": round(percentile(lat, 99), 1),
        "max_ms": round(lat[-1], 1) if lat else 0.0,
        "closed": tally.closed,
        "connect_retries": tally.retries,
        "first_close_reasons": sorted(set(tally.close_reasons))[:3],
        "errors": len(tally.errors),
        "first_errors": tally.errors[:3],
        "clients_cpu_pct": round(100 * cpu / wall, 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ot_tools.bench.wsload", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, required=True, help="seconds measured")
    args = parser.parse_args(argv)
    key = os.environ["OT_BENCH_KEY"]
    import uvloop

    summary = uvloop.run(run(args.port, key, args.clients, args.duration))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
