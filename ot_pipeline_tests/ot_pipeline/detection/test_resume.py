"""Detection resumed from a state, batch after batch, equals one run over all the readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from ot_pipeline.detection import DetectionConfig, detect
from ot_pipeline.detection.engine import detect_resumed
from ot_pipeline.detection.resume import DetectorState

START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
FLAGS = ["event_id", "is_anomaly", "score", "severity", "detector"]
# Short memories, so that a few hours exercise every window's cap: the block history (the
# prior blocks a state keeps), drift, settling, the alarm budget's window, the relation
# detector's window (2 chunks: an hour of 30 s buckets each).
SHORT = {
    "history_blocks": 150,
    "drift_blocks": 20,
    "drift_min_history_blocks": 20,
    "settle_blocks": 20,
    "alarm_budget_window": 3000,
    "alarm_budget": 2,
    "baseline_blocks": 10,
    "relation": True,
    "relation_history_chunks": 2,
}


def _readings(machines: int, hours: int, chaos: str) -> pl.DataFrame:
    from streaming.simulator import generate

    data = generate(machines, START, hours, 1.0, 11, chaos, {"clock_skew": 0.0})
    return data.readings.unique("event_id", keep="first", maintain_order=True)


def _hourly(readings: pl.DataFrame, hours: int, config: DetectionConfig) -> pl.DataFrame:
    state: DetectorState | None = None
    parts = []
    for h in range(hours):
        begin, end = START + timedelta(hours=h), START + timedelta(hours=h + 1)
        hour = readings.filter((pl.col("ts") >= begin) & (pl.col("ts") < end))
        if h == 1:  # the state survives its file
            assert state is not None
            state = DetectorState.from_frame(state.to_frame())
        scored, state = detect_resumed(hour, state, config)
        parts.append(scored)
    return pl.concat(parts)


@pytest.mark.parametrize(
    ("config", "machines", "hours", "chaos"),
    [
        (DetectionConfig.fleet(), 6, 3, "heavy"),
        (DetectionConfig(defaults=SHORT), 6, 6, "heavy"),
    ],
    ids=["fleet", "short-memories"],
)
def test_hours_resumed_from_their_state_flag_exactly_what_one_run_flags(
    config: DetectionConfig, machines: int, hours: int, chaos: str
) -> None:
    """Spikes, stuck values, drifts, overheats, bearing wear, packet loss, duplicates and late
    readings (`heavy`), hour after hour: every reading gets the score, severity and detector of
    one continuous run, flag for flag."""
    readings = _readings(machines, hours, chaos)
    continuous = detect(readings, config).select(FLAGS)
    hourly = _hourly(readings, hours, config).select(FLAGS)
    assert hourly.height == continuous.height
    assert continuous["is_anomaly"].sum() > 100  # there is something to agree on
    assert (continuous["detector"] == "relation").sum() > 100  # the relation detector too
    joined = continuous.join(hourly, on="event_id", suffix="_hourly", nulls_equal=True)
    assert joined.height == continuous.height
    for column in FLAGS[1:]:
        differs = joined.filter(pl.col(column).ne_missing(pl.col(f"{column}_hourly")))
        assert differs.is_empty(), (column, differs.head())


def test_without_a_state_an_hour_apart_learns_its_baselines_again() -> None:
    """What the state is for: the same hour run alone (no state) flags differently."""
    readings = _readings(6, 3, "heavy")
    last = readings.filter(pl.col("ts") >= START + timedelta(hours=2))
    config = DetectionConfig.fleet()
    continuous = detect(readings, config).filter(pl.col("ts") >= START + timedelta(hours=2))
    alone, state = detect_resumed(last, None, config)
    assert state is not None
    assert state.series.height == last.select("machine_id", "metric").n_unique()
    # alone, the hour has no level verdict (the fleet's baseline is 240 blocks: two hours at
    # 1 s): the faults in progress and the hour's own are flagged far less
    assert alone["is_anomaly"].sum() < continuous["is_anomaly"].sum() / 2


def test_a_state_refuses_what_it_cannot_carry() -> None:
    readings = _readings(2, 1, "none")
    with pytest.raises(ValueError, match="keep no state"):
        detect_resumed(readings, None, DetectionConfig(defaults={"multivariate": True}))


@pytest.mark.slow
def test_days_of_batches_carry_the_daily_profile_of_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three and a half days (one reading every 10 s, planned stops, two-shift lines idle at
    night) in batches of 6 hours: the daily profile that tells a usual nightly low from a stop
    needs two earlier days, which only the state's profile bins hold."""
    import ot_pipeline.detection.regime as regime
    from streaming.simulator import generate

    hours, step = 84, 6
    data = generate(3, START, hours, 10.0, 5, "default", {"clock_skew": 0.0})
    readings = data.readings.unique("event_id", keep="first", maintain_order=True)
    config = DetectionConfig.fleet()
    continuous = detect(readings, config).select(FLAGS)
    state: DetectorState | None = None
    parts = []
    for h in range(0, hours, step):
        begin, end = START + timedelta(hours=h), START + timedelta(hours=h + step)
        batch = readings.filter((pl.col("ts") >= begin) & (pl.col("ts") < end))
        scored, state = detect_resumed(batch, state, config)
        state = DetectorState.from_frame(state.to_frame()) if state is not None else None
        parts.append(scored)
    batched = pl.concat(parts).select(FLAGS)
    joined = continuous.join(batched, on="event_id", suffix="_batched", nulls_equal=True)
    assert joined.height == continuous.height
    for column in FLAGS[1:]:
        assert joined.filter(pl.col(column).ne_missing(pl.col(f"{column}_batched"))).is_empty()
    # the profile is at work here: without it, scores differ
    monkeypatch.setattr(regime, "PROFILE_MIN_DAYS", 99)
    blind = detect(readings, config).select(FLAGS)
    assert (blind["score"] != continuous["score"]).sum() > 1000


def test_the_same_readings_write_the_same_state() -> None:
    """Reruns change nothing in the lake, the state files included (row order is fixed)."""
    readings = _readings(4, 1, "default")
    config = DetectionConfig.fleet()
    _, first = detect_resumed(readings, None, config)
    _, again = detect_resumed(readings.sample(fraction=1.0, shuffle=True, seed=3), None, config)
    assert first is not None and again is not None
    assert first.to_frame().equals(again.to_frame())
