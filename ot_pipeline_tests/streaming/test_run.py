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

from ot_pipeline_tests.support.ports import free_base_port, free_port
from streaming.lake import Lake
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings
from streaming.stack.local import REPO_ROOT, LocalStack
from streaming.stack.processes import pid_alive

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
        # The bridge's MQTT session and topics of its own: the shared broker may hold others'.
        "OT_MQTT_TOPIC_ROOT": f"run-{isolated.redis_prefix.strip(':')}",
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
    assert "Dashboard    http://127.0.0.1:8317/" in out and "Operate key  ot_" in out
    assert "stopping: simulator, api, mqtt-bridge, lander, state-writer, dagster" in out
    assert not _ui_answers(port), "Ctrl-C must stop the Dagster UI"


# -- the lifecycle of `make run` / `make start` on a stack of its own ---------------------------
MAKE = ["make", "-s", "-C", str(REPO_ROOT), "-o", ".venv/.installed-stamp"]  # never reinstall


def _private_stack(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Environment for a stack in a folder of its own, on free ports (the broker jars shared)."""
    root = tmp_path / "stack"
    root.mkdir()
    (root / "kafka-libs").symlink_to(LocalStack.from_env().ensure_kafka_jars())
    env = {
        **os.environ,
        "OT_STACK_DIR": str(root),
        "OT_STACK_KAFKA_PORT": str(free_base_port((0, 100))),
        "OT_STACK_REDIS_PORT": str(free_port()),
        "OT_STACK_PG_PORT": str(free_port()),
        "OT_STACK_MQTT_PORT": str(free_port()),
        "OT_LAKE_DIR": str(tmp_path / "lake"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "OT_API_KEYS": "",
        "RUN_ARGS": f"--no-dagster --machines 2 --rate 20 --api-port {free_port()}",
    }
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "OT_PG_DSN", "MQTT_URL"):
        env.pop(name, None)  # the run must find its own stack, not the session's
    return env, root


def _processes_of(root: Path) -> list[int]:
    """Every live process started for the stack in `root` (they inherit OT_STACK_DIR): the
    services, the simulator, API, bridge, consumers and the supervisor itself."""
    mark = f"OT_STACK_DIR={root}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if mark in (proc / "environ").read_bytes().split(b"\0") and pid_alive(int(proc.name)):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _service_pids(root: Path) -> dict[str, int]:
    pids = {p.stem: int(p.read_text()) for p in (root / "pids").glob("*.pid")}
    postmaster = root / "postgres" / "data" / "postmaster.pid"
    pids["postgres"] = int(postmaster.read_text().split()[0])
    return pids


def _wait_for(proc: subprocess.Popen[str], marker: str, timeout: float = 240) -> str:
    assert proc.stdout is not None
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        if marker in line:
            return "".join(out)
    raise AssertionError(f"no {marker!r} in time:\n{''.join(out)}")


def test_ctrl_c_of_make_run_stops_the_stack_services_it_started(tmp_path: Path):
    env, root = _private_stack(tmp_path)
    proc = subprocess.Popen(
        [*MAKE, "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a terminal's process group: Ctrl-C reaches make and the run
    )
    try:
        header = _wait_for(proc, "Press Ctrl-C to stop everything started here.")
        services = _service_pids(root)
        assert set(services) == {"kafka-1", "redis", "postgres", "mosquitto"}, header
        assert all(pid_alive(pid) for pid in services.values())
        assert len(_processes_of(root)) >= len(services) + 5  # + the run's children
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
    assert "stopped stack services: redis, postgres, mosquitto, kafka-1" in out, out
    assert not [pid for pid in services.values() if pid_alive(pid)]
    assert _processes_of(root) == [], "Ctrl-C must leave no process of the run"


def test_make_start_runs_in_the_background_and_make_stop_stops_everything(tmp_path: Path):
    env, root = _private_stack(tmp_path)
    started = subprocess.run([*MAKE, "start"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "The OT platform is running:" in started.stdout
        assert "`make stop` stops everything started here" in started.stdout
        services = _service_pids(root)
        assert all(pid_alive(pid) for pid in services.values())
        again = subprocess.run([*MAKE, "start"], env=env, capture_output=True, text=True)
        assert again.returncode != 0 and "already running" in again.stderr
        time.sleep(6)  # one status line
        assert "landed files" in (root / "logs" / "run.log").read_text()
    finally:
        stopped = subprocess.run(
            [*MAKE, "stop"], env=env, capture_output=True, text=True, timeout=300
        )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "stopped stack services: redis, postgres, mosquitto, kafka-1" in stopped.stdout
    assert _processes_of(root) == []
    assert not (root / "run.pid").exists()
    nothing = subprocess.run([*MAKE, "stop"], env=env, capture_output=True, text=True)
    assert nothing.returncode == 0 and "no background run" in nothing.stdout


def _child_pid(parent: int, word: str) -> int | None:
    """The live child process of `parent` whose command line has `word` as an argument."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and word in args and pid_alive(int(proc.name)):
            return int(proc.name)
    return None


def _landed_offsets(lake: Lake) -> int:
    return sum(f.count for f in lake.landed_files())


def test_make_run_restarts_a_child_that_dies_and_says_so(tmp_path: Path):
    env, root = _private_stack(tmp_path)
    lake = Lake(tmp_path / "lake")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming.run", *env["RUN_ARGS"].split(), "--rate", "50"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out = _wait_for(proc, "Press Ctrl-C to stop everything started here.")
        lander = _child_pid(proc.pid, "land")
        assert lander is not None, out
        deadline = time.monotonic() + 90
        while not _landed_offsets(lake) and time.monotonic() < deadline:
            time.sleep(1)
        assert _landed_offsets(lake), "the lander landed nothing before the kill"
        os.kill(lander, signal.SIGKILL)
        out += _wait_for(proc, "lander restarted", timeout=60)
        assert "lander exited (code -9); restarting in 1 s" in out, out
        again = _child_pid(proc.pid, "land")
        assert again is not None and again != lander
        before = _landed_offsets(lake)
        deadline = time.monotonic() + 120
        while _landed_offsets(lake) <= before and time.monotonic() < deadline:
            time.sleep(1)
        assert _landed_offsets(lake) > before, "the restarted lander does not land"
        assert proc.poll() is None, "one crash must not stop the run"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, rest
    assert _processes_of(root) == [], "Ctrl-C must leave no process of the run"
