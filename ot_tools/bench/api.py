"""Operator API benchmark (`ot bench api`): the real `ot api` (uvicorn, one process, as `make run`
starts it) over a live plant, loaded from other processes at fixed arrival rates.

The plant: 500 machines (5 metrics each) produced to Kafka and applied by a real `ot state`
(child process), then every machine sends one reading a second for the whole run (a background
producer stamps each reading's event time with the wall clock as it hands it to Kafka). For the
history, 24 h of one fleet's readings (`HISTORY_MACHINES` machines, every metric every 10 s) are
landed in a temporary lake and their 1-minute rollups loaded into PostgreSQL for every ended hour,
as the pipeline would; the current hour is read from the lake.

Steps, each measured by its own generator process against the same server:

- `GET /api/v1/machines?limit=1000` (all 500) at 500 requests/s, open loop (`loadgen`);
- `GET /api/v1/machines/{id}` over the 500 machines in turn at 500 requests/s;
- `GET .../history?metric=temperature&from=now-24h&to=now` (resolution auto: 1,440 one-minute
  points, 23 h from PostgreSQL, the current hour from the lake) at `HISTORY_RATE` requests/s;
- 200 WebSocket clients subscribed to every machine (`wsload`): latency from the Kafka message to
  each client, p50/p99, while the 500 machines update at 1 Hz.

Targets (issue 12): p99 <= 20 ms for the list and the machine state, <= 100 ms for the history,
<= 1 s for the stream. Every step reports the `ot api` process's CPU share (100 % = one core) and
the generator's, and the state writer's CPU during the stream step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import redis
from confluent_kafka import Producer

from ot_tools import drills
from ot_tools.bench.gateway import ApiServer, cpu_seconds, load
from ot_tools.synthetic_landing import land, synthetic_readings
from streaming.api.keys import Role
from streaming.events import encode_avro_many, event_id_for
from streaming.kafka.config import producer_config
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings, Topics
from streaming.stack.topics import create_topics, delete_topics

MACHINES = 500
RATE = 500  # requests/s for the list and the machine state
HISTORY_RATE = 20
HISTORY_MACHINES = 50
CLIENTS = 200
TARGET_P99_MS = {"list": 20.0, "state": 20.0, "history": 100.0, "stream": 1000.0}
METRICS = (
    ("temperature", "°C", 60.0),
    ("vibration", "mm/s", 3.0),
    ("pressure", "bar", 5.0),
    ("current", "A", 20.0),
    ("rpm", "rpm", 1500.0),
)
TYPES = ("MOTOR", "PUMP", "TANK", "PCB", "SENSOR")


def machine_id(i: int) -> str:
    return f"m-{i:04d}"


class Plant:
    """A producer thread: every machine's every metric once, then one reading per machine per
    second (metrics in turn), each stamped with the wall clock when it is produced."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topics.readings
        self.producer = Producer(producer_config(settings, **{"linger.ms": 5}))
        self.stop = threading.Event()
        self.seq = 0
        self.produced = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="bench-plant", daemon=True)

    def _record(self, i: int, metric: int, value_scale: float) -> dict[str, Any]:
        name, unit, base = METRICS[metric % len(METRICS)]
        self.seq += 1
        machine = machine_id(i)
        return {
            "event_id": event_id_for(machine, self.seq),
            "machine_id": machine,
            "machine_type": TYPES[i % len(TYPES)],
            "line_id": f"line-{i % 10}",
            "metric": name,
            "unit": unit,
            "value": base * value_scale,
            "ts": int(time.time() * 1000),
            "seq": self.seq,
            "status_code": 0,
            "quality": "GOOD",
        }

    def _send(self, records: list[dict[str, Any]]) -> None:
        for r, value in zip(records, encode_avro_many(records), strict=True):
            self.producer.produce(self.topic, value=value, key=r["machine_id"].encode())
            self.produced += 1
        self.producer.poll(0)

    def fill(self) -> None:
        self._send([self._record(i, k, 1.0) for i in range(MACHINES) for k in range(len(METRICS))])
        if self.producer.flush(30):
            raise RuntimeError("bench plant: readings not acknowledged by Kafka")

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        # 1 Hz per machine, spread over the second in 20 slices of 25 machines: the stamp is
        # taken as each slice is produced, so a reading's latency starts when it goes to Kafka.
        slices = 20
        per = MACHINES // slices
        tick = 0
        started = time.monotonic()
        try:
            while not self.stop.is_set():
                part = tick % slices
                second = tick // slices
                scale = 1.0 + 0.01 * ((second + part) % 5)
                self._send(
                    [self._record(i, second, scale) for i in range(part * per, (part + 1) * per)]
                )
                tick += 1
                delay = started + tick / slices - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
        except BaseException as exc:  # surfaced by close()
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(10)
        self.producer.flush(10)
        if self.error is not None:
            raise RuntimeError(f"bench plant failed: {self.error}") from self.error


def history_data(settings: Settings, now: datetime) -> tuple[int, int]:
    """24 h (and a bit) of readings landed in the bench's lake; the 1-minute rollups of every
    ended hour loaded into its PostgreSQL schema. Returns (landed rows, rollup rows)."""
    from ot_pipeline.transforms.windows import tumbling_windows
    from ot_pipeline.warehouse import Warehouse
    from streaming.lake import Lake

    start = (now - timedelta(hours=25)).replace(minute=0, second=0, microsecond=0)
    hours = (now - start).total_seconds() / 3600
    frame = synthetic_readings(start, hours, HISTORY_MACHINES, interval_s=10.0)
    frame = frame.filter(pl.col("ts") < now)
    land(Lake(settings.lake_dir), frame, partitions=6, file_rows=100_000)
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    ended = frame.filter(pl.col("ts") < current_hour)
    windows = tumbling_windows(ended, "1m", "15m")
    warehouse = Warehouse(settings.pg_dsn, settings.pg_schema)
    warehouse.ensure_schema()
    loaded = warehouse.replace_range("readings_1m", start, current_hour, windows)
    return frame.height, loaded.rows


def wait_machines(settings: Settings, count: int, timeout_s: float = 60) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    key = RedisKeys(settings.redis_prefix).machines
    deadline = time.monotonic() + timeout_s
    while client.zcard(key) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"state writer applied {client.zcard(key)} of {count} machines")
        time.sleep(0.2)


def step_figures(name: str, step: dict[str, Any]) -> dict[str, Any]:
    keys = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "error_rate", "server_cpu_pct")
    out = {f"{name}_{k}": step[k] for k in keys}
    out[f"{name}_served_per_s"] = round(step["ok"] / step["duration_s"])
    out[f"{name}_generator_cpu_pct"] = step["generator_cpu_pct"]
    out[f"{name}_send_lag_ms"] = step["max_send_lag_ms"]
    out[f"{name}_bytes"] = step["mean_response_bytes"]
    # CPU time of the server per answer: what it costs whatever else shares the cores.
    out[f"{name}_server_cpu_ms_per_request"] = round(
        1000 * step["server_cpu_s"] / max(1, step["ok"]), 3
    )
    out[f"{name}_target_met"] = step["errors"] == 0 and step["p99_ms"] <= TARGET_P99_MS[name]
    return out


def stream_step(server: ApiServer, state_pid: int, clients: int, duration: float) -> dict[str, Any]:
    """The WebSocket clients' process; the server's and the state writer's CPU are sampled over
    its measuring window (it says when on stdout)."""
    command = [sys.executable, "-m", "ot_tools.bench.wsload", "--port", str(server.port)]
    command += ["--clients", str(clients), "--duration", str(duration)]
    proc = subprocess.Popen(
        command,
        env={**os.environ, "OT_BENCH_KEY": server.secret},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    marks: dict[str, tuple[float, float, float]] = {}
    last = ""
    for line in proc.stdout:
        last = line
        event = json.loads(line).get("event")
        if event in ("measuring", "measured"):
            marks[event] = (
                time.perf_counter(),
                cpu_seconds(server.proc.pid),
                cpu_seconds(state_pid),
            )
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0 or len(marks) != 2:
        raise RuntimeError(f"WebSocket clients exited {proc.returncode}: {err[-800:]}")
    s: dict[str, Any] = json.loads(last)
    (t0, api0, sw0), (t1, api1, sw1) = marks["measuring"], marks["measured"]
    return {
        "stream_clients": s["clients"],
        "stream_connect_s": s["connect_s"],
        "stream_snapshot_machines_min": s["snapshot_machines_min"],
        "stream_changes_per_s": s["changes_per_s"],
        "stream_frames": s["frames"],
        "stream_p50_ms": s["p50_ms"],
        "stream_p90_ms": s["p90_ms"],
        "stream_p99_ms": s["p99_ms"],
        "stream_max_ms": s["max_ms"],
        "stream_clients_closed": s["closed"],
        "stream_connect_retries": s["connect_retries"],
        "stream_close_reasons": s["first_close_reasons"],
        "stream_errors": s["errors"],
        "stream_server_cpu_pct": round(100 * (api1 - api0) / (t1 - t0), 1),
        "stream_server_cpu_us_per_change": round(1e6 * (api1 - api0) / max(1, s["changes"]), 1),
        "stream_state_writer_cpu_pct": round(100 * (sw1 - sw0) / (t1 - t0), 1),
        "stream_clients_cpu_pct": s["clients_cpu_pct"],
        "stream_target_met": s["errors"] == 0
        and s["closed"] == 0
        and s["changes"] > 0
        and s["p99_ms"] <= TARGET_P99_MS["stream"],
    }


def fanout_cost(subscribers: int = CLIENTS, batches: int = 400) -> dict[str, Any]:
    """In process, no sockets: CPU per offered change of `ChangeFeed.dispatch` to `subscribers`
    watching every machine, state-writer batches of 25 machine changes, every subscriber taking
    its changes and building its frame after each batch (clients keeping up)."""
    import orjson

    from streaming.api.fanout import ChangeFeed, Selection, Subscriber
    from streaming.api.stream import changes_frame
    from streaming.change_feed import machines_entry
    from streaming.kafka.lifecycle import JsonLog

    feed = ChangeFeed(None, "bench", JsonLog("bench"))  # type: ignore[arg-type]  # never reads
    subs = [Subscriber(Selection()) for _ in range(subscribers)]
    for sub in subs:
        feed.add(sub)
        sub.caught_up(feed.position)
    entries: list[dict[bytes, bytes]] = []
    for b in range(batches):
        changes = [
            {
                "machine_id": machine_id((b * 25 + i) % MACHINES),
                "line_id": "line-1",
                "last_seen": b,
                "values": {"temperature": {"value": 60.0 + i, "ts": b}},
            }
            for i in range(25)
        ]
        fields = machines_entry(orjson.dumps(changes))
        entries.append(
            {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
        )
    started = time.process_time()
    for b, entry in enumerate(entries):
        feed.dispatch([(f"{b + 1}-0".encode(), entry)])
        for sub in subs:
            items, position = sub.take()
            changes_frame(items, position)
    cpu = time.process_time() - started
    return {"fanout_us_per_change": round(1e6 * cpu / (batches * 25 * subscribers), 2)}


def escalation_cost(settings: Settings, open_alerts: int = 10_000) -> dict[str, Any]:
    """One escalation tick with `open_alerts` open and none due (median of 20), on the bench's
    Redis prefix: what the state writer's timer costs Redis every second."""
    import statistics

    from streaming.alert_lifecycle import AlertScripts, opened_record

    client = redis.Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.redis_prefix + "escalation:")
    scripts = AlertScripts(client, keys, 1000)
    t0 = int(time.time() * 1000)
    with client.pipeline(transaction=False) as pipe:
        for i in range(open_alerts):
            event = {
                "alert_id": f"pressure_hard|{machine_id(i)}|pressure|{i % 6}|{i}",
                "rule": "pressure_hard",
                "machine_id": machine_id(i),
                "metric": "pressure",
                "severity": "HIGH",
                "value": 45.0,
                "threshold": 40.0,
                "opened_ms": t0,
                "kafka_partition": i % 6,
                "event": "opened",
            }
            scripts.open(
                opened_record(event, line_id="line-1", manual_clear=False, now_ms=t0), pipe
            )
        pipe.execute()
    ticks = []
    for _ in range(21):
        started = time.perf_counter()
        scripts.escalate(t0 + 1000, 900_000, list(range(6)))
        ticks.append(time.perf_counter() - started)
    return {
        "escalation_open_alerts": open_alerts,
        "escalation_tick_ms": round(1000 * statistics.median(ticks[1:]), 2),
    }


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    log = Path(os.environ.get("OT_BENCH_API_LOG", os.devnull))
    seconds = 5.0 if quick else 20.0
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(
        readings=f"bench-op-{suffix}",
        dlq=f"bench-op-{suffix}.dlq",
        alerts=f"bench-op-alerts-{suffix}",
        faults=f"bench-op-faults-{suffix}",
    )
    tmp = Path(tempfile.mkdtemp(prefix="ot-bench-api-"))
    bench = replace(
        settings,
        topics=topics,
        redis_prefix=f"bench-op-{suffix}:",
        pg_schema=f"ot_bench_api_{suffix}",
        lake_dir=tmp / "lake",
    )
    figures: dict[str, Any] = {"load_avg_1m_start": round(os.getloadavg()[0], 2)}
    create_topics(settings.kafka_bootstrap_servers, topics, readings_partitions=6)
    plant: Plant | None = None
    state: subprocess.Popen[str] | None = None
    try:
        now = datetime.now(UTC)
        started = time.perf_counter()
        figures["history_landed_rows"], figures["history_rollup_rows"] = history_data(bench, now)
        figures["history_setup_s"] = round(time.perf_counter() - started, 1)
        state = drills.spawn(
            "state", bench, ["--group", f"bench-state-{suffix}"], tmp / "state.log"
        )
        plant = Plant(bench)
        plant.fill()
        wait_machines(bench, MACHINES)
        plant.start()
        figures["machines"] = MACHINES
        figures["updates_per_s"] = MACHINES
        server = ApiServer(bench, 1, log, role=Role.READ)
        try:
            ids = [machine_id(i) for i in range(MACHINES)]
            listing = ["/api/v1/machines?limit=1000"]
            states = [f"/api/v1/machines/{m}" for m in ids]
            to_ms = int(time.time() * 1000)
            history = [
                f"/api/v1/machines/m{i:05d}/history?metric=temperature"
                f"&from={to_ms - 24 * 3_600_000}&to={to_ms}"
                for i in range(HISTORY_MACHINES)
            ]
            for paths in (listing, states, history):  # warm: connections, caches, footers
                load(server, 20, 1.0, 1, 0, paths)
            for name, paths, rate in (
                ("list", listing, RATE),
                ("state", states, RATE),
                ("history", history, HISTORY_RATE),
            ):
                step = load(server, rate, seconds, 1, 0, paths)
                figures[f"{name}_offered_per_s"] = rate
                figures |= step_figures(name, step)
            try:
                figures |= stream_step(server, state.pid, CLIENTS, seconds)
            except RuntimeError as exc:  # keep the HTTP figures; say why the stream has none
                figures["stream_error"] = str(exc)[-500:]
                figures["stream_target_met"] = False
        finally:
            server.stop()
        figures["plant_readings_produced"] = plant.produced
        figures |= fanout_cost()
        figures |= escalation_cost(bench)
    finally:
        if plant is not None:
            plant.close()
        if state is not None and state.poll() is None:
            state.terminate()
            try:
                state.wait(30)
            except subprocess.TimeoutExpired:
                state.kill()
        from ot_pipeline.warehouse import Warehouse

        Warehouse(settings.pg_dsn, bench.pg_schema).drop_schema()
        _drop_prefix(bench)
        delete_topics(settings.kafka_bootstrap_servers, topics.all())
        shutil.rmtree(tmp, ignore_errors=True)
    figures["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return figures


def _drop_prefix(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    keys = list(client.scan_iter(match=RedisKeys(settings.redis_prefix).scan_all, count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])
