"""A command that cannot reach what it needs says so in one line and exits non-zero within
seconds: `ot simulate`, `ot land` and `ot state` against a port with no Kafka broker, `ot state`
against a port with no Redis, `ot land` with a lake that cannot be written. The real commands run
as subprocesses; the shared stack is never stopped (the "missing" servers are free ports)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ot_pipeline_tests.support.redis_server import free_port
from streaming.settings import Settings

BOUNDED = ("--until-idle", "3", "--duration", "20")
WITHIN_S = 12  # the probe waits 5 s; start-up (imports) takes a few more


def _run(
    args: list[str], tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    base = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"}
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "streaming.cli", *args],
        env={**base, "OT_LAKE_DIR": str(tmp_path / "lake"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, time.monotonic() - started


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no librdkafka lines either
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [["simulate", "--duration", "5"], ["land", *BOUNDED], ["state", *BOUNDED]],
    ids=["simulate", "land", "state"],
)
def test_no_kafka_broker_is_one_line_and_exit_1_within_seconds(command: list[str], tmp_path: Path):
    bootstrap = f"127.0.0.1:{free_port()}"
    result, took = _run(command, tmp_path, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    assert result.returncode == 1, result.stderr
    line = _one_line(result)
    assert line.startswith(f"ot {command[0]}: kafka: no broker answered at {bootstrap}")
    assert "ot stack up" in line and "KAFKA_BOOTSTRAP_SERVERS" in line
    assert took < WITHIN_S, took
    assert result.stdout == ""  # no summary claiming a run happened


def test_land_refuses_an_unwritable_lake_before_anything_else(tmp_path: Path):
    # Checked before Kafka: the answer is immediate, whatever the brokers do.
    bootstrap = f"127.0.0.1:{free_port()}"
    result, took = _run(
        ["land", *BOUNDED], tmp_path, OT_LAKE_DIR="/proc/x", KAFKA_BOOTSTRAP_SERVERS=bootstrap
    )
    assert result.returncode == 1, result.stderr
    line = _one_line(result)
    assert line.startswith("ot land: lake: cannot write to /proc/x")
    assert "OT_LAKE_DIR" in line
    assert took < WITHIN_S - 5, took


@pytest.mark.stack
def test_state_without_redis_is_one_line_and_never_shows_the_password(
    stack: Settings, tmp_path: Path
):
    # Kafka answers (the test stack's, wherever its ports are): only Redis is missing.
    port = free_port()
    result, _ = _run(
        ["state", *BOUNDED],
        tmp_path,
        REDIS_URL=f"redis://:s3cret@127.0.0.1:{port}/0",
        KAFKA_BOOTSTRAP_SERVERS=stack.kafka_bootstrap_servers,
    )
    assert result.returncode == 1, result.stderr
    line = _one_line(result)
    assert line.startswith(f"ot state: redis: no answer at 127.0.0.1:{port}")
    assert "REDIS_URL" in line and "ot stack up" in line
    assert "s3cret" not in line
