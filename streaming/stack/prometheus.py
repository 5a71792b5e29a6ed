"""Prometheus in the local stack (`ot stack up --monitoring`): from Debian, scraping every
long-running `ot` command of this machine on its default metrics port, with the alerting rules
of `deploy/prometheus/alerts.yml` (the same file docker-compose.yml mounts).

Its config is written on every start; its data stays in `<root>/prometheus/data` (two days).
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from streaming.observability.metrics import METRICS_PORTS, SCRAPE_JOBS
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

NAME = "prometheus"
VARIABLE = "OT_STACK_PROMETHEUS_PORT"
DEFAULT_PORT = 19090
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_INTERVAL = "5s"


def scrape_config(rules: Path, host: str = "127.0.0.1") -> dict[str, object]:
    """One job per command (its compose service name), at its default metrics port."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": SCRAPE_JOBS[command],
                "static_configs": [{"targets": [f"{host}:{port}"]}],
            }
            for command, port in METRICS_PORTS.items()
        ],
    }


def binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)


@dataclass(frozen=True)
class Prometheus:
    root: Path
    port: int = DEFAULT_PORT

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def folder(self) -> Path:
        return self.root / "prometheus"

    @property
    def config_file(self) -> Path:
        return self.folder / "prometheus.yml"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "prometheus.log"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def owned_pid(self, pids: Pids) -> int | None:
        return pids.owned(NAME, "prometheus", arg=f"--config.file={self.config_file}")

    def conflict(self, pids: Pids) -> PortTaken | None:
        if self.owned_pid(pids) is None and port_taken(self.port):
            return refuse_foreign(NAME, self.port, VARIABLE, self.root)
        return None

    def write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        # JSON is YAML: no YAML writer needed for a generated file.
        self.config_file.write_text(
            "# Written by `ot stack up --monitoring` (streaming/stack/prometheus.py).\n"
            + json.dumps(scrape_config(RULES), indent=2)
            + "\n"
        )
        return self.config_file

    def up(self, pids: Pids) -> list[str]:
        """Start Prometheus unless this stack's runs; return ["prometheus"] when started now."""
        own = self.owned_pid(pids)
        if own is not None:
            reuse(NAME, own, self.answers, 30, self.log)
            return []
        conflict = self.conflict(pids)
        if conflict is not None:
            raise conflict
        program = binary("prometheus")
        if program is None:
            apt_install(["prometheus"], NAME, self.log.parent / "apt.log")
            program = binary("prometheus") or "/usr/bin/prometheus"
        cmd = [
            program,
            f"--config.file={self.write_config()}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]
        pid = pids.spawn(NAME, cmd, self.log)
        if not wait(lambda: self.answers() or not pid_alive(pid), 30):
            raise fail(NAME, cmd, self.log, "did not answer /-/ready within 30 s")
        if not self.answers():
            raise fail(NAME, cmd, self.log, "exited during start-up")
        return [NAME]
