"""Open-loop HTTP load generator for `ot bench gateway` and `ot bench api`, run as its own
process:

    python -m ot_tools.bench.loadgen --port 8000 --rate 2000 --duration 20 [--batch 100]
    python -m ot_tools.bench.loadgen --port 8000 --rate 500 --duration 20 --get /api/v1/machines

(the API key comes from `OT_BENCH_KEY`). With `--get PATH` (repeatable: the paths in turn) it
sends GET requests instead of webhook readings. Requests leave at a fixed arrival rate whatever the
server does (open loop, unlike wrk): request i is due at `start + i / rate`, and its latency is
measured from that due time, not from when a connection was free, so a server that falls behind
shows it in the latency instead of silently lowering the offered rate (coordinated omission).

HTTP/1.1 keep-alive over raw asyncio streams on uvloop, a pool of connections that grows as
requests overlap (up to `--connections`); the bodies are rendered from a byte template per
request (fresh `event_id`s, `ts` fixed at start). It reports its own CPU time and how late it
sent requests, so a run where the generator itself was the bottleneck is visible as such. The
result is one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

PATH = "/webhook/sensor-data"
MACHINES = 50
METRICS = (("temperature", "°C"), ("vibration", "mm/s"), ("pressure", "bar"), ("current", "A"))


def reading_template(machine: int, metric: int, ts_ms: int) -> bytes:
    """One reading of the event contract with `%d` slots for the sequence number (twice: in
    `event_id` and in `seq`), so a request's body costs one bytes format per reading."""
    name, unit = METRICS[metric % len(METRICS)]
    machine_id = f"bench-{machine:03d}-{name}"
    fields = {
        "event_id": f"{machine_id}:SEQ",
        "machine_id": machine_id,
        "machine_type": "MOTOR",
        "line_id": f"line-{machine % 4}",
        "metric": name,
        "unit": unit,
        "value": 40.0 + machine % 17,
        "ts": ts_ms,
        "seq": 0,
        "status_code": 0,
        "quality": "GOOD",
    }
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("%", "%%").replace(":SEQ", ":%d").replace('"seq":0', '"seq":%d')
    return text.encode()


class Bodies:
    """Request bodies: `batch` readings (a JSON object when 1, else an array), each with a seq
    number never used before by this generator (offset by `seq_base`)."""

    def __init__(self, batch: int, ts_ms: int, seq_base: int = 0) -> None:
        self.batch = batch
        self.templates = [
            reading_template(m, k, ts_ms) for m in range(MACHINES) for k in range(len(METRICS))
        ]
        self.seq = seq_base

    def next(self) -> bytes:
        parts = []
        for _ in range(self.batch):
            self.seq += 1
            template = self.templates[self.seq % len(self.templates)]
            parts.append(template % (self.seq, self.seq))
        if self.batch == 1:
            return parts[0]
        return b"[" + b",".join(parts) + b"]"


def request_bytes(port: int, key: str, body: bytes) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def get_bytes(port: int, key: str, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {key}\r\n\r\n").encode()


def parse_head(head: bytes) -> tuple[int, int]:
    """(status, content length) of an HTTP/1.1 response head (up to the blank line)."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, length


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100); 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100), at least 1
    return sorted_values[int(rank) - 1]


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0
    timeouts: int = 0
    accepted: int = 0
    max_lag_ms: float = 0.0
    connections: int = 0
    last_done: float = 0.0
    response_bytes: int = 0

    def summary(
        self, rate: float, duration: float, batch: int, sent: int, started: float
    ) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        ok = sum(n for s, n in self.statuses.items() if 200 <= s < 300)
        errors = sent - ok
        span = max(1e-9, self.last_done - started)
        return {
            "offered_requests_per_s": rate,
            "offered_readings_per_s": rate * batch,
            "batch": batch,
            "duration_s": duration,
            "sent": sent,
            "ok": ok,
            "errors": errors,
            "error_rate": round(errors / sent, 6) if sent else 0.0,
            "statuses": {str(s): n for s, n in sorted(self.statuses.items())},
            "connection_errors": self.connection_errors,
            "timeouts": self.timeouts,
            "accepted_readings": self.accepted,
            "accepted_readings_per_s": round(self.accepted / span),
            "p50_ms": round(percentile(lat, 50), 2),
            "p90_ms": round(percentile(lat, 90), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(lat[-1], 2) if lat else 0.0,
            "connections": self.connections,
            "max_send_lag_ms": round(self.max_lag_ms, 2),
            "mean_response_bytes": round(self.response_bytes / ok) if ok else 0,
        }


# uvicorn closes a keep-alive connection idle for 5 s: one idle this long is not reused (a
# request written into a connection the server is closing would fail without the server's fault).
MAX_IDLE_S = 3.0

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Pool:
    """Idle keep-alive connections, most recently used first; a new one is opened when none is
    idle (up to `limit`)."""

    def __init__(self, port: int, limit: int, tally: Tally) -> None:
        self.port = port
        self.idle: list[tuple[Conn, float]] = []
        self.free = asyncio.Semaphore(limit)
        self.tally = tally

    async def get(self) -> Conn:
        await self.free.acquire()
        now = time.monotonic()
        while self.idle:
            conn, since = self.idle.pop()
            if now - since < MAX_IDLE_S and not conn[0].at_eof():
                return conn
            conn[1].close()
        try:
            conn = await asyncio.open_connection("127.0.0.1", self.port)
        except BaseException:
            self.free.release()
            raise
        self.tally.connections += 1
        return conn

    def put(self, conn: Conn | None) -> None:
        if conn is not None:
            self.idle.append((conn, time.monotonic()))
        self.free.release()


async def _one(pool: Pool, payload: bytes, due: float, timeout: float, tally: Tally) -> None:
    conn = None
    try:
        async with asyncio.timeout(timeout):
            conn = await pool.get()
            reader, writer = conn
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length = parse_head(head)
            body = await reader.readexactly(length) if length else b""
    except TimeoutError:
        tally.timeouts += 1
        _drop(pool, conn)
        return
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        tally.connection_errors += 1
        _drop(pool, conn)
        return
    done = time.perf_counter()
    tally.last_done = max(tally.last_done, done)
    tally.latencies_ms.append((done - due) * 1000)
    tally.statuses[status] += 1
    tally.response_bytes += len(body)
    if status == 202:
        tally.accepted += int(orjson.loads(body)["accepted"])
    pool.put(conn)


def _drop(pool: Pool, conn: Conn | None) -> None:
    if conn is not None:
        conn[1].close()
        pool.put(None)
    # a connection that never opened already gave its slot back in Pool.get


async def run(
    port: int,
    key: str,
    rate: float,
    duration: float,
    batch: int,
    connections: int,
    timeout: float,
    seq_base: int,
    paths: list[str] | None = None,
) -> dict[str, Any]:
    """Send for `duration` s at `rate` requests/s: webhook readings (`batch` per request), or
    GETs of `paths` in turn when given."""
    tally = Tally()
    gets = [get_bytes(port, key, p) for p in paths or ()]
    pool = Pool(port, connections, tally)
    bodies = Bodies(batch, int(time.time() * 1000), seq_base)
    total = int(rate * duration)
    tasks: set[asyncio.Task[None]] = set()
    cpu0 = _cpu_seconds()
    started = time.perf_counter()
    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            tally.max_lag_ms = max(tally.max_lag_ms, -delay * 1000)
        payload = gets[i % len(gets)] if gets else request_bytes(port, key, bodies.next())
        task = asyncio.create_task(_one(pool, payload, due, timeout, tally))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    wall = time.perf_counter() - started
    summary = tally.summary(rate, duration, batch, total, started)
    summary["generator_cpu_pct"] = round(100 * (_cpu_seconds() - cpu0) / wall, 1)
    for (_, writer), _since in pool.idle:
        writer.close()
    return summary


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ot_tools.bench.loadgen", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds of sending")
    parser.add_argument("--batch", type=int, default=1, help="readings per request")
    parser.add_argument("--connections", type=int, default=512, help="most open at once")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--seq-base", type=int, default=0, help="first seq number - 1")
    parser.add_argument(
        "--get", action="append", metavar="PATH", help="GET this path (repeatable: in turn)"
    )
    args = parser.parse_args(argv)
    key = os.environ["OT_BENCH_KEY"]
    import uvloop

    summary = uvloop.run(
        run(
            args.port,
            key,
            args.rate,
            args.duration,
            args.batch,
            args.connections,
            args.timeout,
            args.seq_base,
            args.get,
        )
    )
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
