"""Sparkplug B DBIRTH/DDATA -> contract readings: names and aliases, data types, timestamps, and
what is skipped or dead-lettered."""

from __future__ import annotations

import struct

from streaming.bridge.sparkplug import (
    DOUBLE,
    FLOAT,
    INT8,
    INT16,
    INT64_TYPE,
    STRING,
    UINT32,
    Payload,
    SparkplugReader,
    device_of,
    filters,
)
from streaming.bridge.topics import TOPIC_MISMATCH, Bad, derived_seq

NOW = 1_790_000_000_000
BIRTH = "spBv1.0/line-a/DBIRTH/gateway-1/press-07"
DATA = "spBv1.0/line-a/DDATA/gateway-1/press-07"


def payload(*metrics: dict, timestamp: int | None = NOW, seq: int = 0) -> bytes:
    message = Payload(seq=seq)
    if timestamp is not None:
        message.timestamp = timestamp
    for spec in metrics:
        message.metrics.add(**spec)
    return bytes(message.SerializeToString())


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, raw: bytes) -> bytes:
    return _varint(number << 3 | wire) + raw


def test_a_hand_encoded_tahu_payload_reads_with_the_official_field_numbers() -> None:
    """Bytes built from sparkplug_b.proto by hand (not by our descriptor): metric name = 1,
    timestamp = 3, datatype = 4, double_value = 13; payload timestamp = 1, metrics = 2, seq = 3."""
    name = b"Motor/Temperature"
    metric = (
        _field(1, 2, _varint(len(name)) + name)
        + _field(3, 0, _varint(NOW - 5))
        + _field(4, 0, _varint(DOUBLE))
        + _field(13, 1, struct.pack("<d", 71.25))
    )
    raw = _field(1, 0, _varint(NOW)) + _field(2, 2, _varint(len(metric)) + metric)
    raw += _field(3, 0, _varint(7))
    (record,) = SparkplugReader().readings(DATA, raw, NOW + 100)
    assert isinstance(record, dict)
    assert record == {
        "event_id": f"press-07:{derived_seq(NOW - 5, 'temperature')}",
        "machine_id": "press-07",
        "machine_type": "SENSOR",
        "line_id": "line-a",
        "metric": "temperature",
        "unit": "°C",
        "value": 71.25,
        "ts": NOW - 5,
        "seq": derived_seq(NOW - 5, "temperature"),
        "status_code": 0,
        "quality": "GOOD",
    }


def test_ddata_metrics_named_by_alias_use_the_dbirth_names_and_types() -> None:
    reader = SparkplugReader()
    birth = payload(
        {"name": "Motor/Temperature", "alias": 1, "datatype": FLOAT, "float_value": 60.0},
        {"name": "Motor/RPM", "alias": 2, "datatype": UINT32, "int_value": 1500},
        {"name": "Node Control/Rebirth", "alias": 3, "datatype": 11, "boolean_value": False},
    )
    first = reader.readings(BIRTH, birth, NOW)
    assert [r["metric"] for r in first if isinstance(r, dict)] == ["temperature", "rpm"]
    assert reader.skipped_metrics == 1  # not a contract metric: not a reading
    data = payload(
        {"alias": 2, "int_value": 1510, "timestamp": NOW + 1000},
        {"alias": 1, "float_value": 61.5, "timestamp": NOW + 1000},
        timestamp=NOW + 1001,
    )
    readings = reader.readings(DATA, data, NOW + 2000)
    assert [(r["metric"], r["value"], r["ts"]) for r in readings if isinstance(r, dict)] == [
        ("rpm", 1510.0, NOW + 1000),
        ("temperature", 61.5, NOW + 1000),
    ]


def test_an_alias_without_a_dbirth_is_dead_lettered_not_guessed() -> None:
    (bad,) = SparkplugReader().readings(DATA, payload({"alias": 9, "double_value": 1.0}), NOW)
    assert isinstance(bad, Bad) and bad.reason == "MISSING_FIELD" and "alias 9" in bad.detail


def test_signed_integer_types_are_read_by_their_width() -> None:
    reader = SparkplugReader()
    readings = reader.readings(
        DATA,
        payload(
            {"name": "temperature", "datatype": INT8, "int_value": 233},  # -23 as one byte
            {"name": "pressure", "datatype": INT16, "int_value": 2**32 - 2},  # -2, sign-extended
            {"name": "level", "datatype": INT64_TYPE, "long_value": 42},
        ),
        NOW,
    )
    values = [r["value"] if isinstance(r, dict) else r for r in readings]
    assert values == [-23.0, -2.0, 42.0]


def test_timestamps_fall_back_from_metric_to_payload_to_receive_time() -> None:
    reader = SparkplugReader()
    with_metric_ts = payload({"name": "flow", "double_value": 1.0, "timestamp": NOW - 9})
    without = payload({"name": "flow", "double_value": 1.0})
    bare = payload({"name": "flow", "double_value": 1.0}, timestamp=None)
    got = [
        r["ts"]
        for p in (with_metric_ts, without, bare)
        for r in reader.readings(DATA, p, NOW + 50)
        if isinstance(r, dict)
    ]
    assert got == [NOW - 9, NOW, NOW + 50]


def test_what_cannot_be_a_reading_names_its_reason() -> None:
    reader = SparkplugReader()
    results = reader.readings(
        DATA,
        payload(
            {"name": "temperature", "datatype": STRING, "string_value": "hot"},
            {"name": "pressure", "is_null": True},
        ),
        NOW,
    )
    assert [(r.reason if isinstance(r, Bad) else r) for r in results] == [
        "BAD_TYPE",
        "MISSING_FIELD",
    ]
    (garbage,) = reader.readings(DATA, b"\xff\xff\xff", NOW)
    assert isinstance(garbage, Bad) and garbage.reason == "UNDECODABLE"
    (topic,) = reader.readings("spBv1.0/line-a/NDATA/gateway-1", payload(), NOW)
    assert isinstance(topic, Bad) and topic.reason == TOPIC_MISMATCH


def test_subscriptions_and_keys() -> None:
    assert filters() == ["spBv1.0/+/DBIRTH/+/+", "spBv1.0/+/DDATA/+/+"]
    assert filters(("plant-1",)) == ["spBv1.0/plant-1/DBIRTH/+/+", "spBv1.0/plant-1/DDATA/+/+"]
    assert device_of(DATA) == "press-07"
