"""The pipeline's pure transforms, without Dagster or servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
import yaml

from ot_pipeline.instance import REPO_DAGSTER_YAML, instance_yaml
from ot_pipeline.sensors import LandingCursor, plan_landing_requests
from ot_pipeline.transforms.anomalies import ANOMALY_COLUMNS, hour_anomalies
from ot_pipeline.transforms.health import machine_health
from ot_pipeline.transforms.landing import (
    FileAccount,
    contiguous_ranges,
    offset_gaps,
    removable_files,
)
from ot_pipeline.transforms.readings import out_of_range, select_hour
from ot_pipeline.transforms.windows import coarser_windows, tumbling_windows
from ot_tools.synthetic_landing import synthetic_readings
from streaming.lake.hours import day_hours, hour_bounds

H = datetime(2026, 11, 20, 10, tzinfo=UTC)


def _landed(rows: list[dict]) -> pl.DataFrame:
    base = {
        "machine_type": "MOTOR",
        "line_id": "line-1",
        "unit": "°C",
        "status_code": 0,
        "quality": "GOOD",
    }
    frame = pl.DataFrame([{**base, **r} for r in rows])
    return frame.with_columns(
        pl.col("ts").cast(pl.Datetime("ms", "UTC")),
        pl.col("ingest_ts").cast(pl.Datetime("ms", "UTC")),
        pl.col("status_code").cast(pl.Int32),
        pl.col("kafka_partition").cast(pl.Int32),
        pl.col("kafka_offset").cast(pl.Int64),
        pl.col("seq").cast(pl.Int64),
    )


def _row(eid: str, ts: datetime, value: float, part: int, off: int, ingest: datetime) -> dict:
    machine, seq = eid.split(":")
    return {
        "event_id": eid,
        "machine_id": machine,
        "metric": "temperature",
        "value": value,
        "ts": ts,
        "seq": int(seq),
        "kafka_partition": part,
        "kafka_offset": off,
        "ingest_ts": ingest,
    }


def test_readings_of_an_hour_keep_the_first_landed_copy_and_count_late_and_duplicate_rows():
    landed = _landed(
        [
            _row("m1:1", H + timedelta(minutes=1), 20.0, 0, 5, H + timedelta(minutes=1)),
            # a resent copy landed later (higher offset): must lose
            _row("m1:1", H + timedelta(minutes=1), 99.0, 0, 9, H + timedelta(minutes=3)),
            _row("m1:2", H + timedelta(minutes=2), 21.0, 1, 3, H + timedelta(hours=2)),  # late
            _row("m1:3", H - timedelta(minutes=1), 22.0, 0, 4, H),  # previous hour
            _row("m1:4", H + timedelta(hours=1), 23.0, 0, 6, H + timedelta(hours=1)),  # next
        ]
    )
    start, end = hour_bounds("2026-11-20-10:00")
    hour = select_hour(landed, start, end, timedelta(minutes=5))
    assert hour.readings["event_id"].to_list() == ["m1:1", "m1:2"]
    assert hour.readings.filter(pl.col("event_id") == "m1:1")["value"].item() == 20.0
    assert hour.landed_rows == 3
    assert hour.duplicates == 1
    assert hour.late_rows == 1


def test_readings_of_an_hour_are_sorted_by_machine_metric_time_whatever_the_landed_order():
    """The integer-keyed sort equals a stable (machine_id, metric, ts) string sort, duplicates
    resolved to the lowest (partition, offset) even when a later copy comes first in the frame."""
    readings = synthetic_readings(H, 0.05, 7, interval_s=5.0)
    landed = readings.with_columns(
        pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("kafka_offset"),
        pl.col("ts").alias("ingest_ts"),
    )
    resent = landed.head(50).with_columns(pl.col("kafka_offset") + 10_000, pl.col("value") + 1)
    shuffled = pl.concat([resent, landed]).sample(fraction=1.0, shuffle=True, seed=3)
    start, end = hour_bounds("2026-11-20-10:00")
    hour = select_hour(shuffled, start, end, timedelta(minutes=5))
    assert hour.duplicates == 50
    assert hour.readings.equals(landed.sort("machine_id", "metric", "ts", maintain_order=True))


def test_values_outside_the_contract_ranges_are_found():
    frame = pl.DataFrame(
        {
            "event_id": ["a", "b", "c", "d"],
            "metric": ["temperature", "temperature", "vibration", "nonsense"],
            "value": [20.0, 401.0, -0.5, 1.0],
        }
    )
    assert sorted(out_of_range(frame)["event_id"].to_list()) == ["b", "c", "d"]


def test_tumbling_windows_count_every_reading_once_with_correct_statistics():
    readings = synthetic_readings(H, 1, machines=3, interval_s=7.0)
    one = tumbling_windows(readings, "1m", "15m")
    five = tumbling_windows(readings, "5m", "1h")
    assert one["count"].sum() == readings.height == five["count"].sum()
    # one machine/metric/minute recomputed by hand
    bucket = one.row(3, named=True)
    raw = readings.filter(
        (pl.col("machine_id") == bucket["machine_id"])
        & (pl.col("metric") == bucket["metric"])
        & (pl.col("ts") >= bucket["bucket"])
        & (pl.col("ts") < bucket["bucket"] + timedelta(minutes=1))
    ).sort("ts")
    assert bucket["count"] == raw.height
    assert bucket["min"] == raw["value"].min() and bucket["max"] == raw["value"].max()
    assert bucket["mean"] == pytest.approx(raw["value"].mean())
    assert bucket["stddev"] == pytest.approx(raw["value"].std())
    assert bucket["first"] == raw["value"][0] and bucket["last"] == raw["value"][-1]
    # the rolling mean of the first bucket of a series is that bucket's mean
    first = one.filter(pl.col("bucket") == H).row(0, named=True)
    assert first["rolling_mean"] == pytest.approx(first["mean"])
    assert one.filter(pl.col("rolling_mean").is_null()).height == 0


def test_anomalies_of_an_hour_see_history_but_keep_only_flagged_rows_of_the_hour():
    readings = synthetic_readings(H - timedelta(minutes=30), 1.5, machines=1, interval_s=60.0)
    start, end = H, H + timedelta(hours=1)
    history = readings.filter(pl.col("ts") < start)
    hour = readings.filter(pl.col("ts") >= start)
    seen: dict[str, datetime] = {}

    def detect(frame: pl.DataFrame) -> pl.DataFrame:
        seen["first_ts"] = frame["ts"].to_list()[0]
        return frame.with_columns(
            score=pl.lit(1.0),
            is_anomaly=pl.col("metric") == "temperature",
            severity=pl.lit("HIGH"),
            detector=pl.lit("test"),
        )

    flagged = hour_anomalies(history, hour, start, end, detect)
    assert seen["first_ts"] < start  # the detectors were warmed with history
    assert flagged.columns == list(ANOMALY_COLUMNS)
    assert flagged.height == hour.filter(pl.col("metric") == "temperature").height
    stamps = flagged["ts"].to_list()
    assert min(stamps) >= start and max(stamps) < end


def test_machine_health_counts_status_time_uptime_anomalies_and_seq_gaps():
    rows = []
    seq = 0
    for minute in range(60):
        seq += 1
        if minute in (10, 11):  # two readings lost: one gap of 2
            continue
        status = 2 if 30 <= minute < 45 else 0
        rows.append(
            {
                "machine_id": "m1",
                "metric": "pressure",
                "machine_type": "PUMP",
                "line_id": "l1",
                "ts": H + timedelta(minutes=minute),
                "seq": seq,
                "status_code": status,
            }
        )
    readings = pl.DataFrame(rows).with_columns(
        pl.col("ts").cast(pl.Datetime("ms", "UTC")), pl.col("status_code").cast(pl.Int32)
    )
    anomalies = pl.DataFrame(
        {"machine_id": ["m1", "m1", "m1"], "severity": ["LOW", "HIGH", "CRITICAL"]}
    )
    health = machine_health(readings, anomalies, H, H + timedelta(hours=1), max_gap_s=60.0)
    row = health.row(0, named=True)
    assert row["readings"] == 58
    assert row["seq_gaps"] == 1 and row["missing_readings"] == 2
    assert row["fault_s"] == pytest.approx(15 * 60)
    # 43 OK samples of 60 s each: minute 9 would hold 3 min until minute 12, capped at 60 s
    assert row["ok_s"] == pytest.approx(43 * 60)
    assert row["no_data_s"] == pytest.approx(120)
    assert row["uptime_pct"] == pytest.approx(row["ok_s"] / 36)
    assert row["anomalies"] == 3 and row["alerts"] == 2


def test_offset_gaps_find_lost_and_doubled_ranges_per_partition():
    assert offset_gaps([(0, 0, 9), (0, 10, 19), (1, 5, 7), (1, 8, 8)]) == []
    gaps = offset_gaps([(0, 0, 9), (0, 12, 19), (1, 0, 4), (1, 3, 9)])
    assert [(g.partition, g.expected_first, g.found_first) for g in gaps] == [
        (0, 10, 12),
        (1, 5, 3),
    ]
    assert FileAccount(0, 0, 9, rows=8, dead_lettered=2).balanced
    assert not FileAccount(0, 0, 9, rows=8, dead_lettered=1).balanced


def test_sensor_plan_groups_touched_hours_into_ranges_and_advances_the_cursor():
    keys = day_hours("2026-11-20")
    ranges, cursor, skipped = plan_landing_requests(
        LandingCursor(),
        [
            (0, 0, 99, ["2026-11-20-01:00", "2026-11-20-02:00"]),
            (0, 100, 199, ["2026-11-20-03:00"]),
            (1, 0, 49, ["2026-11-20-07:00", "2019-01-01-00:00"]),
        ],
        keys,
        now=datetime(2026, 11, 21, tzinfo=UTC).timestamp(),
        refresh_seconds=300,
    )
    assert ranges == [
        ("2026-11-20-01:00", "2026-11-20-03:00"),
        ("2026-11-20-07:00", "2026-11-20-07:00"),
    ]
    assert cursor.offsets == {0: 199, 1: 49} and cursor.pending == []
    assert skipped == ["2019-01-01-00:00"]
    assert contiguous_ranges([], keys) == []


def test_retention_removes_only_old_files_whose_days_are_all_archived():
    days = {"a": {"2026-11-01"}, "b": {"2026-11-01", "2026-11-02"}, "c": {"2026-11-01"}, "d": set()}
    ages = {"a": 8.0, "b": 9.0, "c": 2.0, "d": 30.0}
    assert removable_files(days, ages, {"2026-11-01"}, retention_days=7) == ["a"]
    assert removable_files(days, ages, {"2026-11-01", "2026-11-02"}, 7) == ["a", "b"]


def test_instance_config_switches_to_postgres_storage_only_when_configured():
    template = REPO_DAGSTER_YAML.read_text()
    assert instance_yaml(template, None) == template
    swapped = instance_yaml(template, "postgresql://x")
    config = yaml.safe_load(swapped)
    assert config["storage"] == {"postgres": {"postgres_url": {"env": "OT_DAGSTER_PG_URL"}}}
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 2
    assert "storage" not in (yaml.safe_load(template) or {})  # default: SQLite in DAGSTER_HOME


def test_five_minute_windows_rolled_up_from_one_minute_windows_equal_direct_ones():
    readings = synthetic_readings(H, 1, machines=3, interval_s=7.0)
    direct = tumbling_windows(readings, "5m", "1h")
    rolled = coarser_windows(tumbling_windows(readings, "1m", "15m"), "5m", "1h")
    assert rolled.columns == direct.columns and rolled.height == direct.height
    for column in ("count", "min", "max", "first", "last"):
        assert rolled[column].to_list() == direct[column].to_list(), column
    for column in ("mean", "stddev", "rolling_mean"):
        assert rolled[column].to_list() == pytest.approx(direct[column].to_list(), rel=1e-9)
