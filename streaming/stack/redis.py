"""Redis in the local stack: `redis-server` from Debian, AOF on, data in `<root>/redis`."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from streaming.stack.processes import Pids, apt_install, fail, pid_alive, wait

NAME = "redis"


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
        """Start Redis unless it answers; return ["redis"] when started now."""
        if self.answers():
            return []
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
