"""What every stack service shares: spawning, pid files, waiting, ports, apt installs, errors.

Every process a stack spawns has a pid file under `<root>/pids/` (`Pids`); `ot stack down` stops
only those.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """A service failed: the message names it, the command and the last lines of its log."""


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def fail(service: str, command: list[str] | str, log: Path, why: str) -> StackError:
    cmd = command if isinstance(command, str) else " ".join(command)
    return StackError(f"{service}: {why}\n  command: {cmd}\n  log: {log}\n{tail(log)}")


def is_root() -> bool:
    return os.geteuid() == 0


def apt_install(packages: list[str], service: str, log: Path) -> None:
    """Install Debian packages when a service's binaries are missing (needs root or sudo)."""
    prefix = [] if is_root() else (["sudo", "-n"] if shutil.which("sudo") else None)
    if prefix is None:
        raise StackError(
            f"{service}: not installed and not root: apt-get install {' '.join(packages)}"
        )
    print(f"[stack] installing {' '.join(packages)} with apt-get (first run only)", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("ab") as out:
        for cmd in (
            [*prefix, "apt-get", "update", "-qq"],
            [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode:
                raise fail(service, cmd, log, "package installation failed")


def port_from_env(var: str, default: int) -> int:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"{var}={raw!r} must be a TCP port number")
    return int(raw)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def wait(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def stop_pid(pid: int, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; returns once the process is gone."""
    os.kill(pid, signal.SIGTERM)
    if not wait(lambda: not pid_alive(pid), timeout):
        os.kill(pid, signal.SIGKILL)
        wait(lambda: not pid_alive(pid), 10)


def port_taken(port: int) -> bool:
    """Does something accept TCP connections on 127.0.0.1:`port`?"""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# -- pid files -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pids:
    """The pid files of the processes a stack spawned: `<root>/pids/<name>.pid`."""

    root: Path

    @property
    def folder(self) -> Path:
        return self.root / "pids"

    def file(self, name: str) -> Path:
        return self.folder / f"{name}.pid"

    def read(self, name: str) -> int | None:
        """The recorded pid when that process is alive (whatever it is now)."""
        try:
            pid = int(self.file(name).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.pid")) if self.folder.is_dir() else []

    def spawn(self, name: str, cmd: list[str], log: Path, **kwargs) -> int:  # type: ignore[no-untyped-def]
        """Start `cmd` in a session of its own (it survives the `ot` process and its Ctrl-C),
        output to `log`, and record its pid."""
        log.parent.mkdir(parents=True, exist_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **kwargs,
            )
        self.file(name).write_text(str(proc.pid))
        return proc.pid

    def stop(self, name: str, pid: int) -> None:
        stop_pid(pid)
        self.file(name).unlink(missing_ok=True)
