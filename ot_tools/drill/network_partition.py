"""network-partition: the consumers run in a network namespace of the drill's own, joined to the
host by a veth pair; every byte to Kafka and Redis crosses it (through `relay.py`). The pair is
cut (link down at both ends: connections hang, nothing answers) for the outage and healed, then
given 200 ms of one-way delay and 5 % packet loss for a while: with `tc netem` where the kernel
has it, else by the relays (each segment delayed; a "lost" one held back 1 s, with everything
behind it, as a retransmission would). Only the drill's namespace, its link-local veth addresses
and the host's loopback are involved."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ot_tools.drill.harness import Drill, DrillError, DrillOptions, now

HOST_IP, NS_IP = "169.254.77.1", "169.254.77.2"  # link-local: the drill's own veth pair only


class Namespace:
    """`ip netns` NAME with a veth pair (host end HOST, namespace end NS) and the two relays."""

    def __init__(self, tag: int, ports: list[int], work: Path) -> None:
        self.name = f"otdrill{tag}"
        self.host_if, self.ns_if = f"odh{tag}", f"odn{tag}"
        self.ports, self.work = ports, work
        self.relays: list[subprocess.Popen[bytes]] = []
        self.has_netem = False

    def ip(self, *args: str, inside: bool = False) -> None:
        cmd = ["ip", "netns", "exec", self.name, *args] if inside else list(args)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise DrillError(f"{' '.join(cmd)}: {done.stderr.strip()}")

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def __enter__(self) -> Namespace:
        if shutil.which("ip") is None or shutil.which("tc") is None:
            raise DrillError(
                "network-partition needs iproute2 (`ip`, `tc`): apt-get install iproute2"
            )
        self.close()  # left over from an interrupted run
        self.ip("ip", "netns", "add", self.name)
        self.ip("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self.ip("ip", "link", "set", self.ns_if, "netns", self.name)
        self.ip("ip", "addr", "add", f"{HOST_IP}/30", "dev", self.host_if)
        self.ip("ip", "link", "set", self.host_if, "up")
        self.ip("ip", "addr", "add", f"{NS_IP}/30", "dev", self.ns_if, inside=True)
        self.ip("ip", "link", "set", self.ns_if, "up", inside=True)
        self.ip("ip", "link", "set", "lo", "up", inside=True)
        ports = [str(p) for p in self.ports]
        relay = [sys.executable, "-m", "ot_tools.drill.relay", "--control", str(self.control)]
        self.control.write_text("{}")
        with open(self.work / "relays.log", "ab") as log:
            self.relays = [
                subprocess.Popen([*relay, "--listen", HOST_IP, "--to", "127.0.0.1", *ports],
                                 stdout=log, stderr=log),
                subprocess.Popen([*self.prefix, *relay, "--listen", "127.0.0.1", "--to", HOST_IP,
                                  *ports], stdout=log, stderr=log),
            ]  # fmt: skip
        self.has_netem = self._try_netem()
        return self

    @property
    def control(self) -> Path:
        return self.work / "relay-faults.json"

    def _try_netem(self) -> bool:
        done = subprocess.run(
            ["tc", "qdisc", "add", "dev", self.host_if, "root", "netem", "delay", "0ms"],
            capture_output=True,
        )
        subprocess.run(["tc", "qdisc", "del", "dev", self.host_if, "root"], capture_output=True)
        return done.returncode == 0

    def link(self, up: bool) -> None:
        state = "up" if up else "down"
        self.ip("ip", "link", "set", self.host_if, state)
        self.ip("ip", "link", "set", self.ns_if, state, inside=True)

    def degrade(self, delay_ms: int, loss: float) -> str:
        """`delay_ms` one way and `loss` of the packets (segments) lost, both ways; returns how."""
        if self.has_netem:
            for inside, dev in ((False, self.host_if), (True, self.ns_if)):
                spec = ["delay", f"{delay_ms}ms", "loss", f"{loss * 100:g}%"]
                self.ip("tc", "qdisc", "add", "dev", dev, "root", "netem", *spec, inside=inside)
            return "tc netem on both ends of the veth pair"
        # A one-way trip crosses both relays: half the delay and about half the loss each.
        faults = {"delay_ms": delay_ms / 2, "loss": loss / 2, "loss_hold_ms": 1000}
        self.control.write_text(json.dumps(faults))
        return "the relays (this kernel has no tc netem): delay per segment, lost ones held 1 s"

    def heal(self) -> None:
        self.control.write_text("{}")
        if self.has_netem:
            for inside, dev in ((False, self.host_if), (True, self.ns_if)):
                cmd = [*(self.prefix if inside else []), "tc", "qdisc", "del", "dev", dev, "root"]
                subprocess.run(cmd, capture_output=True)

    def close(self) -> None:
        for proc in self.relays:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.relays = []
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


def run(options: DrillOptions) -> dict[str, Any]:
    """The consumers cut off the network (netns, veth link down) and healed, then 200 ms of
    delay and 5 % loss: they rejoin and catch up, nothing lost or twice."""
    quick = options.quick
    rate = options.rate or (1_000 if quick else 5_000)
    cut = 15.0 if quick else 30.0
    degraded = 15.0 if quick else 60.0
    with Drill("network-partition", options) as d:
        stack = d.stack
        ports = [stack.kafka_port + i for i in range(stack.brokers)] + [stack.redis_port]
        with Namespace(options.port_base % 100_000, ports, d.work) as ns:
            common = ["--progress-every", "1", "--session-timeout-ms", "10000"]
            d.child(
                "lander", "land", ["--group", "lander", "--flush-age", "1", *common],
                prefix=ns.prefix,
            )  # fmt: skip
            d.child("state", "state", ["--group", "state", *common], prefix=ns.prefix)
            d.say(f"load: {rate:,.0f} readings/s; consumers in netns {ns.name}")
            simulator = d.simulate(rate, 3600, machines=50)
            d.monitor_lag("lander", "state")
            d.wait_assigned("lander", "state")
            d.sleep(6)

            at = now()
            ns.link(up=False)
            d.say(f"cut: {ns.host_if} <-> {ns.ns_if} down for {cut:.0f} s")
            d.sleep(cut)
            ns.link(up=True)
            d.phase(
                "cut",
                f"consumers cut off for {cut:.0f} s (veth link down at both ends), healed",
                at,
                now(),
            )
            at = now()
            how = ns.degrade(200, 0.05)
            d.say(f"degraded: 200 ms delay, 5 % loss for {degraded:.0f} s, by {how}")
            d.sleep(degraded)
            ns.heal()
            d.phase(
                "degraded",
                f"200 ms one-way delay and 5 % packet loss for {degraded:.0f} s, healed",
                at,
                now(),
                injected_by=how,
            )
            simulator.signal(signal.SIGTERM)
            summary = d.wait_for_load(simulator, timeout=120)
            d.check("producer: no delivery failures", summary.get("delivery_failures") == 0)
            d.check("caught up", d.wait_caught_up(timeout=180) is not None)
            for name in ("lander", "state"):
                d.check(f"{name}: never crashed", not d.children[name].exits)
            d.stop_consumers("lander", "state")
        return d.report(d.reconcile(state_group="state"))
