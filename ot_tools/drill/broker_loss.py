"""broker-loss: three brokers under load, a static and a dynamic lander and a static state writer
running; SIGKILL the leader of most partitions, then the group coordinator (each restarted after
the outage), then a second broker briefly while one is down, then SIGSTOP one (hung, not
dead)."""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from ot_tools.drill.harness import Drill, DrillOptions, combine, now
from streaming.kafka.config import admin_config


def leader_of_most(d: Drill) -> int:
    admin = AdminClient(admin_config(d.settings.kafka_bootstrap_servers, log_level=0))
    topic = d.settings.topics.readings
    meta = admin.list_topics(topic, timeout=10)
    leaders = Counter(p.leader for p in meta.topics[topic].partitions.values() if p.leader >= 0)
    return leaders.most_common(1)[0][0]


def coordinator_of(d: Drill, group: str, timeout: float = 90.0) -> int:
    """The broker coordinating `group`; asked again while the cluster is still settling after
    the previous fault (a describe timed out once 5 s after a broker restart at 20,000/s)."""
    admin = AdminClient(admin_config(d.settings.kafka_bootstrap_servers, log_level=0))
    deadline = time.monotonic() + timeout
    while True:
        try:
            future = admin.describe_consumer_groups([group], request_timeout=10)[group]
            return int(future.result(timeout=15).coordinator.id)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            d.sleep(2)


def run(options: DrillOptions) -> dict[str, Any]:
    """Three brokers: SIGKILL the leader of most partitions, then the group coordinator, then two
    brokers at once briefly, then SIGSTOP one; nothing lost or twice, producer failures 0."""
    quick = options.quick
    rate = options.rate or (1_000 if quick else 5_000)
    outage = 8.0 if quick else 30.0
    brief = 4.0 if quick else 10.0
    with Drill("broker-loss", options) as d:
        dynamic_lake = d.work / "lake-dynamic"
        common = ["--progress-every", "1", "--session-timeout-ms", "10000"]
        landing = ["--flush-age", "1", "--flush-rows", "50000"]
        static_group, dynamic_group = d.group("lander-static"), d.group("lander-dynamic")
        state_group = d.group("state")
        static_args = ["--group", static_group, "--instance-id", "lander-0", *common, *landing]
        d.child("lander-static", "land", static_args)
        from dataclasses import replace

        d.child(
            "lander-dynamic",
            "land",
            ["--group", dynamic_group, *common, *landing],
            settings=replace(d.settings, lake_dir=dynamic_lake),
        )
        d.child("state", "state", ["--group", state_group, "--instance-id", "state-0", *common])
        d.say(f"load: {rate:,.0f} readings/s until the faults are done")
        simulator = d.simulate(rate, 3600, machines=200)
        d.monitor_lag(static_group, dynamic_group, state_group)
        d.wait_assigned("lander-static", "lander-dynamic", "state")
        d.sleep(8)

        def kill_and_restart(phase: str, fault: str, node: int) -> None:
            name = f"kafka-{node}"
            at = now()
            d.stack.kill(name)
            d.say(f"{phase}: SIGKILL {name}")
            d.sleep(outage)
            healed = now()
            d.stack.start(name)
            d.phase(phase, fault, at, healed, broker=name)

        node = leader_of_most(d)
        kill_and_restart(
            "leader", f"SIGKILL the leader of most partitions, restart after {outage:.0f} s", node
        )
        d.sleep(5)
        node = coordinator_of(d, static_group)
        kill_and_restart(
            "coordinator",
            f"SIGKILL the coordinator of the static lander's group, restart after {outage:.0f} s",
            node,
        )
        d.sleep(5)

        first = leader_of_most(d)
        second = next(n for n in (1, 2, 3) if n != first)
        at = now()
        d.stack.kill(f"kafka-{first}")
        d.sleep(brief)
        d.stack.kill(f"kafka-{second}")
        d.say(f"two brokers: kafka-{first} and kafka-{second} down")
        d.sleep(brief)
        d.stack.start(f"kafka-{second}")
        healed = now()
        d.stack.start(f"kafka-{first}")
        d.phase(
            "two-brokers",
            f"SIGKILL one broker, then a second for {brief:.0f} s (no quorum, no ISR of 2); "
            "restart both",
            at,
            healed,
            brokers=[f"kafka-{first}", f"kafka-{second}"],
        )
        d.sleep(5)

        node = leader_of_most(d)
        at = now()
        d.stack.pause(f"kafka-{node}")
        d.say(f"hung: SIGSTOP kafka-{node}")
        d.sleep(outage)
        d.stack.pause(f"kafka-{node}", resume=True)
        d.phase(
            "hung-broker",
            f"SIGSTOP the leader of most partitions for {outage:.0f} s (hung, not dead), SIGCONT",
            at,
            now(),
            broker=f"kafka-{node}",
        )

        simulator.signal(signal.SIGTERM)  # flushes what it has and prints its summary
        summary = d.wait_for_load(simulator, timeout=120)
        d.check(
            "producer: no delivery failures, nothing undelivered",
            summary.get("delivery_failures") == 0 and summary.get("undelivered_at_exit") == 0,
            {k: summary.get(k) for k in ("delivery_failures", "undelivered_at_exit")},
        )
        d.check("caught up after the faults", d.wait_caught_up(timeout=180) is not None)
        for name in ("lander-static", "lander-dynamic", "state"):
            exits = d.children[name].exits
            d.check(f"{name}: never crashed (rode out every fault)", not exits, exits[:2])
        d.stop_consumers("lander-static", "lander-dynamic", "state")
        static = d.reconcile({"lake-static": d.settings.lake_dir}, state_group=state_group)
        dynamic = d.reconcile({"lake-dynamic": dynamic_lake})
        return d.report(combine({"static": static, "dynamic": dynamic}))
