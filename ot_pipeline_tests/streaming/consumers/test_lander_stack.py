"""The lander against the real Kafka: exact coverage of every offset, dead letters, resume point."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ot_tools import drills
from ot_tools.coverage import lake_coverage
from streaming.consumers.lander import MEMBERSHIP, Lander
from streaming.consumers.landing import FlushPolicy
from streaming.events import parse_dlq_headers
from streaming.kafka.lifecycle import Bounds, StopFlag
from streaming.kafka.runtime import Membership
from streaming.lake import Lake
from streaming.lake.footer import read_footer
from streaming.settings import Settings

pytestmark = pytest.mark.stack


def _group(settings: Settings, name: str = "lake-lander") -> str:
    return f"{name}-{settings.topics.readings}"


def _joining(group: str, **options: Any) -> Membership:
    return replace(MEMBERSHIP, group=group, **options)


def test_lander_lands_heavy_fleet_exactly_once_and_dead_letters_the_rest(
    isolated: Settings,
) -> None:
    messages = drills.heavy_fleet(machines=40, minutes=3.0)
    drills.produce(isolated, isolated.topics.readings, messages)

    lander = Lander(
        isolated, _joining(_group(isolated), batch_size=1000), policy=FlushPolicy(max_rows=3000)
    )
    summary = lander.run(Bounds(until_idle=2.0), StopFlag())

    marks = drills.watermarks(isolated, isolated.topics.readings)
    assert sum(high for _, high in marks.values()) == len(messages)
    coverage = lake_coverage(Lake(isolated.lake_dir), marks)
    assert all(c.exact for c in coverage.values()), coverage
    assert summary["consumed"] == len(messages)
    assert summary["landed"] + summary["dead_lettered"] == len(messages)
    assert summary["dead_lettered"] > 0
    assert summary["lag"] == 0

    # The DLQ holds exactly the dead-lettered offsets of the lake, with their headers.
    in_lake = sorted(
        (c.partition, o) for c in coverage.values() for o in _footer_dead(isolated, c.partition)
    )
    assert sorted(drills.dead_lettered_sources(isolated)) == in_lake
    assert len(in_lake) == summary["dead_lettered"]

    files = Lake(isolated.lake_dir).landed_files()
    assert summary["files"] == len(files) > len(marks)  # flushed by row count, not only at exit
    hours = read_footer(files[0].path).event_hours
    assert hours and all(len(h) == len("2026-11-22-13:00") for h in hours)


def _footer_dead(settings: Settings, partition: int) -> list[int]:
    out: list[int] = []
    for f in Lake(settings.lake_dir).landed_files(partition):
        out += read_footer(f.path).dead_lettered_offsets
    return out


def test_lander_dead_letters_keep_the_raw_value_and_name_the_reason(isolated: Settings) -> None:
    garbage = [(b"m1", b"\x07not avro"), (b"m2", b"{broken json")]
    drills.produce(isolated, isolated.topics.readings, [*drills.readings(20), *garbage])

    Lander(isolated, _joining(_group(isolated))).run(Bounds(until_idle=2.0), StopFlag())

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": isolated.kafka_bootstrap_servers, "group.id": "t-dlq-read"}
    )
    consumer.assign([TopicPartition(isolated.topics.dlq, 0, 0)])
    got = []
    for _ in range(20):
        got += [m for m in consumer.consume(10, timeout=0.5) if m.error() is None]
        if len(got) >= 2:
            break
    consumer.close()
    by_value = {m.value(): m for m in got}
    assert set(by_value) == {b"\x07not avro", b"{broken json"}
    letter = parse_dlq_headers(by_value[b"{broken json"].headers())  # type: ignore[arg-type]
    assert (letter.reason, letter.stage, letter.topic) == (
        "INVALID_JSON",
        "lander",
        isolated.topics.readings,
    )
    assert by_value[b"{broken json"].key() == b"m2"


def test_lander_resumes_from_the_lake_not_the_consumer_group(isolated: Settings) -> None:
    messages = drills.readings(12_000, garbage_every=101)
    drills.produce(isolated, isolated.topics.readings, messages)
    first = Lander(isolated, _joining(_group(isolated, "first")))
    assert first.run(Bounds(max_messages=5000), StopFlag())["consumed"] == 5000
    landed_before = {f.path.name for f in Lake(isolated.lake_dir).landed_files()}
    # A crash leftover: a temp file that must not survive the next assignment.
    leftover = Lake(isolated.lake_dir).landed_path(0, 999, 1999).with_suffix(".parquet.tmp")
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half a file")

    # A brand-new group has no committed offsets: only the lake can say where to go on.
    second = Lander(isolated, _joining(_group(isolated, "second")))
    summary = second.run(Bounds(until_idle=2.0), StopFlag())

    assert summary["consumed"] == len(messages) - 5000
    assert not leftover.exists()
    assert landed_before <= {f.path.name for f in Lake(isolated.lake_dir).landed_files()}
    marks = drills.watermarks(isolated, isolated.topics.readings)
    assert all(c.exact for c in lake_coverage(Lake(isolated.lake_dir), marks).values())


def _dead_letters(settings: Settings, expected: int) -> list[Any]:
    from confluent_kafka import Consumer, TopicPartition

    from streaming.kafka.config import reader_config

    consumer = Consumer(reader_config(settings.kafka_bootstrap_servers, "t-dlq-big"))
    consumer.assign([TopicPartition(settings.topics.dlq, 0, 0)])
    got: list[Any] = []
    for _ in range(60):
        got += [m for m in consumer.consume(10, timeout=0.5) if m.error() is None]
        if len(got) >= expected:
            break
    consumer.close()
    return got


def test_lander_dead_letters_oversized_messages_and_lands_every_other_offset(
    isolated: Settings,
) -> None:
    from confluent_kafka import Producer

    from streaming.kafka.config import producer_config

    mib = 2**20
    near_limit = 10 * mib - 1024  # still fits the brokers' 10 MiB, not with dead-letter headers
    big = {offset: bytes([offset]) * size for offset, size in [(30, mib), (61, mib + mib // 2)]}
    big[92] = b"{" + b"x" * (near_limit - 1)
    valid = iter(drills.readings(120, machines=1))
    messages = [(b"m000", big[o]) if o in big else next(valid)[:2] for o in range(120)]
    producer = Producer(producer_config(isolated, **{"message.max.bytes": 10 * mib}))
    for key, value in messages:  # one key: one partition, in this order
        producer.produce(isolated.topics.readings, value=value, key=key)
        producer.poll(0)
    assert producer.flush(60) == 0

    summary = Lander(isolated, _joining(_group(isolated))).run(Bounds(until_idle=3.0), StopFlag())

    marks = drills.watermarks(isolated, isolated.topics.readings)
    coverage = lake_coverage(Lake(isolated.lake_dir), marks)
    assert all(c.exact for c in coverage.values()), coverage
    assert summary["landed"] == 117 and summary["dead_lettered"] == 3
    (partition,) = [p for p, (_, high) in marks.items() if high]
    assert sorted(_footer_dead(isolated, partition)) == sorted(big)
    letters = {}
    for m in _dead_letters(isolated, 3):
        letter = parse_dlq_headers(m.headers())
        letters[letter.offset] = (letter, m.value())
    assert sorted(letters) == sorted(big)
    for offset in (30, 61):  # forwarded whole
        letter, body = letters[offset]
        assert body == big[offset] and not letter.truncated and letter.reason == "TOO_LARGE"
    letter, body = letters[92]  # too big to forward whole: cut, and the headers say so
    assert letter.truncated and letter.original_size == near_limit and letter.reason == "TOO_LARGE"
    assert 0 < len(body) < near_limit and big[92].startswith(body)
