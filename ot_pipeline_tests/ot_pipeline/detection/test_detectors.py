"""The detectors on constructed signals, causality, regimes, severity and the config (pure)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ot_pipeline.detection import DetectionConfig, detect

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def series(
    values: Sequence[float | None],
    *,
    machine: str = "m1",
    metric: str = "generic",
    interval_s: float = 1.0,
    seq_stride: int | None = 1,
    status: list[int] | None = None,
) -> pl.DataFrame:
    """One series as the detectors take it (contract columns that matter)."""
    n = len(values)
    columns: dict[str, object] = {
        "machine_id": [machine] * n,
        "metric": [metric] * n,
        "ts": [T0 + timedelta(seconds=i * interval_s) for i in range(n)],
        "value": values,
    }
    frame = pl.DataFrame(columns).with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")))
    if seq_stride is not None:
        frame = frame.with_columns(seq=pl.int_range(n, dtype=pl.Int64) * seq_stride)
    if status is not None:
        frame = frame.with_columns(status_code=pl.Series(status, dtype=pl.Int32))
    return frame


def noise(n: int, *, level: float = 50.0, sigma: float = 1.0, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, sigma) for _ in range(n)]


def flagged(result: pl.DataFrame) -> pl.DataFrame:
    return result.with_row_index("i").filter(pl.col("is_anomaly"))


def test_flags_on_a_prefix_do_not_change_when_more_data_follows() -> None:
    rng = random.Random(42)
    frames = []
    for k in range(4):
        values = noise(4000, level=20.0 + 10 * k, sigma=0.5 + k * 0.3, seed=k)
        for i in range(1, 4000):  # a slow random walk on top
            values[i] += 0.02 * rng.gauss(0, 1) + (values[i - 1] - values[i]) * 0.0
        values[1200] += 15.0
        for i in range(2000, 2100):
            values[i] = values[1999]  # stuck
        for i in range(2500, 2900):
            values[i] += 8.0 + 0.01 * (i - 2500)  # a level change that drifts
        frames.append(series(values, machine=f"m{k}", metric=["generic", "temperature"][k % 2]))
    full = pl.concat(frames)
    everything = detect(full)
    assert everything["is_anomaly"].sum() > 0
    for cut in (500, 1201, 2050, 2600, 3333):
        prefix_rows = full.with_row_index("i").filter(pl.col("ts") < T0 + timedelta(seconds=cut))
        on_prefix = detect(prefix_rows.drop("i"))
        same_rows = everything.with_row_index("i").join(prefix_rows.select("i"), on="i", how="semi")
        cols = ["score", "is_anomaly", "severity", "detector"]
        assert on_prefix.select(cols).equals(same_rows.select(cols)), f"cut at {cut}"


def test_output_keeps_input_rows_and_order_and_adds_the_result_columns() -> None:
    a = series(noise(300, seed=1), machine="a")
    b = series(noise(300, seed=2), machine="b")
    mixed = pl.concat([a, b]).sample(fraction=1.0, shuffle=True, seed=3)
    result = detect(mixed)
    assert result.columns == [*mixed.columns, "score", "is_anomaly", "severity", "detector"]
    assert result.select(mixed.columns).equals(mixed)
    assert detect(mixed.head(0)).columns == result.columns


def test_single_spike_and_short_excursion_are_flagged_as_spikes_and_nothing_else() -> None:
    values = noise(2000, sigma=1.0, seed=7)
    values[1500] += 12.0
    for i in (1700, 1701, 1702):
        values[i] -= 8.0
    result = flagged(detect(series(values)))
    rows = set(result["i"].to_list())
    assert 1501 in rows or 1500 in rows
    assert rows & {1702, 1703}
    assert rows <= {1500, 1501, 1700, 1701, 1702, 1703}
    assert set(result["detector"].to_list()) <= {"spike", "rate_of_change"}


def test_robust_baseline_is_not_fooled_by_the_outliers_it_finds() -> None:
    values = noise(3000, sigma=1.0, seed=8)
    for i in range(600, 3000, 50):  # frequent spikes do not widen the noise estimate
        values[i] += 15.0
    # (this frequent, spikes are the series' normal for the usual-spike rule and the alarm
    # budget, both tested in test_generic_signals.py: off here, the noise estimate is tested)
    config = DetectionConfig(defaults={"spike_usual_threshold": 0.0, "alarm_budget": 0})
    result = flagged(detect(series(values), config))
    spikes = set(range(600, 3000, 50))
    found = {i - 1 for i in result["i"].to_list()} | set(result["i"].to_list())
    assert len(spikes & found) >= 0.9 * len(spikes)


def test_level_shift_is_flagged_after_consecutive_breaches_and_keeps_being_flagged() -> None:
    values = noise(3000, sigma=1.0, seed=9)
    for i in range(2000, 2300):
        values[i] += 25.0
    result = flagged(detect(series(values)))
    inside = result.filter((pl.col("i") >= 2000) & (pl.col("i") < 2300))
    assert inside.height >= 200
    assert min(inside["i"].to_list()) <= 2010
    assert result.filter(pl.col("i") < 2000).height == 0
    assert {"level", "rate_of_change"} >= set(inside["detector"].unique().to_list())


def _chattering(seed: int) -> list[float]:
    """A fault that hovers at the level detector's fence: 20 readings well beyond it, then 10
    just inside it (still far from normal), again and again; normal before and after."""
    values = noise(7000, sigma=1.0, seed=seed)
    for i in range(6000, 6400):
        values[i] += 7.0 if (i - 6000) % 30 < 20 else 3.5
    return values


def test_level_alarm_does_not_chatter_at_its_fence_and_clears_after_the_fault() -> None:
    result = flagged(detect(series(_chattering(seed=21))))
    flags = result["i"].to_list()
    assert result.filter(pl.col("i") < 6000).height == 0
    first = min(flags)
    assert first <= 6012
    # one alarm for the whole fault: every reading from the first flag to the fault's end
    assert set(range(first, 6400)) <= set(flags)
    # ... and it clears once level_clear_samples readings are back inside the deadband
    assert max(flags) < 6400 + 15


def test_without_the_deadband_the_same_fault_chatters() -> None:
    config = DetectionConfig(defaults={"level_deadband": 0.0, "level_clear_samples": 1})
    flags = flagged(detect(series(_chattering(seed=21)), config))["i"].to_list()
    inside = [i for i in flags if 6000 <= i < 6400]
    restarts = sum(1 for a, b in itertools.pairwise(inside) if b - a > 1)
    assert restarts >= 5  # the alarm drops and is raised again, as the deadband prevents


def test_ramp_flags_a_fast_rise_inside_the_envelope_that_slow_load_changes_never_make() -> None:
    # a machine temperature following load steps with a lag of 600 readings, 40 <-> 60 degrees
    rng = random.Random(23)
    values, level = [], 40.0
    for i in range(14000):
        target = 60.0 if (i // 2000) % 2 else 40.0
        level += (target - level) / 600.0
        values.append(level + rng.gauss(0.0, 0.1))
    for i in range(12600, 12900):  # an overheat at the low operating point: +12 within 90 s
        values[i] += min(12.0, (i - 12600) * 12.0 / 90.0)
    result = flagged(detect(series(values, metric="temperature")))
    ramp = result.filter((pl.col("detector") == "ramp") & (pl.col("i") >= 12600))
    assert 12600 < min(ramp["i"].to_list()) < 12600 + 5 * 30  # within ~4 blocks of its start
    # The first cycle is new to the series (flagged: a level never seen); once it is in the
    # history, the lagged load changes are normal.
    assert result.filter(pl.col("i").is_between(4000, 12599)).height == 0
    assert values[12750] < max(values[:12000])  # and the overheat stays inside the envelope


def test_machinery_metric_ignores_a_drop_but_flags_a_rise() -> None:
    down = noise(3000, level=60.0, sigma=0.3, seed=10)
    up = list(down)
    for i in range(2000, 2300):
        down[i] -= 12.0
        up[i] += 12.0
    assert flagged(detect(series(down, metric="temperature"))).height == 0
    assert flagged(detect(series(up, metric="temperature"))).height > 200


def test_static_limits_from_the_config_are_breached_after_consecutive_readings() -> None:
    values = noise(1000, level=10.0, sigma=0.1, seed=11)
    for i in range(800, 806):
        values[i] = 10.4  # above the limit, well inside the learned envelope's reach
    config = DetectionConfig(machines={"m1": {"generic": {"upper_limit": 10.35}}})
    result = flagged(detect(series(values), config))
    limits = result.filter(pl.col("detector") == "limits")
    assert limits["i"].to_list() == [804, 805]


def test_slow_drift_is_flagged_while_it_lasts_and_not_before() -> None:
    values = noise(12000, sigma=1.0, seed=12)
    for i in range(8000, 12000):
        values[i] += (i - 8000) * 0.004  # 16 sigma over 4000 readings
    result = flagged(detect(series(values)))
    drift = result.filter(pl.col("detector") == "drift")
    assert drift.height > 0
    assert result.filter(pl.col("i") < 8000).height == 0
    assert min(drift["i"].to_list()) > 8000


def test_stuck_sensor_is_flagged_once_flat_for_stuck_samples() -> None:
    values = noise(1500, sigma=0.5, seed=13)
    for i in range(1000, 1200):
        values[i] = values[999]
    result = flagged(detect(series(values)))
    stuck = result.filter(pl.col("detector") == "stuck")
    assert min(stuck["i"].to_list()) == 1000 + 29
    assert max(stuck["i"].to_list()) == 1199
    assert result.filter(pl.col("i") < 1000).height == 0


def test_rate_of_change_flags_a_jump_out_of_the_envelope_at_once() -> None:
    values = noise(1500, sigma=0.5, seed=14)
    for i in range(1200, 1500):
        values[i] += 60.0
    result = flagged(detect(series(values)))
    first = result.row(0, named=True)
    assert first["i"] == 1200
    assert first["detector"] == "rate_of_change"


def test_data_gaps_from_seq_jumps_and_from_time_steps() -> None:
    base = series(noise(600, seed=15), seq_stride=3)
    with_gap = base.filter((pl.col("seq") < 900) | (pl.col("seq") >= 1200))  # 100 lost
    result = flagged(detect(with_gap))
    assert result["detector"].to_list() == ["gap"]
    assert result["i"].to_list() == [300]
    no_seq = with_gap.drop("seq")
    result = flagged(detect(no_seq))
    assert result["detector"].to_list() == ["gap"]


def test_planned_stop_without_status_is_flagged_once_low_and_restart_does_not_flood() -> None:
    values = noise(6000, level=80.0, sigma=1.0, seed=16)
    for i in range(3000, 4000):
        values[i] = 2.0 + 0.05 * (i % 3)  # stopped: near zero and near constant
    result = flagged(detect(series(values)))
    assert result.height <= 3
    first = result.row(0, named=True)
    assert first["detector"] == "regime"
    assert first["severity"] == "LOW"
    assert 3000 <= first["i"] <= 3005


def test_maintenance_status_suppresses_flags_and_device_status_replaces_regime_flags() -> None:
    values = noise(3000, level=80.0, sigma=1.0, seed=17)
    status = [0] * 3000
    for i in range(2000, 2400):
        values[i] = 0.0
        status[i] = 3
    result = flagged(detect(series(values, status=status)))
    assert result.height == 0


def test_severity_escalates_while_an_anomaly_lasts() -> None:
    values = noise(3000, sigma=1.0, seed=18)
    for i in range(2000, 2700):
        values[i] += 12.0
    result = flagged(detect(series(values)))
    levels = ["LOW", "MEDIUM", "HIGH", "CRITICAL"]
    level_flags = result.filter(pl.col("detector") == "level")
    early = levels.index(level_flags["severity"][0])
    late = levels.index(level_flags["severity"][-1])
    assert level_flags.height > 120
    assert late > early


def test_config_resolves_metric_and_machine_overrides_and_rejects_unknown_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "detection.yaml"
    path.write_text(
        "defaults: {spike_threshold: 7.0}\n"
        "metrics:\n  temperature: {stuck_samples: 60}\n"
        "machines:\n  press-07: {level_consecutive: 20}\n"
        "  pump-03:\n    pressure: {upper_limit: 12.0}\n",
        encoding="utf-8",
    )
    config = DetectionConfig.from_yaml(path)
    assert config.settings_for("x", "temperature").stuck_samples == 60
    assert config.settings_for("x", "temperature").direction == "up"
    assert config.settings_for("x", "voltage").spike_threshold == 7.0
    assert config.settings_for("press-07", "rpm").level_consecutive == 20
    assert config.settings_for("pump-03", "pressure").upper_limit == 12.0
    assert config.settings_for("pump-03", "flow").upper_limit is None
    with pytest.raises(ValueError, match="unknown detection setting"):
        DetectionConfig(metrics={"rpm": {"spike_treshold": 3}})


def test_a_fresh_fleet_gives_no_drift_verdict_while_the_usual_trend_is_unknown() -> None:
    """The first quarter hour of a fresh `make run` (20 machines at 200 readings/s: one reading
    per metric every 0.36 s) has no drift at all. The unknown trend and net change of the first
    blocks used to count as 0, so the usual change was 0 once 60 blocks (about 11 minutes) were
    there, the first real changes were judged against the noise bound alone, and 90-120 drift
    verdicts fired on 3-4 series within seconds."""
    from streaming.simulator import generate

    start = datetime(2026, 3, 2, 10, 7, tzinfo=UTC)
    data = generate(fleet_size=20, start=start, hours=0.25, interval_s=0.36, seed=42, chaos="none")
    flagged = detect(data.readings).filter(pl.col("is_anomaly"))
    drift = flagged.filter(pl.col("detector") == "drift")
    assert drift.is_empty(), drift.group_by("machine_id", "metric").len()


def test_a_fresh_fleet_raises_no_level_burst_and_shows_its_early_faults() -> None:
    """A fresh `make run` (20 machines, one reading per metric every 0.36 s) started at :37
    learnt one operating point in its first minutes; the quarter-hourly setpoint change at :45
    then left that envelope on every load-driven metric: about 12,000 `level` flags in 15
    minutes without any fault. The fleet's config gives no level verdict before
    `baseline_blocks` (240) blocks now, while the live run's early faults (spikes, stuck
    values, judged from the 4th block) are found within two minutes (the third, a machine falling
    silent, is the state writer's OFFLINE alarm)."""
    from streaming.simulator import generate
    from streaming.simulator.chaos import DETECTABLE

    start = datetime(2026, 12, 7, 7, 37, tzinfo=UTC)
    quiet = generate(fleet_size=20, start=start, hours=0.25, interval_s=0.36, seed=7, chaos="none")
    fleet = DetectionConfig.fleet()
    flagged = detect(quiet.readings, fleet).filter(pl.col("is_anomaly"))
    assert flagged.filter(pl.col("detector") == "level").is_empty(), flagged.group_by(
        "machine_id", "metric"
    ).len()
    assert flagged.height <= 20  # a few spikes of the noise at most
    # the same quarter hour with the old warm-up: the burst this test guards against
    burst = detect(quiet.readings).filter(pl.col("is_anomaly") & (pl.col("detector") == "level"))
    assert burst.height > 1000

    live = generate(
        fleet_size=20,
        start=start,
        hours=0.05,
        interval_s=0.36,
        seed=7,
        chaos="default",
        early_faults=3,
    )
    early = live.faults.filter(
        pl.col("fault_type").is_in(list(DETECTABLE)),
        pl.col("metric").is_not_null(),  # the silent machine is the state writer's OFFLINE alarm
        pl.col("start_ms") - int(start.timestamp() * 1000) <= 120_000,
    )
    assert early.height >= 2
    flagged = detect(live.readings, fleet).filter(pl.col("is_anomaly"))
    for fault in early.iter_rows(named=True):
        hits = flagged.filter(
            pl.col("machine_id") == fault["machine_id"],
            pl.col("metric") == fault["metric"],
            pl.col("ts").dt.epoch("ms").is_between(fault["start_ms"], fault["end_ms"] + 60_000),
        )
        assert hits.height, fault
