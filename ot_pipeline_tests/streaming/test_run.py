"""`make run`: the supervisor starts every part, data flows end to end, Ctrl-C stops it all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from streaming.lake import Lake
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def _ui_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _api_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_make_run_streams_into_the_lake_and_redis_and_serves_the_dagster_ui(
    isolated: Settings, tmp_path: Path
):
    port, api_port = 3317, 8317
    env = {
        **os.environ,
        "OT_TOPIC_READINGS": isolated.topics.readings,
        "OT_TOPIC_DLQ": isolated.topics.dlq,
        "OT_TOPIC_ALERTS": isolated.topics.alerts,
        "OT_TOPIC_FAULTS": isolated.topics.faults,
        "OT_REDIS_PREFIX": isolated.redis_prefix,
        "OT_PG_SCHEMA": isolated.pg_schema,
        "OT_LAKE_DIR": str(isolated.lake_dir),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "OT_API_KEYS": "",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming.run", "--machines", "5", "--rate", "100",
         "--port", str(port), "--api-port", str(api_port), "--duration", "300"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    client = redis.Redis.from_url(isolated.redis_url)
    lake = Lake(isolated.lake_dir)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            if (
                lake.landed_files()
                and client.zcard(RedisKeys(isolated.redis_prefix).machines) == 5
                and _ui_answers(port)
                and _api_answers(api_port)
            ):
                break
            time.sleep(1)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert client.zcard(RedisKeys(isolated.redis_prefix).machines) == 5
        assert lake.landed_files(), "the lander landed nothing"
        assert _ui_answers(port), "the Dagster UI does not answer"
        assert _api_answers(api_port), "ot api does not answer"
        # the operator API reads without a key under `make run` (loopback: anonymous read)
        url = f"http://127.0.0.1:{api_port}/api/v1/machines"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert len(json.loads(resp.read())["items"]) == 5
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert "Dagster UI   http://127.0.0.1:3317" in out
    assert "HTTP API     http://127.0.0.1:8317" in out and "Ingest key   ot_" in out
    assert "stopping: simulator, api, lander, state-writer, dagster" in out
    assert not _ui_answers(port), "Ctrl-C must stop the Dagster UI"
