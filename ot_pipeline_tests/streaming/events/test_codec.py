"""Event contract v1: Avro (Confluent wire format) and JSON codecs."""

from __future__ import annotations

import io
import json

import fastavro
import polars as pl
import pyarrow as pa
import pytest

from ot_pipeline_tests.support.samples import (
    MAX_AGE_MS,
    MAX_FUTURE_MS,
    NOW_MS,
    fastavro_read_exactly,
    fastavro_wire,
    random_readings,
    reading,
)
from streaming.events import (
    FIELDS,
    HEADER,
    UNITS,
    MachineType,
    Metric,
    Quality,
    SensorReading,
    decode_avro,
    decode_batch,
    encode_avro,
    encode_avro_many,
    encode_avro_table,
    encode_json,
    load_schema,
)
from streaming.events.codec import PARSED_SCHEMA, PLAIN_SCHEMA


def _decode(payloads: list[bytes | None]) -> list[dict[str, object]]:
    batch = decode_batch(payloads, NOW_MS, max_future_ms=MAX_FUTURE_MS, max_age_ms=MAX_AGE_MS)
    assert batch.rejected == []
    rows = batch.valid.to_pylist()
    for row in rows:
        row["ts"] = int(row["ts"].timestamp() * 1000)
    return rows


def test_wire_format_is_magic_zero_then_schema_id_one_big_endian() -> None:
    payload = encode_avro(reading())
    assert HEADER == b"\x00\x00\x00\x00\x01"
    assert payload[:5] == HEADER


def test_avro_bytes_are_identical_to_fastavro_schemaless_writer() -> None:
    records = random_readings(3000, seed=7)
    assert encode_avro_many(records) == [fastavro_wire(r) for r in records]


def test_fastavro_reads_what_we_write_with_the_schema_file() -> None:
    records = random_readings(500, seed=8)
    for record, payload in zip(records, encode_avro_many(records), strict=True):
        decoded = fastavro.schemaless_reader(io.BytesIO(payload[5:]), PARSED_SCHEMA)
        assert isinstance(decoded, dict)
        assert int(decoded["ts"].timestamp() * 1000) == record["ts"]
        assert {**decoded, "ts": record["ts"]} == record


def test_avro_round_trip_through_decode_batch_returns_the_same_records() -> None:
    records = random_readings(5000, seed=9)
    assert _decode(list(encode_avro_many(records))) == records


def test_decode_batch_reads_what_fastavro_writes() -> None:
    records = random_readings(500, seed=10)
    assert _decode([fastavro_wire(r) for r in records]) == records


def test_json_round_trip_through_decode_batch_returns_the_same_records() -> None:
    records = random_readings(300, seed=11)
    payloads: list[bytes | None] = [encode_json(r) for r in records]
    assert all(p is not None and p[:1] == b"{" for p in payloads)
    assert _decode(payloads) == records


def test_json_form_is_a_flat_object_with_ts_in_epoch_milliseconds() -> None:
    record = reading(line_id="Linie-Süd")
    obj = json.loads(encode_json(record))
    assert list(obj) == list(FIELDS)
    assert obj["ts"] == record["ts"] and isinstance(obj["ts"], int)
    assert "Süd".encode() in encode_json(record)


def test_single_decode_avro_returns_the_record_with_int_timestamp() -> None:
    record = reading()
    assert decode_avro(encode_avro(record)) == record
    assert fastavro_read_exactly(encode_avro(record)) == record


def test_encoding_a_polars_frame_or_arrow_table_matches_encoding_the_dicts() -> None:
    records = random_readings(400, seed=12)
    frame = pl.DataFrame(records).with_columns(
        pl.from_epoch("ts", time_unit="ms").dt.replace_time_zone("UTC"),
        pl.col("status_code").cast(pl.Int32),
        pl.col("metric").cast(pl.Categorical),
        pl.col("machine_type").cast(pl.Enum([str(t) for t in MachineType])),
    )
    expected = encode_avro_many(records)
    assert encode_avro_table(frame) == expected
    assert encode_avro_table(pa.Table.from_pylist(records)) == expected
    assert encode_avro_table(frame.head(0)) == []


@pytest.mark.parametrize(
    "change",
    [
        {"metric": "torque"},
        {"quality": "OK"},
        {"machine_type": "ROBOT"},
        {"status_code": 2**31},
        {"seq": 2**63},
        {"value": None},
        {"line_id": 5},
    ],
)
def test_encoder_refuses_what_the_schema_cannot_carry(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        encode_avro_many([reading(), {**reading(), **change}])


def test_encoder_refuses_a_record_without_a_field() -> None:
    record = reading()
    del record["unit"]
    with pytest.raises(ValueError):
        encode_avro(record)


def test_sensor_reading_round_trips_through_its_record_form() -> None:
    r = SensorReading.create("pump-1", "PUMP", "line-b", Metric.FLOW, 12, NOW_MS, 3, 1, "BAD")
    assert r.event_id == "pump-1:3" and r.unit == UNITS[Metric.FLOW] == "L/min"
    record = r.to_record()
    assert record["metric"] == "flow" and type(record["metric"]) is str
    assert SensorReading.from_record(record) == r


def test_schema_file_agrees_with_the_model() -> None:
    schema = load_schema()
    fields = {f["name"]: f["type"] for f in schema["fields"]}
    assert tuple(fields) == FIELDS
    assert fields["machine_type"]["symbols"] == [str(v) for v in MachineType]
    assert fields["metric"]["symbols"] == [str(v) for v in Metric]
    assert fields["quality"]["symbols"] == [str(v) for v in Quality]
    assert fields["ts"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert set(UNITS) == set(Metric)
    assert PLAIN_SCHEMA["name"] == PARSED_SCHEMA["name"]  # type: ignore[call-overload,index]
