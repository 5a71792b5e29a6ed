"""MQTT topics and payloads -> contract readings: what is taken from the topic, what defaults
apply, how `seq`/`event_id` stay stable across redelivery, and the reason for each rejection."""

from __future__ import annotations

import json
import time

import pytest

from streaming.bridge.topics import (
    DEFAULT_ROOT,
    TOPIC_MISMATCH,
    Bad,
    PlainLayout,
    derived_seq,
    reading_from_plain,
    readings_from_message,
)
from streaming.events import decode_batch, encode_avro_many
from streaming.events.model import MAX_PAYLOAD_BYTES, Metric

LAYOUT = PlainLayout()
NOW = 1_790_000_000_000
TOPIC = "factory/line-a/press-07/temperature"


def parse(payload: bytes | str, topic: str = TOPIC, received_ms: int = NOW) -> dict | Bad:
    raw = payload.encode() if isinstance(payload, str) else payload
    return reading_from_plain(topic, raw, received_ms, LAYOUT)


def test_a_bare_number_takes_everything_else_from_the_topic_and_the_defaults() -> None:
    record = parse("71.25")
    assert record == {
        "event_id": f"press-07:{NOW * 16 + 0}",
        "machine_id": "press-07",
        "machine_type": "SENSOR",
        "line_id": "line-a",
        "metric": "temperature",
        "unit": "°C",
        "value": 71.25,
        "ts": NOW,
        "seq": NOW * 16,
        "status_code": 0,
        "quality": "GOOD",
    }


def test_an_object_with_value_ts_and_seq_keeps_them() -> None:
    record = parse(json.dumps({"value": 3, "ts": NOW - 5, "seq": 4711, "status_code": 1}))
    assert isinstance(record, dict)
    assert (record["value"], record["ts"], record["seq"]) == (3.0, NOW - 5, 4711)
    assert record["event_id"] == "press-07:4711"
    assert isinstance(record["value"], float)
    assert record["status_code"] == 1


def test_a_full_contract_reading_passes_through_unchanged() -> None:
    full = {
        "event_id": "press-07:9",
        "machine_id": "press-07",
        "machine_type": "MOTOR",
        "line_id": "line-a",
        "metric": "temperature",
        "unit": "°C",
        "value": 70.5,
        "ts": NOW,
        "seq": 9,
        "status_code": 2,
        "quality": "UNCERTAIN",
    }
    assert parse(json.dumps(full)) == full


def test_seq_derived_from_ts_is_stable_across_redelivery_and_unique_per_metric() -> None:
    payload = json.dumps({"value": 1.0, "ts": NOW})
    first = parse(payload, received_ms=NOW + 10)
    again = parse(payload, received_ms=NOW + 60_000)  # redelivered a minute later
    assert isinstance(first, dict) and isinstance(again, dict)
    assert first["event_id"] == again["event_id"]
    ids = {derived_seq(NOW, str(m)) for m in Metric}
    assert len(ids) == len(Metric)  # same machine, same ms, ten metrics: ten ids
    assert derived_seq(NOW + 1, "temperature") > max(ids)  # and later readings sort after


def test_without_ts_or_seq_the_receive_time_is_the_event_time() -> None:
    record = parse(json.dumps({"value": 1.5}), received_ms=NOW + 7)
    assert isinstance(record, dict)
    assert record["ts"] == NOW + 7
    assert record["seq"] == (NOW + 7) * 16


def test_a_multi_level_root_is_stripped_before_the_three_levels() -> None:
    layout = PlainLayout("acme/plant-1")
    assert layout.filter == "acme/plant-1/+/+/+"
    record = reading_from_plain("acme/plant-1/l2/pump-3/flow", b"12", NOW, layout)
    assert isinstance(record, dict)
    assert (record["line_id"], record["machine_id"], record["unit"]) == ("l2", "pump-3", "L/min")
    assert layout.machine_of("acme/plant-1/l2/pump-3/flow") == "pump-3"
    assert isinstance(reading_from_plain(TOPIC, b"12", NOW, layout), Bad)


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "fragment"),
    [
        (TOPIC, b"", "EMPTY", "empty"),
        (TOPIC, b"1" * (MAX_PAYLOAD_BYTES + 1), "TOO_LARGE", "4097"),
        (TOPIC, b"hello", "INVALID_JSON", "not JSON"),
        (TOPIC, b"\xff\xfe", "INVALID_JSON", "not JSON"),
        (TOPIC, b"[1, 2]", "INVALID_JSON", "list"),
        (TOPIC, b'"71.2"', "INVALID_JSON", "str"),
        (TOPIC, b"true", "INVALID_JSON", "bool"),
        (TOPIC, b"null", "INVALID_JSON", "NoneType"),
        (TOPIC, b'{"ts": 1}', "MISSING_FIELD", "value"),
        (TOPIC, b'{"value": "71.2"}', "BAD_TYPE", "value"),
        (TOPIC, b'{"value": true}', "BAD_TYPE", "value"),
        (TOPIC, b'{"value": 1, "ts": 1.5e12}', "BAD_TYPE", "ts"),
        (TOPIC, b'{"value": 1, "seq": "7"}', "BAD_TYPE", "seq"),
        (TOPIC, b'{"value": 1, "status_code": 2147483648}', "BAD_TYPE", "status_code"),
        (TOPIC, b'{"value": 1, "unit": 5}', "BAD_TYPE", "unit"),
        (TOPIC, b'{"value": 1, "machine_type": "ROBOT"}', "UNKNOWN_ENUM", "ROBOT"),
        (TOPIC, b'{"value": 1, "quality": "good"}', "UNKNOWN_ENUM", "quality"),
        (TOPIC, b'{"value": 1, "event_id": "\\ud800"}', "INVALID_JSON", "Unicode"),
        (TOPIC, b'{"value": 1, "machine_id": "other"}', TOPIC_MISMATCH, "other"),
        (TOPIC, b'{"value": 1, "metric": "pressure"}', TOPIC_MISMATCH, "pressure"),
        (TOPIC, b'{"value": 1, "line_id": "line-b"}', TOPIC_MISMATCH, "line-b"),
        ("factory/line-a/press-07/torque", b"1", "UNKNOWN_ENUM", "torque"),
        ("factory/line-a/temperature", b"1", TOPIC_MISMATCH, "factory/line/machine/metric"),
        ("elsewhere/line-a/press-07/temperature", b"1", TOPIC_MISMATCH, "elsewhere"),
    ],
)
def test_messages_that_cannot_become_readings_name_their_reason(
    topic: str, payload: bytes, reason: str, fragment: str
) -> None:
    result = parse(payload, topic=topic)
    assert isinstance(result, Bad), result
    assert (result.reason, fragment in result.detail) == (reason, True), result


def test_every_accepted_record_encodes_and_the_contract_rules_still_apply() -> None:
    """The parser only fills in and type-checks: ranges, ids and units are the contract's
    validator's job, with its own reason codes."""
    now = int(time.time() * 1000)
    payloads = [
        b"71.25",  # valid
        b"900",  # temperature above 400 degrees
        b'{"value": 1, "unit": "K"}',
        b'{"value": 1, "seq": -1}',
        b'{"value": 1, "ts": 1, "seq": 1}',  # 1970: too old
        b'{"value": 1, "event_id": "press-07:1", "seq": 2}',
        b"NaN",
    ]
    topics = [TOPIC] * len(payloads)
    topics[0] = "factory/line-a/Press-07/temperature"  # upper case: not a machine id
    records = [reading_from_plain(t, p, now, LAYOUT) for t, p in zip(topics, payloads, strict=True)]
    assert all(isinstance(r, dict) for r in records)
    encoded = encode_avro_many(records)  # type: ignore[arg-type]
    batch = decode_batch(encoded, now, max_future_ms=300_000, max_age_ms=30 * 86_400_000)
    assert [r.reason for r in batch.rejected] == [
        "BAD_MACHINE_ID",
        "OUT_OF_RANGE",
        "UNIT_MISMATCH",
        "NEGATIVE_SEQ",
        "TOO_OLD",
        "BAD_EVENT_ID",
        "NON_FINITE",
    ]
    ok = reading_from_plain(TOPIC, b"71.25", now, LAYOUT)
    assert decode_batch(encode_avro_many([ok]), now, max_future_ms=1, max_age_ms=1).rejected == []  # type: ignore[list-item]


def test_a_poison_payload_is_rejected_not_raised() -> None:
    """A message that would crash the bridge would be redelivered to it forever."""
    (deep,) = readings_from_message(TOPIC, b"[" * 4000, NOW, LAYOUT)
    assert isinstance(deep, Bad) and deep.reason == "INVALID_JSON"
    (nested,) = readings_from_message(TOPIC, b'{"value": ' + b"[" * 3000 + b"}", NOW, LAYOUT)
    assert isinstance(nested, Bad) and nested.reason == "INVALID_JSON"


def test_one_plain_message_is_one_reading() -> None:
    assert len(readings_from_message(TOPIC, b"1", NOW, LAYOUT)) == 1
    assert DEFAULT_ROOT == "factory"
