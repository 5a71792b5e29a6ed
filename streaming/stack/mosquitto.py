"""Mosquitto (MQTT 5) in the local stack: from Debian, config written on every start, persistent
sessions in `<root>/mosquitto/data`.

The broker settings here (persistence, autosave, queue limit, logging) are the ones
`deploy/mosquitto/mosquitto.conf` gives the Docker broker; a compose test checks the two agree.
"""

from __future__ import annotations

import getpass
import os
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

NAME = "mosquitto"
VARIABLE = "OT_STACK_MQTT_PORT"
# QoS 1 messages Mosquitto holds per client session beyond those in flight (its default is 1000,
# which would drop readings the moment the bridge is away for a second at fleet rate). Enough
# for about a minute of the bridge's benchmark rate; docs/mqtt.md explains the limit.
MQTT_MAX_QUEUED = 2_000_000
MQTT_AUTOSAVE_S = 10  # the broker writes its persistence file this often (and on shutdown)


@dataclass(frozen=True)
class Mosquitto:
    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def folder(self) -> Path:
        return self.root / "mosquitto"

    @property
    def config_file(self) -> Path:
        return self.folder / "mosquitto.conf"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "mosquitto.log"

    def answers(self) -> bool:
        """A real MQTT handshake (CONNECT -> CONNACK), not just an open port."""
        from streaming.bridge.client import MqttAddress, MqttClient, MqttError

        client = MqttClient(
            MqttAddress("127.0.0.1", self.port),
            f"ot-stack-probe-{os.getpid()}",
            connect_timeout=2,
        )
        try:
            client.connect()
        except (MqttError, OSError, ValueError):
            return False
        client.disconnect()
        return True

    def owned_pid(self, pids: Pids) -> int | None:
        """This stack's broker: its pid file, the program and this stack's config file."""
        return pids.owned(NAME, "mosquitto", arg=str(self.config_file))

    def conflict(self, pids: Pids) -> PortTaken | None:
        if self.owned_pid(pids) is None and port_taken(self.port):
            return refuse_foreign(NAME, self.port, VARIABLE, self.root)
        return None

    def write_config(self) -> Path:
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        path = self.config_file
        path.write_text(
            "# Written by `ot stack up` (streaming/stack/mosquitto.py): the local development "
            "broker.\n"
            "# Anonymous clients are allowed because the only listener is on 127.0.0.1; a broker\n"
            "# reachable from a plant network needs a password file or certificates instead.\n"
            f"listener {self.port} 127.0.0.1\n"
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

    def up(self, pids: Pids) -> list[str]:
        """Start Mosquitto unless this stack's runs; return ["mosquitto"] when started now."""
        own = self.owned_pid(pids)
        if own is not None:
            reuse(NAME, own, self.answers, 20, self.log)
            return []
        conflict = self.conflict(pids)
        if conflict is not None:
            raise conflict
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if binary is None:
            apt_install(["mosquitto", "mosquitto-clients"], NAME, self.log.parent / "apt.log")
            binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        cmd = [binary, "-c", str(self.write_config())]
        pid = pids.spawn(NAME, cmd, self.log)
        if not wait(lambda: self.answers() or not pid_alive(pid), 20):
            raise fail(NAME, cmd, self.log, "did not answer an MQTT CONNECT within 20 s")
        if not self.answers():
            raise fail(NAME, cmd, self.log, "exited during start-up")
        return [NAME]
