"""Kafka in the local stack: the broker jars Maven resolves from the pinned `pom.xml`, run as
combined broker+controller KRaft nodes (1 or 3, static quorum), data in
`<root>/kafka/<N>-node/node-<i>/data`."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from streaming.kafka.config import MESSAGE_MAX_BYTES, admin_config
from streaming.stack.processes import (
    Pids,
    PortTaken,
    StackError,
    fail,
    pid_alive,
    port_taken,
    refuse_foreign,
    reuse,
    wait,
)

POM = Path(__file__).resolve().parent / "pom.xml"
CONTROLLER_PORT_OFFSET = 100  # controller i listens on broker port i + 100
KAFKA_HEAP = os.environ.get("OT_KAFKA_HEAP", "512m")
VARIABLE = "OT_STACK_KAFKA_PORT"


def ensure_jars(libs: Path, logs: Path) -> Path:
    """Resolve the pinned broker jars through Maven into `libs` once; later runs reuse them."""
    stamp = libs / ".resolved"
    if stamp.exists() and stamp.read_text() == POM.read_text():
        return libs
    if shutil.which("mvn") is None:
        raise StackError("kafka: Maven (mvn) is needed to fetch the broker jars")
    log = logs / "maven.log"
    print("[stack] resolving the Kafka broker jars with Maven (first run only)", flush=True)
    if libs.exists():
        shutil.rmtree(libs)
    cmd = [
        "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode:
            raise fail("kafka", cmd, log, "Maven could not resolve the broker jars")
    stamp.write_text(POM.read_text())
    return libs


def java() -> str:
    found = shutil.which("java")
    if found is None:
        raise StackError("kafka: Java 17+ is needed (java not found on PATH)")
    return found


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


@dataclass(frozen=True)
class KafkaCluster:
    root: Path
    brokers: int
    port: int  # node i listens on port + i - 1, its controller on port + 100 + i - 1
    readings_partitions: int = 6

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port + i}" for i in range(self.brokers))

    @property
    def libs(self) -> Path:
        return self.root / "kafka-libs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def folder(self) -> Path:
        """This layout's data folder (1 and 3 brokers each have their own)."""
        return self.root / "kafka" / f"{self.brokers}-node"

    @property
    def marker(self) -> Path:
        """How many brokers this stack's cluster has: written by `up`, removed by `down` once no
        node runs. It is the stack's size while it exists, even with nodes down (switching
        layouts needs `down` first)."""
        return self.root / "kafka" / "running-brokers"

    def node_names(self) -> list[str]:
        return [f"kafka-{i}" for i in range(1, self.brokers + 1)]

    def node_pid(self, pids: Pids, node: int) -> int | None:
        """Node `node` of this stack: its pid file, Java, and this layout's server.properties."""
        props = self.folder / f"node-{node}" / "server.properties"
        return pids.owned(f"kafka-{node}", "java", arg=str(props))

    def owned_pids(self, pids: Pids) -> dict[str, int]:
        found = {}
        for node, name in enumerate(self.node_names(), start=1):
            pid = self.node_pid(pids, node)
            if pid is not None:
                found[name] = pid
        return found

    def conflict(self, pids: Pids, nodes: list[int] | None = None) -> PortTaken | None:
        """The first broker or controller port of a node this stack does not run (of all, or of
        `nodes`) that something else holds."""
        own = self.owned_pids(pids)
        for node, name in enumerate(self.node_names(), start=1):
            if name in own or (nodes is not None and node not in nodes):
                continue
            for port in (self.port + node - 1, self.port + CONTROLLER_PORT_OFFSET + node - 1):
                if port_taken(port):
                    return refuse_foreign(name, port, VARIABLE, self.root)
        return None

    def recorded_brokers(self) -> int:
        """The size `up` recorded for this stack's cluster (0: none recorded)."""
        try:
            return int(self.marker.read_text())
        except (OSError, ValueError):
            return 0

    def running_brokers(self, pids: Pids) -> int:
        """The recorded size when any node of that layout runs (one dead broker, node 1
        included, does not make a 3-broker cluster a 1-broker one), else 0."""
        count = self.recorded_brokers()
        if not count:
            return 0
        layout = KafkaCluster(self.root, count, self.port, self.readings_partitions)
        return count if layout.owned_pids(pids) else 0

    def state(self, pids: Pids) -> str:
        """`up` (every node runs, the cluster answers), `DEGRADED` (some nodes down, the
        cluster still answers) or `DOWN`."""
        own = self.owned_pids(pids)
        if len(own) == self.brokers and self.answers(timeout=5):
            return "up"
        if own and self.answers(expected_brokers=1, timeout=5):
            return "DEGRADED"
        return "DOWN"

    def answers(self, expected_brokers: int | None = None, timeout: float = 5) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            admin = AdminClient(admin_config(self.bootstrap, log_level=0))
            meta = admin.list_topics(timeout=timeout)
        except Exception:
            return False
        return len(meta.brokers) >= (expected_brokers or self.brokers)

    def properties(self, node: int) -> str:
        n = self.brokers
        rf = min(3, n)
        min_isr = 2 if n >= 3 else 1
        cport = self.port + CONTROLLER_PORT_OFFSET
        voters = ",".join(f"{i + 1}@127.0.0.1:{cport + i}" for i in range(n))
        port = self.port + node - 1
        data = self.folder / f"node-{node}" / "data"
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

    def log4j_config(self) -> Path:
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

    def cluster_id(self) -> str:
        """The cluster id every node's storage is formatted with (created once per layout)."""
        cluster_file = self.folder / "cluster-id"
        self.folder.mkdir(parents=True, exist_ok=True)
        if not cluster_file.exists():
            # Kafka's cluster ids are 16 random bytes, base64url without padding.
            cluster_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22])
        return cluster_file.read_text().strip()

    def up(self, pids: Pids, nodes: list[int] | None = None) -> list[str]:
        """Start the nodes (all, or those numbered in `nodes`) that are not running; return the
        names of the nodes started now."""
        running = self.running_brokers(pids)
        if running and running != self.brokers:
            raise StackError(
                f"kafka: a {running}-broker cluster is running; `ot stack down` first to switch "
                f"to {self.brokers}"
            )
        wanted = list(range(1, self.brokers + 1)) if nodes is None else nodes
        for node in wanted:
            if not 1 <= node <= self.brokers:
                raise StackError(f"kafka-{node}: this stack has {self.brokers} broker(s)")
        own = self.owned_pids(pids)
        if all(f"kafka-{node}" in own for node in wanted):
            first = next(iter(own.values()))
            log = self.logs / "kafka-1.log"
            reuse("kafka", first, lambda: self.answers(len(own), timeout=3), 90, log)
            return []
        conflict = self.conflict(pids, wanted)
        if conflict is not None:
            raise conflict
        libs = ensure_jars(self.libs, self.logs)
        java_bin = java()
        log4j = self.log4j_config()
        classpath = f"{libs}/*"
        base = self.folder
        cluster_id = self.cluster_id()
        # Format every node that has no storage yet (all with the same cluster id), in parallel.
        formats = []
        for node in range(1, self.brokers + 1):
            ndir = base / f"node-{node}"
            ndir.mkdir(parents=True, exist_ok=True)
            props = ndir / "server.properties"
            props.write_text(self.properties(node))
            if not (ndir / "data" / "meta.properties").exists():
                cmd = storage_format_command(java_bin, log4j, classpath, cluster_id, props)
                log = self.logs / f"kafka-{node}-format.log"
                out = log.open("ab")
                formats.append((cmd, log, subprocess.Popen(cmd, stdout=out, stderr=out), out))
        for cmd, log, proc, out in formats:
            rc = proc.wait()
            out.close()
            if rc:
                raise fail("kafka", cmd, log, "storage format failed")
        started = []
        procs = []
        for node, name in enumerate(self.node_names(), start=1):
            if name in own or node not in wanted:
                continue
            ndir = base / f"node-{node}"
            cmd = [
                java_bin, f"-Xmx{KAFKA_HEAP}", f"-Xms{KAFKA_HEAP}", "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20", "-XX:+ExplicitGCInvokesConcurrent",
                "-Djava.awt.headless=true", f"-Dkafka.logs.dir={ndir}",
                f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
                "kafka.Kafka", str(ndir / "server.properties"),
            ]  # fmt: skip
            log = self.logs / f"{name}.log"
            procs.append((name, cmd, log, pids.spawn(name, cmd, log)))
            started.append(name)
        self.marker.write_text(str(self.brokers))
        expected = len(own) + len(procs)
        ok = wait(
            lambda: (
                self.answers(expected, timeout=2) or any(not pid_alive(pid) for *_, pid in procs)
            ),
            90,
            interval=0.5,
        )
        for name, cmd, log, pid in procs:
            if not pid_alive(pid):
                raise fail(name, cmd, log, "exited during start-up")
        if not ok:
            name, cmd, log, _ = (
                procs[0] if procs else ("kafka", ["kafka"], self.logs / "kafka-1.log", 0)
            )
            raise fail(name, cmd, log, f"did not answer on {self.bootstrap} within 90 s")
        return started

    def kill(self, pids: Pids, node_id: int) -> None:
        """SIGKILL one node (failover drills)."""
        pid = self.node_pid(pids, node_id)
        if pid is None:
            raise StackError(f"kafka-{node_id}: not running")
        os.kill(pid, signal.SIGKILL)
        wait(lambda: not pid_alive(pid), 10)
