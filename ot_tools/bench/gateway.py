"""Webhook gateway benchmark (`ot bench gateway`): the real `ot api` (uvicorn, as `make run`
starts it) against the real Kafka, loaded at fixed arrival rates by the open-loop generator
`ot_tools.bench.loadgen` running as a separate process.

For one server process, then for `--workers 2`:

- single-reading requests at 100, 500, 1,000 and 2,000 readings/s: p50/p99 latency (from each
  request's due time) and error rate (non-2xx, connection errors, timeouts); all must be 0;
- batched requests (100 readings each) at increasing rates until a step fails (errors, less
  than 97 % of the offered readings accepted in time, or a p99 over a second): the sustained
  accepted readings/s is the best passing step's.

Rate limits stay on (one Redis bucket pair for the bench's key, as in production) but are set far
above the offered load (`BENCH_LIMITS`), so the limiter's cost is measured, never its refusals.
Every 202'd reading is checked against Kafka: the bench topic's offsets must equal the sum of the
`accepted` counts (nothing acknowledged is missing, nothing is there twice).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from ot_tools import drills
from streaming.api.keys import Role, new_key
from streaming.settings import Settings, Topics
from streaming.stack.topics import create_topics, delete_topics

SINGLE_RATES = (100, 500, 1_000, 2_000)
BATCH = 100
BATCH_RATES = (200, 300, 400, 500, 600, 700, 800)  # requests/s of 100 readings
TARGET_READINGS_PER_S = 50_000
KEEP_UP = 0.97  # a batch step passes when this share of its offered readings was accepted ...
MAX_P99_MS = 1_000.0  # ... with a p99 latency under a second
# High enough never to refuse the bench's load; the limiter still runs on every request.
BENCH_LIMITS = {"OT_API_RATE_REQUESTS": "100000", "OT_API_RATE_READINGS": "10000000"}


API = (sys.executable, "-m", "streaming.cli", "api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its descendants, from /proc."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


class ApiServer:
    """`ot api --workers N` on a free port, in its own process group, with the bench's key (of
    `role`) and `env` added to the settings' environment."""

    def __init__(
        self,
        settings: Settings,
        workers: int,
        log: Path,
        role: Role = Role.INGEST,
        env: dict[str, str] | None = None,
    ) -> None:
        self.secret, key = new_key("bench", role)
        self.port = free_port()
        env = {
            **drills.child_env(settings),
            "OT_API_KEYS": key.entry,
            **BENCH_LIMITS,
            **(env or {}),
        }
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [*API, "--port", str(self.port), "--workers", str(workers)],
                env=env,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        self._wait_healthy(log)

    def _wait_healthy(self, log: Path) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ot api did not start: {log.read_text()[-1000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def load(
    server: ApiServer,
    rate: float,
    duration: float,
    batch: int,
    seq_base: int,
    gets: list[str] | None = None,
) -> dict[str, Any]:
    """One open-loop run of the generator process (webhook readings, or GETs of `gets` in
    turn); its summary plus the server's CPU share."""
    args = ["--port", str(server.port), "--rate", str(rate), "--duration", str(duration)]
    args += ["--batch", str(batch), "--seq-base", str(seq_base)]
    for path in gets or ():
        args += ["--get", path]
    cpu0, t0 = cpu_seconds(server.proc.pid), time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ot_tools.bench.loadgen", *args],
        env={**os.environ, "OT_BENCH_KEY": server.secret},
        capture_output=True,
        text=True,
        timeout=duration + 120,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"load generator exited {done.returncode}: {done.stderr[-500:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = cpu_seconds(server.proc.pid) - cpu0
    summary["server_cpu_pct"] = round(100 * cpu / wall, 1)
    summary["server_cpu_s"] = round(cpu, 3)
    return summary


def kafka_messages(settings: Settings, topic: str) -> int:
    return sum(high - low for low, high in drills.watermarks(settings, topic).values())


def passed(step: dict[str, Any]) -> bool:
    """Kept up: no error, the offered readings accepted in time, and no queue building up (a
    server that falls behind shows it in its p99 long before it refuses anything)."""
    kept_up = step["accepted_readings_per_s"] >= KEEP_UP * step["offered_readings_per_s"]
    return step["errors"] == 0 and kept_up and step["p99_ms"] <= MAX_P99_MS


def run_server(settings: Settings, workers: int, quick: bool, log: Path) -> dict[str, Any]:
    """Every step against one server; figures prefixed `w{workers}_`."""
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(
        readings=f"bench-api-{suffix}",
        dlq=f"bench-api-{suffix}.dlq",
        alerts=f"bench-api-alerts-{suffix}",
        faults=f"bench-api-faults-{suffix}",
    )
    create_topics(settings.kafka_bootstrap_servers, topics, readings_partitions=6)
    bench = replace(settings, topics=topics, redis_prefix=f"bench-api-{suffix}:")
    single_s, batch_s = (4.0, 4.0) if quick else (20.0, 10.0)
    out: dict[str, Any] = {}
    accepted = seq = 0
    steps: list[dict[str, Any]] = []
    try:
        server = ApiServer(bench, workers, log)
        try:
            warm = load(server, 100, 2.0, 1, seq_base=10**12)  # connections, caches, metadata
            accepted += warm["accepted_readings"]
            for rate in SINGLE_RATES:
                step = load(server, rate, single_s, 1, seq)
                seq += step["sent"]
                accepted += step["accepted_readings"]
                steps.append(step)
                p = f"w{workers}_single_{rate}"
                out[f"{p}_p50_ms"] = step["p50_ms"]
                out[f"{p}_p99_ms"] = step["p99_ms"]
                out[f"{p}_error_rate"] = step["error_rate"]
                out[f"{p}_server_cpu_pct"] = step["server_cpu_pct"]
                out[f"{p}_generator_cpu_pct"] = step["generator_cpu_pct"]
                out[f"{p}_send_lag_ms"] = step["max_send_lag_ms"]
            best = 0
            for rate in BATCH_RATES:
                step = load(server, rate, batch_s, BATCH, seq)
                seq += step["sent"] * BATCH
                accepted += step["accepted_readings"]
                steps.append(step)
                p = f"w{workers}_batch_{rate * BATCH}"
                out[f"{p}_accepted_per_s"] = step["accepted_readings_per_s"]
                out[f"{p}_p50_ms"] = step["p50_ms"]
                out[f"{p}_p99_ms"] = step["p99_ms"]
                out[f"{p}_errors"] = step["errors"]
                out[f"{p}_server_cpu_pct"] = step["server_cpu_pct"]
                out[f"{p}_generator_cpu_pct"] = step["generator_cpu_pct"]
                out[f"{p}_send_lag_ms"] = step["max_send_lag_ms"]
                if not passed(step):
                    break
                best = max(best, step["accepted_readings_per_s"])
            out[f"w{workers}_batch_sustained_readings_per_s"] = best
        finally:
            server.stop()
        in_kafka = kafka_messages(bench, topics.readings)
        out[f"w{workers}_accepted_readings"] = accepted
        out[f"w{workers}_in_kafka"] = in_kafka
        if in_kafka != accepted:
            raise RuntimeError(f"{workers} worker(s): {accepted} accepted but {in_kafka} in Kafka")
        out[f"w{workers}_single_errors"] = sum(s["errors"] for s in steps if s["batch"] == 1)
        out[f"w{workers}_non_2xx"] = sum(
            n for s in steps for code, n in s["statuses"].items() if not code.startswith("2")
        )
        out[f"w{workers}_connection_errors"] = sum(s["connection_errors"] for s in steps)
        out[f"w{workers}_timeouts"] = sum(s["timeouts"] for s in steps)
    finally:
        delete_topics(settings.kafka_bootstrap_servers, topics.all())
    return out


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    log = Path(os.environ.get("OT_BENCH_API_LOG", os.devnull))
    figures: dict[str, Any] = {"load_avg_1m_start": round(os.getloadavg()[0], 2)}
    for workers in (1, 2):
        figures |= run_server(settings, workers, quick, log)
    figures["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    figures["rate_limits"] = "on: 100000 requests/s, 10000000 readings/s per key"
    figures["target_batch_readings_per_s"] = TARGET_READINGS_PER_S
    return figures
