"""The consumer runtime against the real Kafka, through `ot land`: a fenced client rejoins,
rebalances say who joined or left and which partitions moved where."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from ot_tools import drills
from ot_tools.coverage import lake_coverage
from streaming.kafka.config import consumer_config
from streaming.lake import Lake
from streaming.settings import Settings

pytestmark = pytest.mark.stack

FAST = ["--flush-rows", "500", "--flush-age", "0.3", "--batch-size", "1000"]


def _events(log: Path, name: str | None = None) -> list[dict[str, Any]]:
    records = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if name is None or record["event"] == name:
                records.append(record)
    return records


def _wait_for(log: Path, name: str, count: int = 1, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and len(_events(log, name)) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {name!r} event in {log}:\n{log.read_text()[-2000:]}")


def test_fenced_static_member_rejoins_with_a_fresh_client_and_lands_everything(
    isolated: Settings, tmp_path: Path
) -> None:
    group = f"fence-{isolated.topics.readings}"
    first = drills.readings(3000, machines=30, garbage_every=101)
    drills.produce(isolated, isolated.topics.readings, first)
    log = tmp_path / "lander.log"
    args = ["--group", group, "--instance-id", "lander-0", "--until-idle", "6", *FAST]
    lander = drills.spawn("land", isolated, args, log)
    _wait_for(log, "landed")

    # Another client with the same group.instance.id joins: the broker fences the lander's
    # client (librdkafka: `_FATAL`, "Static consumer fenced", and `err.fatal()` is False).
    config = consumer_config(isolated, group, instance_id="lander-0")
    intruder = Consumer(config)
    intruder.subscribe([isolated.topics.readings])
    deadline = time.monotonic() + 20
    while not _events(log, "kafka_fatal") and time.monotonic() < deadline:
        intruder.consume(100, timeout=0.2)
    intruder.close()
    second = drills.readings(3000, machines=30, garbage_every=101, seed=9)
    drills.produce(isolated, isolated.topics.readings, second)

    summary = drills.summary_of(lander)
    produced = len(first) + len(second)
    assert summary["lag"] == 0
    marks = drills.watermarks(isolated, isolated.topics.readings)
    assert sum(high for _, high in marks.values()) == produced
    coverage = lake_coverage(Lake(isolated.lake_dir), marks)
    assert all(c.exact for c in coverage.values()), coverage
    fatal = _events(log, "kafka_fatal")
    assert fatal and "fenced" in fatal[0]["error"]
    assert [e["attempt"] for e in _events(log, "rejoining")] == [1]


def test_rebalances_log_who_joined_or_left_why_and_which_partitions_moved_where(
    isolated: Settings, tmp_path: Path
) -> None:
    producer = drills.produce_paced(
        isolated, isolated.topics.readings, drills.readings(20_000, machines=60), seconds=12
    )
    group = f"rebalance-{isolated.topics.readings}"
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a = drills.spawn("land", isolated, ["--group", group, "--until-idle", "4", *FAST], a_log)
    _wait_for(a_log, "rebalance")
    b = drills.spawn("land", isolated, ["--group", group, *FAST], b_log)
    _wait_for(b_log, "rebalance")
    _wait_for(a_log, "rebalance", count=2)
    b.send_signal(signal.SIGTERM)  # b leaves the group: a takes its partitions back
    drills.summary_of(b)
    _wait_for(a_log, "rebalance", count=3)
    producer.join()
    drills.summary_of(a)

    a_member = _events(a_log, "assigned")[0]["member"]
    b_member = _events(b_log, "assigned")[0]["member"]
    assert a_member != b_member and a_member.startswith("ot-land-")
    first, joined, left = _events(a_log, "rebalance")[:3]
    assert first["members"] == {a_member: list(range(6))} and first["joined"] == [a_member]
    # b joined: some partitions moved from a to b, and both logs say so.
    assert joined["joined"] == [b_member] and joined["left"] == []
    given = sorted(int(p) for p in joined["moved"])
    assert given and all(m == {"from": a_member, "to": b_member} for m in joined["moved"].values())
    assert sorted(joined["members"][b_member]) == given
    assert _events(b_log, "assigned")[0]["gained"] == given
    assert _events(a_log, "revoked")[0]["reason"].startswith("group rebalance")
    # b left on SIGTERM: it says so with its partitions; a names it and takes them back.
    leaving = _events(b_log, "leaving")
    assert leaving and sorted(leaving[0]["partitions"]) == given and not leaving[0]["static"]
    assert left["left"] == [b_member] and left["joined"] == []
    assert {int(p): m for p, m in left["moved"].items()} == {
        p: {"from": b_member, "to": a_member} for p in given
    }
    assert _events(a_log, "assigned")[-1]["gained"] == given


def test_a_static_member_handed_another_topics_partitions_exits_saying_why(
    isolated: Settings, tmp_path: Path
) -> None:
    # The group and instance id were just used for another topic: the broker skips the rebalance
    # and hands the old assignment back. Reading nothing for good would be a blind screen.
    group = f"foreign-{isolated.topics.readings}"
    other = drills.isolated_settings(isolated, tmp_path / "other-lake")
    try:
        drills.produce(other, other.topics.readings, drills.readings(500, machines=10))
        args = ["--group", group, "--instance-id", "lander-0", "--until-idle", "2", *FAST]
        first = drills.summary_of(drills.spawn("land", other, args, tmp_path / "first.log"))
        assert first["landed"] == 500
        log = tmp_path / "second.log"
        second = drills.spawn("land", isolated, args, log)
        second.wait(timeout=60)
    finally:
        drills.clean_up(other)
    assert second.returncode == 3
    foreign = _events(log, "foreign_assignment")
    assert foreign and foreign[0]["topics"] == [other.topics.readings]
    failed = _events(log, "failed")
    assert failed and "give each topic a group of its own" in failed[0]["error"]
    assert not list(Path(isolated.lake_dir).rglob("*.parquet"))  # nothing of the other topic
