"""The local stack: real Kafka (KRaft, from Maven jars), Redis, PostgreSQL and Mosquitto (MQTT) as
plain processes. `LocalStack` orchestrates them: up, down, status, env, describe.

No Docker engine exists on the development and CI machines, so `ot stack up` runs the real servers
from what the registries give: the Kafka broker jars resolved by Maven from the pinned `pom.xml`,
Redis, PostgreSQL and Mosquitto from Debian packages (installed when missing). Every service keeps
its data, config, log and pid file under one ignored folder (`.stack/` at the repository root, or
`OT_STACK_DIR`), on non-default loopback ports.

One module per service, each with its config, start, "does it answer" probe and stop:
`kafka.py`, `redis.py`, `postgres.py`, `mosquitto.py`; what they share (spawning, pid files,
waiting, ports, apt installs, `StackError`) is in `processes.py`.

The stack knows its own services by its folder and pid files: a live process that is the expected
program started with this stack's config or data folder. `up` is idempotent (this stack's running
services are reused), waits until each service really answers, and creates the topics; a port held
by anything else is refused with one line (which service, which port, what to do), never adopted.
`down` stops only this stack's processes.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from streaming.settings import (
    DEFAULT_KAFKA_PORT,
    DEFAULT_MQTT_PORT,
    DEFAULT_PG_PORT,
    DEFAULT_REDIS_PORT,
    Settings,
    Topics,
)
from streaming.stack.kafka import CONTROLLER_PORT_OFFSET, KafkaCluster, ensure_jars
from streaming.stack.mosquitto import Mosquitto
from streaming.stack.postgres import Postgres
from streaming.stack.processes import (
    Pids,
    PortTaken,
    StackError,
    pid_alive,
    port_from_env,
    wait,
)
from streaming.stack.prometheus import DEFAULT_PORT as DEFAULT_PROMETHEUS_PORT
from streaming.stack.prometheus import Prometheus
from streaming.stack.redis import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("kafka", "redis", "postgres", "mosquitto")
MONITORING = ("prometheus",)  # with `ot stack up --monitoring`

__all__ = ["REPO_ROOT", "SERVICES", "LocalStack", "PortTaken", "StackError"]


@dataclass
class LocalStack:
    root: Path = REPO_ROOT / ".stack"
    brokers: int = 1
    kafka_port: int = DEFAULT_KAFKA_PORT
    redis_port: int = DEFAULT_REDIS_PORT
    pg_port: int = DEFAULT_PG_PORT
    mqtt_port: int = DEFAULT_MQTT_PORT
    prometheus_port: int = DEFAULT_PROMETHEUS_PORT
    services: tuple[str, ...] = SERVICES
    topics: Topics = field(default_factory=Topics)
    readings_partitions: int = 6

    @classmethod
    def from_env(cls, brokers: int | None = None) -> LocalStack:
        """The stack of `OT_STACK_DIR` on the `OT_STACK_*_PORT` ports; a bad port variable
        raises SettingsError (one line)."""
        root = Path(os.environ.get("OT_STACK_DIR") or REPO_ROOT / ".stack")
        stack = cls(
            root=root.resolve(),
            brokers=1,
            # Up to 3 brokers from this port on, their controllers 100 above.
            kafka_port=port_from_env(
                "OT_STACK_KAFKA_PORT",
                DEFAULT_KAFKA_PORT,
                highest=65535 - CONTROLLER_PORT_OFFSET - 2,
            ),
            redis_port=port_from_env("OT_STACK_REDIS_PORT", DEFAULT_REDIS_PORT),
            pg_port=port_from_env("OT_STACK_PG_PORT", DEFAULT_PG_PORT),
            mqtt_port=port_from_env("OT_STACK_MQTT_PORT", DEFAULT_MQTT_PORT),
            prometheus_port=port_from_env("OT_STACK_PROMETHEUS_PORT", DEFAULT_PROMETHEUS_PORT),
        )
        # The size `up` recorded is authoritative: with a broker down, node 1 included, the stack
        # is still a 3-broker one (never a fresh single node on broker 1's port).
        stack.brokers = brokers or stack.kafka.recorded_brokers() or 1
        return stack

    # -- the services ------------------------------------------------------------------------------
    @property
    def kafka(self) -> KafkaCluster:
        return KafkaCluster(self.root, self.brokers, self.kafka_port, self.readings_partitions)

    @property
    def redis(self) -> RedisServer:
        return RedisServer(self.root, self.redis_port)

    @property
    def postgres(self) -> Postgres:
        return Postgres(self.root, self.pg_port)

    @property
    def mosquitto(self) -> Mosquitto:
        return Mosquitto(self.root, self.mqtt_port)

    @property
    def prometheus(self) -> Prometheus:
        return Prometheus(self.root, self.prometheus_port)

    def with_monitoring(self) -> LocalStack:
        """The same stack with Prometheus (`ot stack up --monitoring`)."""
        return replace(self, services=tuple(dict.fromkeys([*self.services, *MONITORING])))

    def monitoring_running(self) -> bool:
        return self.prometheus.owned_pid(self.pids) is not None

    @property
    def pids(self) -> Pids:
        return Pids(self.root)

    # -- addresses -------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    @property
    def redis_url(self) -> str:
        return self.redis.url

    @property
    def pg_dsn(self) -> str:
        return self.postgres.dsn

    @property
    def mqtt_url(self) -> str:
        return self.mosquitto.url

    def env(self) -> dict[str, str]:
        env = {}
        if "kafka" in self.services:
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap
        if "redis" in self.services:
            env["REDIS_URL"] = self.redis_url
        if "postgres" in self.services:
            env["OT_PG_DSN"] = self.pg_dsn
        if "mosquitto" in self.services:
            env["MQTT_URL"] = self.mqtt_url
        return env

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def kafka_libs(self) -> Path:
        return self.kafka.libs

    def ensure_kafka_jars(self) -> Path:
        """Resolve the pinned broker jars through Maven once; later runs reuse the cache."""
        return ensure_jars(self.kafka_libs, self.logs)

    # -- public API --------------------------------------------------------------------------------
    def up(self, started: list[str] | None = None) -> list[str]:
        """Start whatever of this stack is not running; return the names of the processes
        started now (also appended to `started` as they start, so a caller interrupted half-way
        knows what to stop). Refuses (PortTaken, before starting anything) when a port it needs
        is held by a process it did not start."""
        conflicts = self.conflicts()
        if conflicts:
            raise PortTaken("\n".join(str(c) for c in conflicts.values()))
        self.root.mkdir(parents=True, exist_ok=True)
        self.pids.folder.mkdir(exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        started = [] if started is None else started
        if "redis" in self.services:
            started += self.redis.up(self.pids)
        if "postgres" in self.services:
            started += self.postgres.up(self.logs)
        if "mosquitto" in self.services:
            started += self.mosquitto.up(self.pids)
        if "prometheus" in self.services:
            started += self.prometheus.up(self.pids)
        if "kafka" in self.services:
            started += self.kafka.up(self.pids)
            from streaming.stack.topics import create_topics

            create_topics(
                self.bootstrap,
                self.topics,
                readings_partitions=self.readings_partitions,
                replication_factor=min(3, self.brokers),
            )
        return started

    def down(self, only: Iterable[str] | None = None) -> list[str]:
        """Stop the processes this stack started (all of them, or those named in `only`)."""
        names = list(only) if only is not None else self._all_process_names()
        stopped = []
        for name in names:
            if name == "postgres":
                if self.postgres.stop():
                    stopped.append(name)
                continue
            pid = self._own_pid(name)
            if pid is None:
                self.pids.file(name).unlink(missing_ok=True)  # stale: gone, or not ours any more
                continue
            self.pids.stop(name, pid)
            stopped.append(name)
        if not self.kafka.owned_pids(self.pids):
            self.kafka.marker.unlink(missing_ok=True)  # no node left: the size is free again
        return stopped

    # -- one service or broker node (drills, operators) ------------------------------------------
    def _check_name(self, name: str) -> None:
        nodes = self.kafka.node_names()
        known = [*nodes, *dict.fromkeys([*self.services, *MONITORING])]
        if name not in known:
            raise StackError(f"{name}: not a service of this stack ({', '.join(known)})")

    def start(self, name: str) -> list[str]:
        """Start one service or Kafka node (`kafka-2`) if it is not running; `kafka` starts the
        cluster's missing nodes. Returns what was started."""
        self._check_name(name)
        if name.startswith("kafka-"):
            return self.kafka.up(self.pids, [int(name[6:])])
        if name == "kafka":
            return self.kafka.up(self.pids)
        return replace(self, services=(name,)).up()

    def stop(self, name: str) -> list[str]:
        """Stop one service or Kafka node (SIGTERM, then SIGKILL after 30 s)."""
        self._check_name(name)
        return self.down(only=self.kafka.node_names() if name == "kafka" else [name])

    def restart(self, name: str) -> list[str]:
        self.stop(name)
        return self.start(name)

    def kill(self, name: str) -> None:
        """SIGKILL one service or Kafka node (drills)."""
        self._check_name(name)
        if name.startswith("kafka-"):
            self.kill_broker(int(name[6:]))
            return
        names = self.kafka.node_names() if name == "kafka" else [name]
        for each in names:
            pid = self.postgres.owned_pid() if each == "postgres" else self._own_pid(each)
            if pid is None:
                raise StackError(f"{each}: not running")
            os.kill(pid, signal.SIGKILL)
            wait(lambda pid=pid: not pid_alive(pid), 10)  # type: ignore[misc]

    def pause(self, name: str, resume: bool = False) -> None:
        """SIGSTOP one service or Kafka node: hung, not dead (its connections stay open and
        nothing answers); `resume=True` sends SIGCONT (drills)."""
        self._check_name(name)
        names = self.kafka.node_names() if name == "kafka" else [name]
        for each in names:
            pid = self.postgres.owned_pid() if each == "postgres" else self._own_pid(each)
            if pid is None:
                raise StackError(f"{each}: not running")
            os.kill(pid, signal.SIGCONT if resume else signal.SIGSTOP)

    def status(self) -> dict[str, bool]:
        """Per service: True when this stack's own process runs and answers (something else
        answering on the port is not this stack's service: see `conflicts`)."""
        pids = self.pids
        result = {}
        if "kafka" in self.services:
            result["kafka"] = self.kafka.state(pids) == "up"
        if "redis" in self.services:
            result["redis"] = bool(self.redis.owned_pid(pids)) and self.redis.answers()
        if "postgres" in self.services:
            result["postgres"] = bool(self.postgres.owned_pid()) and self.postgres.answers()
        if "mosquitto" in self.services:
            result["mosquitto"] = bool(self.mosquitto.owned_pid(pids)) and self.mosquitto.answers()
        if "prometheus" in self.services:
            result["prometheus"] = (
                bool(self.prometheus.owned_pid(pids)) and self.prometheus.answers()
            )
        return result

    def conflicts(self) -> dict[str, PortTaken]:
        """Services whose port is held by a process this stack did not start, with the line
        that says which port and what to do."""
        pids = self.pids
        found = {
            "kafka": self.kafka.conflict(pids) if "kafka" in self.services else None,
            "redis": self.redis.conflict(pids) if "redis" in self.services else None,
            "postgres": self.postgres.conflict() if "postgres" in self.services else None,
            "mosquitto": self.mosquitto.conflict(pids) if "mosquitto" in self.services else None,
            "prometheus": self.prometheus.conflict(pids) if "prometheus" in self.services else None,
        }
        return {name: error for name, error in found.items() if error is not None}

    def _own_pid(self, name: str) -> int | None:
        """The pid behind pid file `name` when it is still this stack's process."""
        if name.startswith("kafka-") and name[6:].isdigit():
            return self.kafka.node_pid(self.pids, int(name[6:]))
        if name == "redis":
            return self.redis.owned_pid(self.pids)
        if name == "mosquitto":
            return self.mosquitto.owned_pid(self.pids)
        if name == "prometheus":
            return self.prometheus.owned_pid(self.pids)
        return self.pids.read(name)

    def kill_broker(self, node_id: int) -> None:
        """SIGKILL one Kafka node (failover drills)."""
        self.kafka.kill(self.pids, node_id)

    def _all_process_names(self) -> list[str]:
        names = self.pids.names()
        if self.postgres.running():
            names.append("postgres")
        return names

    def settings(self) -> Settings:
        return Settings.from_env({**os.environ, **self.env()})

    def describe(self) -> str:
        """One line per service: `up`, `DOWN`, or `TAKEN` (its port is held by something that
        is not this stack's; `conflicts` says what)."""
        state: dict[str, bool | str] = {**self.status()}
        taken = self.conflicts()
        lines = []
        if "kafka" in self.services:
            kafka = self.kafka.state(self.pids)
            state["kafka"] = kafka
            down = [n for n in self.kafka.node_names() if n not in self.kafka.owned_pids(self.pids)]
            why = (
                f"; {', '.join(down)} down: `ot stack start {down[0]}`"
                if kafka == "DEGRADED"
                else ""
            )
            lines.append(f"kafka     {self.bootstrap}  ({self.brokers} broker(s), KRaft{why})")
        if "redis" in self.services:
            lines.append(f"redis     {self.redis_url}")
        if "postgres" in self.services:
            lines.append(f"postgres  {self.pg_dsn}  (timescaledb: {self.postgres.timescaledb()})")
        if "mosquitto" in self.services:
            lines.append(f"mosquitto {self.mqtt_url}  (MQTT 5, persistent sessions)")
        if "prometheus" in self.services:
            lines.append(
                f"prometheus {self.prometheus.url}  (alerts: {self.prometheus.url}/alerts)"
            )

        def mark(service: str) -> str:
            value = state.get(service)
            if service in taken:
                return "TAKEN"
            if isinstance(value, str):
                return value
            return "up" if value else "DOWN"

        return "\n".join(f"{mark(line.split()[0]):<5} {line}" for line in lines)

    def to_json(self) -> str:
        taken = {name: str(error) for name, error in self.conflicts().items()}
        kafka = self.kafka.state(self.pids) if "kafka" in self.services else None
        return json.dumps(
            {
                "status": self.status(),
                "kafka": kafka,
                "brokers": self.brokers,
                "brokers_up": sorted(self.kafka.owned_pids(self.pids)),
                "taken": taken,
                **self.env(),
                "root": str(self.root),
            }
        )
