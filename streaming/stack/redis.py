"""Redis in the local stack: `redis-server` from Debian, AOF on, data in `<root>/redis`."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from streaming.stack.processes import (
    Pids,
    PortTaken,
    apt_install,
    fail,
    pid_alive,
    port_taken,
    refuse_foreign,
    reuse,
    wait,
)

NAME = "redis"
VARIABLE = "OT_STACK_REDIS_PORT"


@dataclass(frozen=True)
class RedisServer:
    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def data(self) -> Path:
        return self.root / "redis"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "redis.log"

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=2).ping())
        except Exception:
            return False

    def owned_pid(self, pids: Pids) -> int | None:
        """This stack's redis-server: its pid file, the program, and its data folder as its
        working directory (Redis rewrites its title, so its arguments cannot tell)."""
        return pids.owned(NAME, "redis-server", cwd=self.data)

    def conflict(self, pids: Pids) -> PortTaken | None:
        if self.owned_pid(pids) is None and port_taken(self.port):
            return refuse_foreign(NAME, self.port, VARIABLE, self.root)
        return None

    def command(self, binary: str) -> list[str]:
        return [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data),
            "--daemonize", "no",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
        ]  # fmt: skip

    def up(self, pids: Pids) -> list[str]:
        """Start Redis unless this stack's runs; return ["redis"] when started now."""
        own = self.owned_pid(pids)
        if own is not None:
            reuse(NAME, own, self.answers, 20, self.log)
            return []
        conflict = self.conflict(pids)
        if conflict is not None:
            raise conflict
        binary = shutil.which("redis-server")
        if binary is None:
            apt_install(["redis-server"], NAME, self.log.parent / "apt.log")
            binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.data.mkdir(parents=True, exist_ok=True)
        cmd = self.command(binary)
        pid = pids.spawn(NAME, cmd, self.log)
        if not wait(lambda: self.answers() or not pid_alive(pid), 20):
            raise fail(NAME, cmd, self.log, "did not answer PING within 20 s")
        if not self.answers():
            raise fail(NAME, cmd, self.log, "exited during start-up")
        return [NAME]
