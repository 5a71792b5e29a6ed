"""The local stack: real Kafka (KRaft, from Maven jars), Redis, PostgreSQL and Mosquitto (MQTT) as
plain processes.

No Docker engine exists on the development and CI machines, so `ot stack up` runs the real servers
from what the registries give: the Kafka broker jars resolved by Maven from the pinned `pom.xml`,
Redis, PostgreSQL and Mosquitto from Debian packages (installed when missing). Every service keeps
its data, config, log and pid file under one ignored folder (`.stack/` at the repository root, or
`OT_STACK_DIR`), on non-default loopback ports.

`up` is idempotent (a service that answers is reused), waits until each service really answers,
and creates the topics. `down` stops only the processes whose pid files it wrote.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from streaming.kafka.config import MESSAGE_MAX_BYTES
from streaming.settings import (
    DEFAULT_KAFKA_PORT,
    DEFAULT_MQTT_PORT,
    DEFAULT_PG_PORT,
    DEFAULT_REDIS_PORT,
    Settings,
    Topics,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = Path(__file__).resolve().parent / "pom.xml"
SERVICES = ("kafka", "redis", "postgres", "mosquitto")
CONTROLLER_PORT_OFFSET = 100  # controller i listens on broker port i + 100
KAFKA_HEAP = os.environ.get("OT_KAFKA_HEAP", "512m")
# QoS 1 messages Mosquitto holds per client session beyond those in flight (its default is 1000,
# which would drop readings the moment the bridge is away for a second at fleet rate). Enough
# for about a minute of the bridge's benchmark rate; docs/mqtt.md explains the limit.
MQTT_MAX_QUEUED = 2_000_000
MQTT_AUTOSAVE_S = 10  # the broker writes its persistence file this often (and on shutdown)


class StackError(RuntimeError):
    """A service failed: the message names it, the command and the last lines of its log."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def _fail(service: str, command: list[str] | str, log: Path, why: str) -> StackError:
    cmd = command if isinstance(command, str) else " ".join(command)
    return StackError(f"{service}: {why}\n  command: {cmd}\n  log: {log}\n{_tail(log)}")


def _is_root() -> bool:
    return os.geteuid() == 0


def _apt_install(packages: list[str], service: str, log: Path) -> None:
    """Install Debian packages when a service's binaries are missing (needs root or sudo)."""
    prefix = [] if _is_root() else (["sudo", "-n"] if shutil.which("sudo") else None)
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
                raise _fail(service, cmd, log, "package installation failed")


def _port_from_env(var: str, default: int) -> int:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"{var}={raw!r} must be a TCP port number")
    return int(raw)


def _reachable_by_postgres(path: Path) -> bool:
    """Can the `postgres` OS user enter `path` (every ancestor searchable)?"""
    try:
        return (
            subprocess.run(
                ["test", "-x", str(path)], user="postgres", stdin=subprocess.DEVNULL
            ).returncode
            == 0
        )
    except (OSError, KeyError):
        return False


def _pid_alive(pid: int) -> bool:
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


def _wait(predicate, timeout: float, interval: float = 0.25) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def storage_format_command(
    java: str, log4j: Path, classpath: str, cluster_id: str, props: Path
) -> list[str]:
    """Kafka's storage format. The id goes as `--cluster-id=<id>`: a base64url id may start with
    '-', which the tool would read as an option if it came as a separate argument."""
    return [
        java, "-Xmx256m", f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
        "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props),
        "--ignore-formatted",
    ]  # fmt: skip


@dataclass
class LocalStack:
    root: Path = REPO_ROOT / ".stack"
    brokers: int = 1
    kafka_port: int = DEFAULT_KAFKA_PORT
    redis_port: int = DEFAULT_REDIS_PORT
    pg_port: int = DEFAULT_PG_PORT
    mqtt_port: int = DEFAULT_MQTT_PORT
    services: tuple[str, ...] = SERVICES
    topics: Topics = field(default_factory=Topics)
    readings_partitions: int = 6

    @classmethod
    def from_env(cls, brokers: int | None = None) -> LocalStack:
        root = Path(os.environ.get("OT_STACK_DIR") or REPO_ROOT / ".stack")
        stack = cls(
            root=root.resolve(),
            brokers=1,
            kafka_port=_port_from_env("OT_STACK_KAFKA_PORT", DEFAULT_KAFKA_PORT),
            redis_port=_port_from_env("OT_STACK_REDIS_PORT", DEFAULT_REDIS_PORT),
            pg_port=_port_from_env("OT_STACK_PG_PORT", DEFAULT_PG_PORT),
            mqtt_port=_port_from_env("OT_STACK_MQTT_PORT", DEFAULT_MQTT_PORT),
        )
        stack.brokers = brokers or stack._running_brokers() or 1
        return stack

    # -- addresses -------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.kafka_port + i}" for i in range(self.brokers))

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def pg_dsn(self) -> str:
        return f"postgresql://ot:ot@127.0.0.1:{self.pg_port}/ot"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

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

    def _pidfile(self, name: str) -> Path:
        return self.root / "pids" / f"{name}.pid"

    def _read_pid(self, name: str) -> int | None:
        try:
            pid = int(self._pidfile(name).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def _kafka_nodes(self) -> list[str]:
        return [f"kafka-{i}" for i in range(1, self.brokers + 1)]

    def _running_brokers(self) -> int:
        marker = self.root / "kafka" / "running-brokers"
        try:
            count = int(marker.read_text())
        except (OSError, ValueError):
            return 0
        return count if self._read_pid("kafka-1") else 0

    # -- public API --------------------------------------------------------------------------------
    def up(self) -> list[str]:
        """Start whatever is not answering; return the names of the processes started now."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "pids").mkdir(exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        started: list[str] = []
        if "redis" in self.services:
            started += self._redis_up()
        if "postgres" in self.services:
            started += self._postgres_up()
        if "mosquitto" in self.services:
            started += self._mosquitto_up()
        if "kafka" in self.services:
            started += self._kafka_up()
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
                if self._postgres_stop():
                    stopped.append(name)
                continue
            pid = self._read_pid(name)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            if not _wait(lambda pid=pid: not _pid_alive(pid), 30):
                os.kill(pid, signal.SIGKILL)
                _wait(lambda pid=pid: not _pid_alive(pid), 10)
            self._pidfile(name).unlink(missing_ok=True)
            stopped.append(name)
        return stopped

    def status(self) -> dict[str, bool]:
        result = {}
        if "kafka" in self.services:
            result["kafka"] = self._kafka_answers(self.brokers, timeout=5)
        if "redis" in self.services:
            result["redis"] = self._redis_answers()
        if "postgres" in self.services:
            result["postgres"] = self._postgres_answers()
        if "mosquitto" in self.services:
            result["mosquitto"] = self._mosquitto_answers()
        return result

    def kill_broker(self, node_id: int) -> None:
        """SIGKILL one Kafka node (failover drills)."""
        pid = self._read_pid(f"kafka-{node_id}")
        if pid is None:
            raise StackError(f"kafka-{node_id}: not running")
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _pid_alive(pid), 10)

    def _all_process_names(self) -> list[str]:
        pids = self.root / "pids"
        names = sorted(p.stem for p in pids.glob("*.pid")) if pids.is_dir() else []
        if (self.root / "postgres" / "data" / "postmaster.pid").exists():
            names.append("postgres")
        return names

    def _spawn(self, name: str, cmd: list[str], log: Path, **kwargs) -> int:  # type: ignore[no-untyped-def]
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the `ot` process and its Ctrl-C
                **kwargs,
            )
        self._pidfile(name).write_text(str(proc.pid))
        return proc.pid

    # -- Redis ---------------------------------------------------------------------------------
    def _redis_answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.redis_url, socket_timeout=2).ping())
        except Exception:
            return False

    def _redis_up(self) -> list[str]:
        if self._redis_answers():
            return []
        log = self.logs / "redis.log"
        binary = shutil.which("redis-server")
        if binary is None:
            _apt_install(["redis-server"], "redis", self.logs / "apt.log")
            binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        data = self.root / "redis"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.redis_port),
            "--dir", str(data),
            "--daemonize", "no",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
        ]  # fmt: skip
        pid = self._spawn("redis", cmd, log)
        if not _wait(lambda: self._redis_answers() or not _pid_alive(pid), 20):
            raise _fail("redis", cmd, log, "did not answer PING within 20 s")
        if not self._redis_answers():
            raise _fail("redis", cmd, log, "exited during start-up")
        return ["redis"]

    # -- Mosquitto (MQTT) ---------------------------------------------------------------------
    def _mosquitto_answers(self) -> bool:
        """A real MQTT handshake (CONNECT -> CONNACK), not just an open port."""
        from streaming.bridge.client import MqttAddress, MqttClient, MqttError

        client = MqttClient(
            MqttAddress("127.0.0.1", self.mqtt_port),
            f"ot-stack-probe-{os.getpid()}",
            connect_timeout=2,
        )
        try:
            client.connect()
        except (MqttError, OSError, ValueError):
            return False
        client.disconnect()
        return True

    def _mosquitto_config(self) -> Path:
        base = self.root / "mosquitto"
        data = base / "data"
        data.mkdir(parents=True, exist_ok=True)
        path = base / "mosquitto.conf"
        path.write_text(
            "# Written by `ot stack up` (streaming/stack/local.py): the local development broker.\n"
            "# Anonymous clients are allowed because the only listener is on 127.0.0.1; a broker\n"
            "# reachable from a plant network needs a password file or certificates instead.\n"
            f"listener {self.mqtt_port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "# QoS 1 persistent sessions (the bridge's) survive a broker restart only with\n"
            f"# persistence; the file is saved every {MQTT_AUTOSAVE_S} s and on shutdown.\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            f"autosave_interval {MQTT_AUTOSAVE_S}\n"
            "# Messages held for an offline or busy subscriber, beyond those in flight.\n"
            f"max_queued_messages {MQTT_MAX_QUEUED}\n"
            "# Same user as the other stack services (only applies when started as root).\n"
            f"user {getpass.getuser()}\n"
            "log_dest stdout\n"
            "log_type error\n"
            "log_type warning\n"
            "log_type notice\n"
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
        )
        return path

    def _mosquitto_up(self) -> list[str]:
        if self._mosquitto_answers():
            return []
        if self._port_taken(self.mqtt_port):
            raise StackError(
                f"mosquitto: port {self.mqtt_port} is taken by something that does not speak "
                "MQTT 5 (set OT_STACK_MQTT_PORT)"
            )
        log = self.logs / "mosquitto.log"
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if binary is None:
            _apt_install(["mosquitto", "mosquitto-clients"], "mosquitto", self.logs / "apt.log")
            binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        cmd = [binary, "-c", str(self._mosquitto_config())]
        pid = self._spawn("mosquitto", cmd, log)
        if not _wait(lambda: self._mosquitto_answers() or not _pid_alive(pid), 20):
            raise _fail("mosquitto", cmd, log, "did not answer an MQTT CONNECT within 20 s")
        if not self._mosquitto_answers():
            raise _fail("mosquitto", cmd, log, "exited during start-up")
        return ["mosquitto"]

    @staticmethod
    def _port_taken(port: int) -> bool:
        with socket.socket() as probe:
            probe.settimeout(1)
            return probe.connect_ex(("127.0.0.1", port)) == 0

    # -- PostgreSQL ----------------------------------------------------------------------------
    @property
    def _pg_dir(self) -> Path:
        """PostgreSQL's folder: `<root>/postgres`, unless the `postgres` OS user cannot reach it
        (a checkout under a private folder, e.g. 0700): then a folder under /var/tmp it owns,
        linked from `<root>/postgres` so everything stays findable in one place."""
        link = self.root / "postgres"
        if link.is_symlink() or not _is_root():
            return link.resolve() if link.is_symlink() else link
        if link.exists() or _reachable_by_postgres(self.root):
            return link
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        target = Path("/var/tmp") / f"ot-stack-postgres-{digest}"
        target.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=True)
        return target

    def _pg_bin(self) -> Path | None:
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/postgres"),
            key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        )
        return versions[-1].parent if versions else None

    def _pg_run(self, cmd: list[str], log: Path) -> subprocess.CompletedProcess[bytes]:
        """Run a PostgreSQL tool as the `postgres` OS user when root (initdb refuses root)."""
        user = "postgres" if _is_root() else None
        with log.open("ab") as out:
            return subprocess.run(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=user,
                group=user,
            )

    def _pg_socket_dsn(self, dbname: str = "postgres") -> str:
        """Superuser access over the Unix socket (trust), for bootstrapping only."""
        run = self._pg_dir / "run"
        return f"host={run} port={self.pg_port} user=postgres dbname={dbname} connect_timeout=3"

    def _postgres_answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.pg_dsn, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    def _postgres_up(self) -> list[str]:
        if self._postgres_answers():
            return []
        # pg_ctl writes its log as the postgres user: keep it in a folder that user owns.
        log = self._pg_dir / "postgres.log"
        bindir = self._pg_bin()
        if bindir is None:
            _apt_install(["postgresql"], "postgres", self.logs / "apt.log")
            bindir = self._pg_bin()
            if bindir is None:
                raise StackError("postgres: installed but no /usr/lib/postgresql/*/bin/postgres")
        data, run = self._pg_dir / "data", self._pg_dir / "run"
        run.mkdir(parents=True, exist_ok=True)
        if _is_root():
            shutil.chown(self._pg_dir, "postgres", "postgres")
            shutil.chown(run, "postgres", "postgres")
            log.touch()
            shutil.chown(log, "postgres", "postgres")
        if not (data / "PG_VERSION").exists():
            cmd = [
                str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256",
            ]  # fmt: skip
            if self._pg_run(cmd, log).returncode:
                raise _fail("postgres", cmd, log, "initdb failed")
        options = [
            f"-p {self.pg_port}",
            f"-k {run}",
            "-c listen_addresses=127.0.0.1",
            "-c shared_buffers=256MB",
            "-c max_wal_size=2GB",
            "-c synchronous_commit=off",
            "-c max_connections=100",
        ]
        timescale = self._timescale_library(bindir)
        if timescale:
            options.append("-c shared_preload_libraries=timescaledb")
        cmd = [
            str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
            "-o", " ".join(options), "start",
        ]  # fmt: skip
        if self._pg_run(cmd, log).returncode:
            raise _fail("postgres", cmd, log, "pg_ctl start failed")
        self._pg_bootstrap(timescale, log)
        if not self._postgres_answers():
            raise _fail("postgres", cmd, log, f"started but {self.pg_dsn} does not answer")
        return ["postgres"]

    def _timescale_library(self, bindir: Path) -> bool:
        pg_config = bindir / "pg_config"
        try:
            libdir = subprocess.run(
                [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return False
        return Path(libdir, "timescaledb.so").exists()

    def _pg_bootstrap(self, timescale: bool, log: Path) -> None:
        """Create the `ot` role and database once; enable timescaledb when it is there."""
        import psycopg

        with psycopg.connect(self._pg_socket_dsn(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'ot'").fetchone():
                conn.execute("CREATE ROLE ot LOGIN PASSWORD 'ot' CREATEDB")
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'ot'").fetchone():
                conn.execute("CREATE DATABASE ot OWNER ot")
        note = self._pg_dir / "timescaledb.txt"
        with psycopg.connect(self._pg_socket_dsn("ot"), autocommit=True) as conn:
            if timescale:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                note.write_text("enabled\n")
            elif not note.exists():
                print(
                    "[stack] postgres: the timescaledb extension is not available; the pipeline "
                    "uses plain tables and materialized views",
                    flush=True,
                )
                note.write_text("not available\n")

    def _postgres_stop(self) -> bool:
        data = self._pg_dir / "data"
        if not (data / "postmaster.pid").exists():
            return False
        bindir = self._pg_bin()
        if bindir is None:
            return False
        cmd = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        return self._pg_run(cmd, self._pg_dir / "postgres.log").returncode == 0

    # -- Kafka -----------------------------------------------------------------------------------
    @property
    def kafka_libs(self) -> Path:
        return self.root / "kafka-libs"

    def ensure_kafka_jars(self) -> Path:
        """Resolve the pinned broker jars through Maven once; later runs reuse the cache."""
        stamp = self.kafka_libs / ".resolved"
        if stamp.exists() and stamp.read_text() == POM.read_text():
            return self.kafka_libs
        if shutil.which("mvn") is None:
            raise StackError("kafka: Maven (mvn) is needed to fetch the broker jars")
        log = self.logs / "maven.log"
        print("[stack] resolving the Kafka broker jars with Maven (first run only)", flush=True)
        if self.kafka_libs.exists():
            shutil.rmtree(self.kafka_libs)
        cmd = [
            "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={self.kafka_libs}",
        ]  # fmt: skip
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode:
                raise _fail("kafka", cmd, log, "Maven could not resolve the broker jars")
        stamp.write_text(POM.read_text())
        return self.kafka_libs

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise StackError("kafka: Java 17+ is needed (java not found on PATH)")
        return java

    def _kafka_answers(self, expected_brokers: int, timeout: float = 5) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
            meta = admin.list_topics(timeout=timeout)
        except Exception:
            return False
        return len(meta.brokers) >= expected_brokers

    def _kafka_dir(self) -> Path:
        return self.root / "kafka" / f"{self.brokers}-node"

    def _kafka_properties(self, node: int) -> str:
        n = self.brokers
        rf = min(3, n)
        min_isr = 2 if n >= 3 else 1
        cport = self.kafka_port + CONTROLLER_PORT_OFFSET
        voters = ",".join(f"{i + 1}@127.0.0.1:{cport + i}" for i in range(n))
        port = self.kafka_port + node - 1
        data = self._kafka_dir() / f"node-{node}" / "data"
        lines = {
            "process.roles": "broker,controller",
            "node.id": node,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport + node - 1}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": data,
            "num.partitions": self.readings_partitions,
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "false",
            "num.network.threads": 2,
            "num.io.threads": 4,
            "log.retention.hours": 168,
            "message.max.bytes": MESSAGE_MAX_BYTES,
        }
        return "".join(f"{k}={v}\n" for k, v in lines.items())

    def _log4j_config(self) -> Path:
        path = self.root / "kafka" / "log4j2.properties"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "status = warn\n"
            "appender.console.type = Console\n"
            "appender.console.name = STDOUT\n"
            "appender.console.layout.type = PatternLayout\n"
            "appender.console.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.stdout.ref = STDOUT\n"
            "logger.kafka.name = kafka\n"
            "logger.kafka.level = INFO\n"
            "logger.controller.name = state.change.logger\n"
            "logger.controller.level = WARN\n"
        )
        return path

    def _kafka_up(self) -> list[str]:
        running = self._running_brokers()
        if running and running != self.brokers:
            raise StackError(
                f"kafka: a {running}-broker cluster is running; `ot stack down` first to switch "
                f"to {self.brokers}"
            )
        if self._kafka_answers(self.brokers, timeout=3):
            return []
        libs = self.ensure_kafka_jars()
        java = self._java()
        log4j = self._log4j_config()
        classpath = f"{libs}/*"
        base = self._kafka_dir()
        cluster_file = base / "cluster-id"
        base.mkdir(parents=True, exist_ok=True)
        if not cluster_file.exists():
            # Kafka's cluster ids are 16 random bytes, base64url without padding.
            cluster_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22])
        cluster_id = cluster_file.read_text().strip()
        # Format every node that has no storage yet (all with the same cluster id), in parallel.
        formats = []
        for node in range(1, self.brokers + 1):
            ndir = base / f"node-{node}"
            ndir.mkdir(parents=True, exist_ok=True)
            props = ndir / "server.properties"
            props.write_text(self._kafka_properties(node))
            if not (ndir / "data" / "meta.properties").exists():
                cmd = storage_format_command(java, log4j, classpath, cluster_id, props)
                log = self.logs / f"kafka-{node}-format.log"
                out = log.open("ab")
                formats.append((cmd, log, subprocess.Popen(cmd, stdout=out, stderr=out), out))
        for cmd, log, proc, out in formats:
            rc = proc.wait()
            out.close()
            if rc:
                raise _fail("kafka", cmd, log, "storage format failed")
        started = []
        procs = []
        for node in range(1, self.brokers + 1):
            name = f"kafka-{node}"
            if self._read_pid(name):
                continue
            ndir = base / f"node-{node}"
            cmd = [
                java, f"-Xmx{KAFKA_HEAP}", f"-Xms{KAFKA_HEAP}", "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20", "-XX:+ExplicitGCInvokesConcurrent",
                "-Djava.awt.headless=true", f"-Dkafka.logs.dir={ndir}",
                f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
                "kafka.Kafka", str(ndir / "server.properties"),
            ]  # fmt: skip
            log = self.logs / f"{name}.log"
            procs.append((name, cmd, log, self._spawn(name, cmd, log)))
            started.append(name)
        (self.root / "kafka" / "running-brokers").write_text(str(self.brokers))
        ok = _wait(
            lambda: (
                self._kafka_answers(self.brokers, timeout=2)
                or any(not _pid_alive(pid) for *_, pid in procs)
            ),
            90,
            interval=0.5,
        )
        for name, cmd, log, pid in procs:
            if not _pid_alive(pid):
                raise _fail(name, cmd, log, "exited during start-up")
        if not ok:
            name, cmd, log, _ = (
                procs[0] if procs else ("kafka", ["kafka"], self.logs / "kafka-1.log", 0)
            )
            raise _fail(name, cmd, log, f"did not answer on {self.bootstrap} within 90 s")
        return started

    def settings(self) -> Settings:
        return Settings.from_env({**os.environ, **self.env()})

    def describe(self) -> str:
        state = self.status()
        lines = []
        if "kafka" in self.services:
            lines.append(f"kafka     {self.bootstrap}  ({self.brokers} broker(s), KRaft)")
        if "redis" in self.services:
            lines.append(f"redis     {self.redis_url}")
        if "postgres" in self.services:
            ts = (
                (self._pg_dir / "timescaledb.txt").read_text().strip()
                if (self._pg_dir / "timescaledb.txt").exists()
                else "unknown"
            )
            lines.append(f"postgres  {self.pg_dsn}  (timescaledb: {ts})")
        if "mosquitto" in self.services:
            lines.append(f"mosquitto {self.mqtt_url}  (MQTT 5, persistent sessions)")
        return "\n".join(
            f"{'up  ' if state.get(line.split()[0]) else 'DOWN'}  {line}" for line in lines
        )

    def to_json(self) -> str:
        return json.dumps({"status": self.status(), **self.env(), "root": str(self.root)})
