"""The one logging setup: JSON lines off a terminal, readable lines on one, the level from
OT_LOG_LEVEL, correlation fields, and librdkafka's own lines routed through it, rate-limited."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap

from streaming.observability.logs import (
    ConsoleFormatter,
    EventLog,
    KafkaClientLog,
    RateLimit,
    log_context,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_every_line_is_one_json_object_with_the_correlation_fields() -> None:
    out = io.StringIO()
    log = EventLog("lander", out)
    with log_context(batch=7):
        log("landed", partition=3, first=100, last=199, rows=100)
    log.warning("offset_gap", partition=3, expected=200, got=205)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["component"] == "lander" and first["event"] == "landed"
    assert first["level"] == "info" and isinstance(first["ts"], float)
    assert (first["batch"], first["partition"], first["first"], first["last"]) == (7, 3, 100, 199)
    assert second["level"] == "warning" and "batch" not in second  # the context ended


def test_on_a_terminal_a_line_is_readable() -> None:
    out = Terminal()
    log = EventLog("state-writer", out)
    log("applied", partition=1, readings=250, machine="press 07")
    log.error("failed", error="redis down")
    first, second = out.getvalue().rstrip("\n").split("\n")
    assert "{" not in first
    assert first.endswith('state-writer applied partition=1 readings=250 machine="press 07"')
    assert ' ERROR state-writer failed error="redis down"' in second
    assert first.startswith("\r\x1b[K")  # clears a progress line drawn in place


def test_library_records_keep_their_message() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.WARNING, "x", 1, "slow %s", ("client",), None
    )
    line = ConsoleFormatter().format(record)
    assert "uvicorn.error log" in line and 'message="slow client"' in line


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_the_level_comes_from_ot_log_level() -> None:
    code = """
        from streaming.observability.logs import EventLog, configure_logging
        configure_logging()
        log = EventLog("lander")
        log.debug("noise"); log("landed"); log.warning("slow")
    """
    events = lambda done: [json.loads(line)["event"] for line in done.stderr.splitlines()]  # noqa: E731
    assert events(run(code)) == ["landed", "slow"]
    assert events(run(code, OT_LOG_LEVEL="warning")) == ["slow"]
    assert events(run(code, OT_LOG_LEVEL="DEBUG")) == ["noise", "landed", "slow"]


def test_a_line_per_http_request_only_at_debug() -> None:
    code = """
        import logging
        from streaming.observability.logs import configure_logging
        configure_logging()
        logging.getLogger("httpx").info("HTTP Request: GET http://x/health 200")
        logging.getLogger("httpx").warning("retrying")
    """
    messages = lambda done: [json.loads(line)["message"] for line in done.stderr.splitlines()]  # noqa: E731
    assert messages(run(code)) == ["retrying"]
    assert len(messages(run(code, OT_LOG_LEVEL="debug"))) == 2


def test_a_bad_level_is_one_line_and_exit_2() -> None:
    done = run(
        "from streaming.cli import main; raise SystemExit(main(['land']))", OT_LOG_LEVEL="loud"
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ot land: configuration error: OT_LOG_LEVEL='loud' is not one of debug, info, warning, "
        "error, critical"
    ]


def test_librdkafka_lines_go_through_the_one_log() -> None:
    """A real producer aimed at a port nobody listens on: librdkafka's connection errors come
    out as JSON `kafka_log` events, never as its own `%3|...` lines."""
    code = """
        from confluent_kafka import Producer
        from streaming.kafka.config import producer_config
        from streaming.settings import Settings
        from streaming.observability.logs import configure_logging
        configure_logging()
        p = Producer(producer_config(Settings(kafka_bootstrap_servers="127.0.0.1:9")))
        p.produce("t", b"x")
        for _ in range(20):
            p.poll(0.1)
    """
    done = run(code)
    lines = done.stderr.splitlines()
    assert lines, "librdkafka said nothing about an unreachable broker"
    records = [json.loads(line) for line in lines]  # every line is JSON
    kafka = [r for r in records if r["event"] == "kafka_log"]
    assert kafka and all(r["component"] == "kafka" for r in kafka)
    assert all(r["level"] in {"warning", "error"} and r["facility"] for r in kafka)
    assert any("127.0.0.1:9" in r["message"] for r in kafka)
    assert len([r for r in kafka if r["facility"] == "FAIL"]) <= RateLimit().burst


def test_librdkafka_floods_are_rate_limited_per_facility() -> None:
    out = io.StringIO()
    handler = KafkaClientLog(EventLog("kafka", out), RateLimit(burst=3, window_s=60))
    for i in range(50):
        handler.forward(logging.ERROR, "FAIL", "rdkafka#producer-1", f"connect failed {i}")
    handler.forward(logging.WARNING, "REQTMOUT", "rdkafka#producer-1", "timed out")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["facility"] for r in lines] == ["FAIL", "FAIL", "FAIL", "REQTMOUT"]
    # The next window says how many lines the last one held back.
    limit = RateLimit(burst=3, window_s=60)
    for _ in range(10):
        limit.allow("FAIL", now=0.0)
    assert limit.allow("FAIL", now=61.0) == (True, 7)
