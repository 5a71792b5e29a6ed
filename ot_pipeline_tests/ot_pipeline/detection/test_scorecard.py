"""The scorecard: event-window matching, alarm episodes, excused alarms, delays (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from ot_pipeline.detection.scorecard import ALL, episodes, score

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def readings(
    machine: str,
    metric: str,
    flagged_at: set[int],
    *,
    seconds: int = 86_400,
    status_at: dict[int, int] | None = None,
) -> pl.DataFrame:
    """One reading every 10 s for a day; `flagged_at` are seconds with is_anomaly true."""
    times = list(range(0, seconds, 10))
    status_at = status_at or {}
    return pl.DataFrame(
        {
            "machine_id": machine,
            "metric": metric,
            "ts": [T0 + timedelta(seconds=t) for t in times],
            "status_code": [status_at.get(t, 0) for t in times],
            "is_anomaly": [t in flagged_at for t in times],
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))


def fault(
    fault_id: str,
    fault_type: str,
    machine: str,
    metric: str | None,
    start_s: int,
    end_s: int,
    detectable: bool = True,
) -> dict[str, object]:
    return {
        "fault_id": fault_id,
        "fault_type": fault_type,
        "machine_id": machine,
        "metric": metric,
        "start_ms": T0_MS + start_s * 1000,
        "end_ms": T0_MS + end_s * 1000,
        "params": "{}",
        "detectable": detectable,
    }


def test_one_long_fault_flagged_throughout_is_one_true_alarm_and_delay_is_first_flag() -> None:
    flags = set(range(1030, 2000, 10))  # flagged continuously from 30 s after the start
    anomalies = readings("m1", "temperature", flags)
    faults = pl.DataFrame([fault("f1", "overheat", "m1", "temperature", 1000, 2000)])
    card = score(anomalies, faults, tolerance_s=60)
    row = card.filter(pl.col("fault_type") == "overheat").row(0, named=True)
    assert row["faults"] == 1 and row["detected"] == 1
    assert row["recall"] == 1.0
    assert row["true_episodes"] == 1 and row["false_alarms"] == 0
    assert row["precision"] == 1.0 and row["f1"] == 1.0
    assert row["median_delay_s"] == 30.0


def test_alarm_outside_every_window_is_false_and_counted_per_machine_day() -> None:
    anomalies = pl.concat(
        [
            readings("m1", "rpm", {5000, 5010, 9000}),  # one episode of two flags, one single
            readings("m2", "rpm", set()),
        ]
    )
    faults = pl.DataFrame([fault("f1", "spike", "m1", "rpm", 100, 101)])
    card = score(anomalies, faults, tolerance_s=60)
    total = card.filter(pl.col("fault_type") == ALL).row(0, named=True)
    assert total["false_alarms"] == 2
    assert total["recall"] == 0.0
    assert total["precision"] == 0.0
    assert total["machine_days"] == pytest.approx(2 * 86_390 / 86_400, rel=1e-3)
    assert total["false_alarms_per_machine_day"] == pytest.approx(
        2 / total["machine_days"], rel=1e-3
    )


def test_flag_after_the_fault_within_tolerance_counts_and_beyond_it_does_not() -> None:
    anomalies = readings("m1", "flow", {1050, 3000})
    faults = pl.DataFrame(
        [
            fault("gap-1", "packet_loss", "m1", None, 900, 1000),  # any metric, +60 s tolerance
            fault("gap-2", "packet_loss", "m1", None, 2800, 2900),
        ]
    )
    card = score(anomalies, faults, tolerance_s=60)
    row = card.filter(pl.col("fault_type") == "packet_loss").row(0, named=True)
    assert row["detected"] == 1
    assert row["false_alarms"] == 1  # the flag at 3000 s is 100 s after gap-2 ended


def test_flags_in_windows_of_faults_not_meant_for_detectors_are_excused_not_false() -> None:
    anomalies = readings("m1", "rpm", {4000})
    faults = pl.DataFrame([fault("skew", "clock_skew", "m1", None, 3900, 4100, detectable=False)])
    card = score(anomalies, faults, tolerance_s=60)
    total = card.filter(pl.col("fault_type") == ALL).row(0, named=True)
    assert total["false_alarms"] == 0
    assert total["excused_episodes"] == 1
    assert total["faults"] == 0  # not detectable: excluded from recall


def test_flags_while_the_device_reports_a_fault_are_excused() -> None:
    anomalies = readings("m1", "vibration", {7000, 7010}, status_at={7000: 2, 7010: 2})
    card = score(anomalies, pl.DataFrame([fault("f", "spike", "m2", "rpm", 1, 2)]), tolerance_s=60)
    total = card.filter(pl.col("fault_type") == ALL).row(0, named=True)
    assert total["false_alarms"] == 0 and total["excused_episodes"] == 1


def test_a_flag_on_another_metric_does_not_detect_a_metric_fault() -> None:
    anomalies = readings("m1", "rpm", {1010})
    faults = pl.DataFrame([fault("f1", "spike", "m1", "current", 1000, 1001)])
    card = score(anomalies, faults, tolerance_s=60)
    row = card.filter(pl.col("fault_type") == "spike").row(0, named=True)
    assert row["detected"] == 0
    assert row["true_episodes"] == 1  # the machine really was faulty then: not a false alarm


def test_episodes_merge_flags_closer_than_the_gap() -> None:
    anomalies = readings("m1", "rpm", {100, 150, 400})
    eps = episodes(anomalies, merge_gap_s=60)
    assert eps.select("start_ms", "end_ms").rows() == [
        (T0_MS + 100_000, T0_MS + 150_000),
        (T0_MS + 400_000, T0_MS + 400_000),
    ]
