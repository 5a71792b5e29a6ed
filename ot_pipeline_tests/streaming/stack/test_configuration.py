"""Bad stack configuration is one line naming the variable and what is expected, exit 2, never a
traceback: for `ot stack up/status/env/down` and for `make run`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streaming.stack.local import REPO_ROOT

PORT_VARIABLES = [
    "OT_STACK_KAFKA_PORT",
    "OT_STACK_REDIS_PORT",
    "OT_STACK_PG_PORT",
    "OT_STACK_MQTT_PORT",
]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OT_STACK_")}
    return {**env, "OT_STACK_DIR": str(tmp_path / "stack"), **extra}


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("action", ["up", "status", "env", "down"])
@pytest.mark.parametrize("variable", PORT_VARIABLES)
def test_a_port_variable_that_is_not_a_port_is_one_line_and_exit_2(
    variable: str, action: str, tmp_path: Path
):
    result = subprocess.run(
        [sys.executable, "-m", "streaming.cli", "stack", action],
        env=_env(tmp_path, **{variable: "abc"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    line = _one_line(result)
    assert line.startswith(f"ot stack: configuration error: {variable}='abc' must be a TCP port")
    assert "unset it for the default" in line
    assert not (tmp_path / "stack").exists(), "nothing may be created from a bad configuration"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("", "is set but empty"), ("0", "from 1 to"), ("70000", "from 1 to"), ("65500", "65433")],
)
def test_port_values_out_of_range_or_empty_are_refused(value: str, fragment: str, tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "streaming.cli", "stack", "env"],
        env=_env(tmp_path, OT_STACK_KAFKA_PORT=value),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    line = _one_line(result)
    assert "OT_STACK_KAFKA_PORT" in line and fragment in line


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("OT_STACK_KAFKA_PORT", "abc", "OT_STACK_KAFKA_PORT='abc' must be a TCP port number"),
        ("OT_STACK_MQTT_PORT", "1.5", "OT_STACK_MQTT_PORT='1.5' must be a TCP port number"),
        ("KAFKA_BOOTSTRAP_SERVERS", "", "KAFKA_BOOTSTRAP_SERVERS is set but empty"),
    ],
)
def test_make_run_reports_bad_configuration_in_one_line(
    variable: str, value: str, fragment: str, tmp_path: Path
):
    env = _env(tmp_path, **{variable: value})
    direct = subprocess.run(
        [sys.executable, "-m", "streaming.run", "--no-dagster"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert direct.returncode == 2
    assert _one_line(direct).startswith(f"make run: configuration error: {fragment}")
    # Through make: the same first line (make adds its own "Error 2" line after it).
    made = subprocess.run(
        ["make", "-s", "-C", str(REPO_ROOT), "-o", ".venv/.installed-stamp", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode != 0
    assert "Traceback" not in made.stderr
    assert made.stderr.splitlines()[0].startswith(f"make run: configuration error: {fragment}")
    assert not (tmp_path / "stack").exists()
