"""What every stack service shares: spawning, pid files, waiting, ports, apt installs, errors.

A service is *this stack's own* only when its pid file (PostgreSQL: `postmaster.pid` in its data
folder) names a live process that is the expected program started with this stack's config or data
folder (`Pids.owned`, `process_is`). Something else answering on one of its ports is never taken for
it: `refuse_foreign` turns such a port into the one line `ot stack` and `make run` print.
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

from streaming.settings import SettingsError


class StackError(RuntimeError):
    """A service failed: the message names it, the command and the last lines of its log."""


class PortTaken(StackError):
    """A port this stack needs answers, but not with a process this stack started (one line)."""


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


def port_from_env(var: str, default: int, highest: int = 65535) -> int:
    """A port override (`OT_STACK_*_PORT`): unset means the default; anything else that is not a
    port number from 1 to `highest` (empty included) is a configuration error, one line that
    `ot` and `make run` print before exiting 2."""
    raw = os.environ.get(var)
    if raw is None:
        return default
    value = raw.strip()
    if not value:
        raise SettingsError(
            f"{var} is set but empty: unset it for the default {default}, or give a TCP port "
            f"number from 1 to {highest}"
        )
    if not value.isdigit() or not 0 < int(value) <= highest:
        raise SettingsError(
            f"{var}={raw!r} must be a TCP port number from 1 to {highest}; "
            f"unset it for the default {default}"
        )
    return int(value)


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


# -- what a process is ---------------------------------------------------------------------------
def cmdline(pid: int) -> list[str]:
    """The process's arguments ([] when it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part for part in raw.decode(errors="replace").split("\0") if part]


def process_is(pid: int, program: str, *, arg: str | None = None, cwd: Path | None = None) -> bool:
    """Is `pid` alive, running `program` (the base name of its first argument; some servers
    rewrite their title, e.g. `redis-server 127.0.0.1:16379`), with `arg` among its arguments
    and/or `cwd` as its working directory?"""
    if not pid_alive(pid):
        return False
    args = cmdline(pid)
    if not args or not Path(args[0].split()[0]).name.startswith(program):
        return False
    if arg is not None and arg not in args:
        return False
    if cwd is not None:
        try:
            if Path(os.readlink(f"/proc/{pid}/cwd")).resolve() != cwd.resolve():
                return False
        except OSError:
            return False
    return True


def port_taken(port: int) -> bool:
    """Does something accept TCP connections on 127.0.0.1:`port`?"""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def listener(port: int) -> str:
    """Best effort: `pid N (program args...)` of the process listening on `port`, or ""."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            listening = len(fields) > 9 and fields[3] == "0A"  # TCP_LISTEN
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return ""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    return f"pid {proc.name}: {_what(cmdline(int(proc.name)))}"
            except OSError:
                continue
    return ""


def _what(args: list[str]) -> str:
    """A short description of a command line: the program and its most telling argument (the
    data folder after -D, the config after -c, else the last argument)."""
    if not args:
        return "?"
    first = args[0].split()
    program = Path(first[0]).name
    if len(args) == 1:  # a server that rewrote its title, e.g. `redis-server 127.0.0.1:16379`
        return _short(" ".join([program, *first[1:]]))
    for flag in ("-D", "-c"):
        if flag in args[1:-1]:
            return f"{program} {flag} {_short(args[args.index(flag, 1) + 1])}"
    return f"{program} ... {_short(args[-1])}"


def _short(text: str, limit: int = 60) -> str:
    """One line (a `python -c` script has newlines), at most `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def refuse_foreign(service: str, port: int, variable: str, root: Path) -> PortTaken:
    """The one line for a port this stack needs but something else holds."""
    who = listener(port)
    return PortTaken(
        f"{service}: port {port} is taken by a process this stack did not start"
        f"{f' ({who})' if who else ''}, not from {root}; stop it, or set {variable} "
        "to a free port"
    )


def reuse(service: str, pid: int, answers: Callable[[], bool], timeout: float, log: Path) -> None:
    """This stack's own process is running: wait until it answers (it may be starting)."""
    if answers():
        return
    if not wait(lambda: answers() or not pid_alive(pid), timeout):
        raise StackError(
            f"{service}: this stack's process (pid {pid}) runs but does not answer within "
            f"{timeout:.0f} s; see {log}, or `ot stack down` and `ot stack up` again"
        )
    if not answers():
        raise StackError(f"{service}: this stack's process (pid {pid}) exited; see {log}")


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

    def owned(
        self, name: str, program: str, *, arg: str | None = None, cwd: Path | None = None
    ) -> int | None:
        """The recorded pid when it is alive and still the process this stack started."""
        pid = self.read(name)
        if pid is None or not process_is(pid, program, arg=arg, cwd=cwd):
            return None
        return pid

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
