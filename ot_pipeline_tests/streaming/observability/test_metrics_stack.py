"""/metrics of the lander, the state writer and the API, scraped while they work on the real
stack: the main series exist and move with the load."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from websockets.sync.client import connect

from ot_pipeline_tests.support.metrics import Series, labels_of, scrape, value
from ot_pipeline_tests.support.operator_stack import (
    INGEST_SECRET,
    KEY_ENTRIES,
    READ_SECRET,
    Devices,
    record,
    running_api,
    wait_for,
)
from ot_pipeline_tests.support.ports import free_port
from ot_tools import drills
from streaming.kafka.config import producer_config
from streaming.settings import Settings

pytestmark = pytest.mark.stack


@contextmanager
def command(settings: Settings, log: Path, *argv: str) -> Iterator[subprocess.Popen[bytes]]:
    """`ot ARGV...` as a real process; SIGTERM at the end, which must end it cleanly."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streaming.cli", *argv],
            env=drills.child_env(settings),
            stdout=out,
            stderr=out,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]


def metrics_up(port: int, proc: subprocess.Popen[bytes], log: Path) -> Series:
    deadline = time.monotonic() + 30
    while True:
        try:
            return scrape(port)
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no /metrics on {port}: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)


def until(port: int, check: Callable[[Series], object], what: str, timeout_s: float = 15) -> Series:
    """Scrape until `check` holds; returns that scrape."""
    series: list[Series] = []

    def scraped() -> bool:
        series[:] = [scrape(port)]
        return bool(check(series[0]))

    wait_for(scraped, timeout_s, what)
    return series[0]


def produce_garbage(settings: Settings, n: int) -> None:
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    for i in range(n):
        producer.produce(settings.topics.readings, value=b"not avro %d" % i, key=b"junk")
    assert producer.flush(30) == 0


def test_lander_and_state_writer_metrics_exist_and_move(isolated: Settings, tmp_path: Path) -> None:
    land_port, state_port = free_port(), free_port()
    devices = Devices(isolated)
    with (
        command(
            isolated,
            tmp_path / "land.log",
            "land",
            "--flush-age",
            "0.3",
            "--metrics-port",
            str(land_port),
        ) as lander,
        command(isolated, tmp_path / "state.log", "state", "--metrics-port", str(state_port)) as sw,
    ):
        metrics_up(land_port, lander, tmp_path / "land.log")
        metrics_up(state_port, sw, tmp_path / "state.log")
        devices.send(*(record(f"m-{i % 7}", i) for i in range(300)))
        produce_garbage(isolated, 5)

        def landed(n: int) -> Series | None:
            s = scrape(land_port)
            return s if value(s, "ot_lander_rows_landed_total") >= n else None

        first = wait_for(lambda: landed(300), 30, "300 rows landed")
        assert value(first, "ot_consumer_messages_total", group="lake-lander") == 305
        assert value(first, "ot_dead_letters_total", stage="lander") == 5
        assert labels_of(first, "ot_dead_letters_total", "reason") == {"BAD_MAGIC"}
        assert value(first, "ot_lander_files_landed_total") >= 1
        assert value(first, "ot_lander_flush_seconds_count") >= 1
        assert value(first, "ot_consumer_batch_seconds_count", group="lake-lander") >= 1
        assert value(first, "ot_consumer_assigned_partitions", group="lake-lander") == (
            isolated.readings_partitions
        )
        # Lag per partition, from librdkafka's statistics (every 5 s): all caught up.
        lagged = until(
            land_port, lambda s: labels_of(s, "ot_consumer_lag_messages", "partition"), "lag"
        )
        assert value(lagged, "ot_consumer_lag_messages") == 0

        def applied(n: int) -> Series | None:
            s = scrape(state_port)
            return s if value(s, "ot_state_readings_applied_total") >= n else None

        state = wait_for(lambda: applied(300), 30, "300 readings applied")
        assert value(state, "ot_consumer_messages_total", group="state-writer") == 305
        assert value(state, "ot_state_readings_invalid_total", reason="BAD_MAGIC") == 5
        assert value(state, "ot_consumer_batch_seconds_count", group="state-writer") >= 1
        assert value(state, "ot_state_transaction_conflicts_total") == 0

        # More load: the counters move by exactly that much.
        devices.send(*(record(f"m-{i % 7}", 1000 + i) for i in range(200)))
        moved = wait_for(lambda: landed(500), 30, "500 rows landed")
        assert value(moved, "ot_consumer_messages_total", group="lake-lander") == 505
        assert value(moved, "ot_lander_flush_seconds_count") > value(
            first, "ot_lander_flush_seconds_count"
        )
        assert wait_for(lambda: applied(500), 30, "500 applied")


def test_api_metrics_count_requests_by_route_and_status_across_workers(
    isolated: Settings, tmp_path: Path
) -> None:
    """Two workers write their own metrics; the parent's endpoint sums them."""
    port = free_port()
    log = tmp_path / "api.log"
    with running_api(isolated, log, KEY_ENTRIES, "--workers", "2", "--metrics-port", str(port)) as (
        client,
        _,
    ):
        before = scrape(port)
        assert value(before, "ot_http_request_duration_seconds_count", route="/health") >= 1
        health0 = value(before, "ot_http_request_duration_seconds_count", route="/health")
        for _ in range(20):
            assert client.get("/health").status_code == 200
        assert client.get("/no-such-page").status_code == 404
        headers = {"X-API-Key": INGEST_SECRET}
        good = [record("press-01", i) for i in range(10)]
        bad = [{**record("press-01", 99), "value": float("1e300")}]
        answer = client.post("/webhook/sensor-data", json=good + bad, headers=headers)
        assert answer.status_code == 202, answer.text
        ws_base = str(client.base_url).replace("http://", "ws://")
        with connect(f"{ws_base}/api/v1/stream?key={READ_SECRET}&machines=*", open_timeout=10):
            during = until(port, lambda s: value(s, "ot_websocket_clients") == 1, "1 client")
        after = until(port, lambda s: value(s, "ot_websocket_clients") == 0, "no client")
    count = "ot_http_request_duration_seconds_count"
    assert value(after, count, route="/health", status="200") == health0 + 20
    assert value(after, count, route="unmatched", status="404") == 1
    assert value(after, count, route="/webhook/sensor-data", method="POST", status="202") == 1
    assert value(after, "ot_gateway_readings_total", outcome="accepted") == 10
    assert value(after, "ot_gateway_readings_total", outcome="rejected") == 1
    assert value(after, "ot_dead_letters_total", stage="gateway", reason="OUT_OF_RANGE") == 1
    assert value(during, "ot_http_request_duration_seconds_bucket", route="/health", le="+Inf") > 0
