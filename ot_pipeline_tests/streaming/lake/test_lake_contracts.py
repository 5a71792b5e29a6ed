"""The contracts every part reads: hour keys, the landing-file footer, the lake layout, the
event_id rule, the event and landed schemas, and the sim.faults records (no server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from streaming.events.arrow import EVENT_SCHEMA
from streaming.events.faults import FAULT_SCHEMA, FaultRecord, GroundTruth, MachineRecord
from streaming.events.model import event_id_array, event_id_expr, event_id_for, event_ids_for
from streaming.lake import LANDED_SCHEMA, Lake, write_atomically
from streaming.lake.footer import EVENT_HOURS_KEY, event_hours, footer, read_footer
from streaming.lake.hours import (
    day_bounds,
    day_hours,
    day_of,
    hour_bounds,
    hour_key,
    hour_keys,
    hours_of,
    parse_hour,
    range_bounds,
)
from streaming.lake.hours import event_hours as hours_of_timestamps

NOW = datetime(2026, 11, 22, 13, 30, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def test_hour_keys_are_dagster_hourly_partition_keys_and_convert_both_ways() -> None:
    assert hour_key(NOW) == "2026-11-22-13:00"
    start, end = hour_bounds("2026-11-22-13:00")
    assert (start, end) == (
        datetime(2026, 11, 22, 13, tzinfo=UTC),
        datetime(2026, 11, 22, 14, tzinfo=UTC),
    )
    assert hour_keys(start, datetime(2026, 11, 22, 15, tzinfo=UTC)) == [
        "2026-11-22-13:00",
        "2026-11-22-14:00",
        "2026-11-22-15:00",
    ]
    assert range_bounds(["2026-11-22-15:00", "2026-11-22-13:00"]) == (
        start,
        datetime(2026, 11, 22, 16, tzinfo=UTC),
    )
    hours = day_hours("2026-11-22")
    assert len(hours) == 24 and hours[0] == "2026-11-22-00:00" and hours[-1] == "2026-11-22-23:00"
    assert day_of("2026-11-22-13:00") == "2026-11-22"
    assert day_bounds("2026-11-22")[1] == datetime(2026, 11, 23, tzinfo=UTC)


@pytest.mark.parametrize(
    "text", ["2026-11-22-13:00", "2026-11-22T13", "2026-11-22T13:45Z", "2026-11-22 13:00"]
)
def test_parse_hour_accepts_keys_and_iso_hours(text: str) -> None:
    assert parse_hour(text) == datetime(2026, 11, 22, 13, tzinfo=UTC)


def test_parse_hour_rejects_other_text() -> None:
    with pytest.raises(ValueError, match="not an hour"):
        parse_hour("yesterday")


def test_event_hours_of_timestamps_are_sorted_distinct_keys() -> None:
    ms = np.array([NOW_MS, NOW_MS - 3_600_000, NOW_MS + 10], dtype=np.int64)
    assert hours_of_timestamps(ms) == ["2026-11-22-12:00", "2026-11-22-13:00"]
    assert hours_of_timestamps([]) == []
    assert hours_of(b"2026-11-22-12:00, 2026-11-22-13:00,") == [
        "2026-11-22-12:00",
        "2026-11-22-13:00",
    ]
    assert hours_of(None) == []


def _landing_file(lake: Lake, dead: list[int]) -> Path:
    ts = pa.array([NOW_MS, NOW_MS - 3_600_000, NOW_MS + 10], pa.int64()).cast(
        pa.timestamp("ms", tz="UTC")
    )
    table = pa.table({"ts": ts})
    table = table.replace_schema_metadata(footer(table, 10, 14, np.array(dead, dtype=np.int64)))
    path = lake.landed_path(0, 10, 14)
    write_atomically(path, lambda tmp: pq.write_table(table, tmp))
    return path


def test_footer_read_back_names_hours_rows_and_dead_letters(tmp_path: Path) -> None:
    path = _landing_file(Lake(tmp_path), [12, 13])
    read = read_footer(path)
    assert read.event_hours == ["2026-11-22-12:00", "2026-11-22-13:00"]
    assert (read.rows, read.dead_lettered, read.dead_lettered_offsets) == (3, 2, [12, 13])
    assert (read.first_offset, read.last_offset) == (10, 14)
    assert event_hours(path) == read.event_hours
    assert pq.read_schema(path).metadata[EVENT_HOURS_KEY] == b"2026-11-22-12:00,2026-11-22-13:00"
    assert event_hours(tmp_path / "gone.parquet") == []


def test_footer_of_an_empty_table_names_no_hours() -> None:
    meta = footer(LANDED_SCHEMA.empty_table(), 0, 0, np.array([0], dtype=np.int64))
    assert meta[EVENT_HOURS_KEY] == b""


def test_lake_layout_names_every_file(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    assert (
        lake.hour_path("readings", "2026-11-22-13:00")
        == tmp_path / "readings" / "2026-11-22-1300.parquet"
    )
    assert lake.landed_path(2, 5, 7).name == "p2-000000000005-000000000007.parquet"
    assert lake.archive_path("2026-11-22").name == "readings-2026-11-22.parquet"
    lake.hour_path("readings", "2026-11-22-14:00").parent.mkdir(parents=True)
    lake.hour_path("readings", "2026-11-22-14:00").touch()
    assert lake.hour_paths("readings", day_hours("2026-11-22")) == [
        lake.hour_path("readings", "2026-11-22-14:00")
    ]
    assert lake.checked_days() == set()
    lake.checked_marker("2026-11-22").parent.mkdir(parents=True)
    lake.checked_marker("2026-11-22").touch()
    assert lake.checked_days() == {"2026-11-22"}


def test_landed_schema_extends_the_event_schema() -> None:
    assert list(LANDED_SCHEMA)[: len(EVENT_SCHEMA)] == list(EVENT_SCHEMA)
    assert LANDED_SCHEMA.names[len(EVENT_SCHEMA) :] == [
        "kafka_partition",
        "kafka_offset",
        "ingest_ts",
    ]


def test_every_form_of_the_event_id_rule_agrees() -> None:
    machines, seqs = ["m-1", "press-07"], [0, 4711]
    expected = ["m-1:0", "press-07:4711"]
    assert [event_id_for(m, s) for m, s in zip(machines, seqs, strict=True)] == expected
    assert event_ids_for(machines, seqs) == expected
    frame = pl.DataFrame({"machine_id": machines, "seq": seqs})
    assert frame.select(event_id_expr())["event_id"].to_list() == expected
    arrow = event_id_array(pa.array(machines), pa.array(seqs, pa.int64()))
    assert pc.equal(arrow, pa.array(expected)).to_pylist() == [True, True]


def test_ground_truth_records_round_trip_and_the_last_record_of_an_id_wins() -> None:
    fault = FaultRecord("f1", "spike", "m-1", "vibration", 1, 2, {"sigmas": 8, "a": 1}, True)
    later = FaultRecord("f1", "spike", "m-1", "vibration", 1, 3, {}, True)
    machine = MachineRecord("m-1", "MOTOR", "line-1", {"rpm": {"unit": "rpm"}})
    values = [json.dumps(r.to_json()).encode() for r in (fault, machine, later)]
    values.append(b'{"kind": "other"}')
    truth = GroundTruth.parse(values)
    assert truth.messages == 4
    assert truth.faults.schema == pl.Schema(FAULT_SCHEMA)
    assert truth.faults.to_dicts() == [
        {
            "fault_id": "f1",
            "fault_type": "spike",
            "machine_id": "m-1",
            "metric": "vibration",
            "start_ms": 1,
            "end_ms": 3,
            "params": "{}",
            "detectable": True,
        }
    ]
    assert truth.machines["metrics"].to_list() == ['{"rpm": {"unit": "rpm"}}']
    assert FaultRecord.from_json(fault.to_json()) == fault
    assert next(iter(fault.to_json())) == "kind"
