"""The stack knows its own services (its folder, its pid files, the expected program) and refuses,
in one line, a port that something else holds: never adopted, never stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ot_pipeline_tests.support.ports import free_port
from streaming.stack.local import LocalStack, PortTaken

SERVER = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', 0)); s.listen(16); print(s.getsockname()[1], flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.close()\n"
)


@pytest.fixture
def foreign() -> Iterator[tuple[int, int]]:
    """A plain TCP server (not this stack's): (port, pid)."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    try:
        yield port, proc.pid
    finally:
        proc.kill()
        proc.wait()


def _env(root: Path, redis_port: int) -> dict[str, str]:
    # Every other service on a free port: only Redis's port is held by something else.
    return {
        **os.environ,
        "OT_STACK_DIR": str(root),
        "OT_STACK_REDIS_PORT": str(redis_port),
        "OT_STACK_KAFKA_PORT": str(free_port()),
        "OT_STACK_PG_PORT": str(free_port()),
        "OT_STACK_MQTT_PORT": str(free_port()),
    }


def _ot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streaming.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_stack_up_refuses_a_port_held_by_a_process_it_did_not_start(
    foreign: tuple[int, int], tmp_path: Path
):
    port, pid = foreign
    root = tmp_path / "stack"
    result = _ot("stack", "up", env=_env(root, port))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ot stack up: redis: port {port} is taken by a process this stack ")
    assert f"pid {pid}: python" in lines[0]
    assert "stop it, or set OT_STACK_REDIS_PORT to a free port" in lines[0]
    assert not list((root / "pids").glob("*.pid")), "nothing may start once a port is refused"
    assert "Traceback" not in result.stderr


def test_stack_status_says_taken_and_exits_nonzero(foreign: tuple[int, int], tmp_path: Path):
    port, _ = foreign
    result = _ot("stack", "status", env=_env(tmp_path / "stack", port))
    assert result.returncode == 1
    assert [ln.split()[:2] for ln in result.stdout.splitlines()] == [
        ["DOWN", "kafka"],
        ["TAKEN", "redis"],
        ["DOWN", "postgres"],
        ["DOWN", "mosquitto"],
    ]
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if "OT_STACK_REDIS_PORT" in line
    ]
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_pid_file_naming_another_program_is_not_this_stacks_service(
    foreign: tuple[int, int], tmp_path: Path
):
    """A pid file that survived a reboot, its pid now reused by something else: the stack must
    neither take that process for its Redis nor stop it."""
    port, pid = foreign
    root = tmp_path / "stack"
    (root / "pids").mkdir(parents=True)
    (root / "pids" / "redis.pid").write_text(str(pid))
    stack = LocalStack(root=root, redis_port=port, services=("redis",))
    assert stack.status() == {"redis": False}
    assert set(stack.conflicts()) == {"redis"}
    with pytest.raises(PortTaken, match=f"redis: port {port} is taken"):
        stack.up()
    assert stack.down() == []
    os.kill(pid, 0)  # still alive: down stops only this stack's processes
    assert not (root / "pids" / "redis.pid").exists(), "the stale pid file is removed"


def test_make_run_refuses_a_port_held_by_a_process_it_did_not_start(
    foreign: tuple[int, int], tmp_path: Path
):
    port, _ = foreign
    result = subprocess.run(
        [sys.executable, "-m", "streaming.run", "--no-dagster"],
        env=_env(tmp_path / "stack", port),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"make run: redis: port {port} is taken")
