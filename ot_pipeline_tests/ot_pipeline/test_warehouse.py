"""PostgreSQL loads: a range is replaced exactly, whole hours by partition swap, partial hours
keeping their rows outside the range, in one transaction."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from streaming.settings import Settings

HOUR = datetime(2026, 11, 20, 12, tzinfo=UTC)


def _windows(start: datetime, minutes: int, value: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "bucket": [start + timedelta(minutes=i) for i in range(minutes)],
            "machine_id": ["m1"] * minutes,
            "metric": ["rpm"] * minutes,
            "count": [60] * minutes,
            "min": [value] * minutes,
            "max": [value] * minutes,
            "mean": [value] * minutes,
            "stddev": [None] * minutes,
            "first": [value] * minutes,
            "last": [value] * minutes,
            "rolling_mean": [value] * minutes,
        },
        schema_overrides={"bucket": pl.Datetime("ms", "UTC"), "stddev": pl.Float64},
    )


@pytest.mark.stack
def test_replacing_a_range_swaps_whole_hours_keeps_rows_outside_it_and_feeds_the_hourly_view(
    isolated: Settings,
) -> None:
    import psycopg

    from ot_pipeline.warehouse import Warehouse

    warehouse = Warehouse(isolated.pg_dsn, isolated.pg_schema)
    warehouse.ensure_schema()
    three_hours = (HOUR, HOUR + timedelta(hours=3))
    first = warehouse.replace_range("readings_1m", *three_hours, _windows(HOUR, 180, 1.0))
    again = warehouse.replace_range("readings_1m", *three_hours, _windows(HOUR, 180, 2.0))
    assert (first.deleted, again.deleted) == (0, 180)
    # 12:30-13:30 replaced by 30 rows of 12:30-12:59; 13:00-13:29 becomes empty.
    middle = (HOUR + timedelta(minutes=30), HOUR + timedelta(minutes=90))
    partial = warehouse.replace_range("readings_1m", *middle, _windows(middle[0], 30, 9.0))
    assert partial.deleted == 60
    gone = warehouse.replace_range(
        "readings_1m", HOUR + timedelta(hours=2), three_hours[1], _windows(HOUR, 0, 0.0)
    )
    assert gone.deleted == 60
    warehouse.refresh_hourly()
    schema = isolated.pg_schema
    with psycopg.connect(isolated.pg_dsn) as conn:
        hours = conn.execute(
            f"SELECT bucket, count::bigint, mean FROM {schema}.readings_hourly ORDER BY bucket"
        ).fetchall()
        stored = conn.execute(
            f"SELECT bucket, mean, stddev FROM {schema}.readings_1m ORDER BY bucket"
        ).fetchall()
    assert hours == [
        (HOUR, 3600, (30 * 2.0 + 30 * 9.0) / 60),
        (HOUR + timedelta(hours=1), 1800, 2.0),
    ]
    expected = [(HOUR + timedelta(minutes=m), 2.0, None) for m in range(30)]
    expected += [(HOUR + timedelta(minutes=m), 9.0, None) for m in range(30, 60)]
    expected += [(HOUR + timedelta(minutes=m), 2.0, None) for m in range(90, 120)]
    assert stored == expected
    with pytest.raises(ValueError, match="outside"):
        warehouse.replace_range("readings_1m", *middle, _windows(HOUR, 1, 1.0))
