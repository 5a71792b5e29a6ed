"""The simulator's physics without any server: lag, wear, mass balance, determinism."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from streaming.events.model import RANGES, MachineType, Metric
from streaming.simulator import generate
from streaming.simulator.fleet import BAR_PER_METRE, KW_PER_AMP, build_fleet
from streaming.simulator.generator import ReadingBlock, iter_delivered, make_simulator
from streaming.simulator.physics import PhysicsState, linear_recurrence, simulate

START = datetime(2026, 3, 2, 0, tzinfo=UTC)  # a Monday, midnight UTC
START_MS = int(START.timestamp() * 1000)


def _ticks(hours: float, interval_s: float, start_ms: int = START_MS) -> np.ndarray:
    step = int(interval_s * 1000)
    return start_ms + np.arange(int(hours * 3600 / interval_s), dtype=np.int64) * step


def test_first_order_lag_reaches_63_percent_of_a_step_after_one_time_constant() -> None:
    tau, dt = 600.0, 1.0
    a = np.array([np.exp(-dt / tau)])
    target = np.ones((3000, 1)) * 10.0
    y = linear_recurrence((1 - a) * target, a, np.zeros(1))
    assert abs(y[int(tau / dt) - 1, 0] - 10 * (1 - np.exp(-1))) < 0.01
    # the chunked cumulative sum equals the plain recursion
    ref = np.zeros(3000)
    prev = 0.0
    for k in range(3000):
        prev = a[0] * prev + (1 - a[0]) * 10.0
        ref[k] = prev
    assert np.allclose(y[:, 0], ref, rtol=1e-9, atol=1e-9)


def test_temperature_lags_load_through_a_planned_stop() -> None:
    fleet = build_fleet(40, seed=5)
    ts = _ticks(24, 10.0)
    phys = simulate(fleet, ts, 10.0, PhysicsState())
    motors = np.nonzero(fleet.is_type(MachineType.MOTOR))[0]
    checked = 0
    for m in motors:
        stop = phys.planned_stop[:, m]
        starts = np.nonzero(stop[1:] & ~stop[:-1])[0] + 1
        for s in starts:
            end = s + int(np.argmin(stop[s:]))
            if end - s < 60 or s < 200 or phys.load[s - 1, m] < 0.3:
                continue  # short, at the start, or from idle: not a clear step
            temp = phys.channels[Metric.TEMPERATURE][:, m]
            assert phys.load[s, m] == 0.0  # load drops at once
            assert abs(temp[s] - temp[s - 1]) < 0.5  # ... temperature does not
            # it keeps cooling during the whole stop, towards ambient
            assert temp[end - 1] < temp[s] - 3.0
            assert np.all(np.diff(temp[s + 1 : end]) < 0.05)
            checked += 1
    assert checked >= 3


def test_vibration_rises_with_wear_and_with_rpm() -> None:
    fleet = build_fleet(10, seed=1)
    ts = _ticks(2, 5.0, START_MS + 8 * 3_600_000)
    healthy = simulate(fleet, ts, 5.0, PhysicsState())
    worn = simulate(fleet, ts, 5.0, PhysicsState(), wear_extra=np.full((len(ts), 10), 0.5))
    vib0, vib1 = healthy.channels[Metric.VIBRATION], worn.channels[Metric.VIBRATION]
    running = healthy.running & (fleet.is_type(MachineType.MOTOR) | fleet.is_type(MachineType.PUMP))
    assert running.sum() > 100
    assert np.all(vib1[running] > vib0[running] * 1.2)
    motor = int(np.nonzero(fleet.is_type(MachineType.MOTOR))[0][0])
    rpm = healthy.channels[Metric.RPM][:, motor]
    assert np.corrcoef(rpm, vib0[:, motor])[0, 1] > 0.95


def test_tank_level_integrates_inflow_minus_outflow_and_pressure_follows_level() -> None:
    fleet = build_fleet(10, seed=3)
    tanks = np.nonzero(fleet.is_type(MachineType.TANK))[0]
    ts = _ticks(6, 2.0)
    state = PhysicsState()
    first = simulate(fleet, ts[:5000], 2.0, state)
    second = simulate(fleet, ts[5000:], 2.0, state)  # the level carries over between blocks
    whole = simulate(fleet, ts, 2.0, PhysicsState())
    level = np.vstack([first.channels[Metric.LEVEL], second.channels[Metric.LEVEL]])[:, tanks]
    assert np.allclose(level, whole.channels[Metric.LEVEL][:, tanks], atol=1e-6)
    net = (whole.tank_inflow - whole.tank_outflow)[:, tanks]  # % of volume per minute
    assert np.allclose(np.diff(level, axis=0), net[1:] * 2.0 / 60.0, atol=1e-6)
    assert np.all(whole.tank_inflow[:, tanks] >= 0)
    assert level.min() > 0 and level.max() < 100 and level.std() > 0.5
    height = fleet.params["tank_height_m"][tanks]
    pressure = whole.channels[Metric.PRESSURE][:, tanks]
    assert np.allclose(pressure, 1.0 + level / 100 * height * BAR_PER_METRE)


def test_correlated_metrics_stay_physically_consistent() -> None:
    fleet = build_fleet(10, seed=9)
    ts = _ticks(3, 5.0, START_MS + 5 * 3_600_000)
    phys = simulate(fleet, ts, 5.0, PhysicsState())
    ch = phys.channels
    motors = fleet.is_type(MachineType.MOTOR)
    assert np.allclose(ch[Metric.ENERGY][:, motors], KW_PER_AMP * ch[Metric.CURRENT][:, motors])
    pcbs = fleet.is_type(MachineType.PCB)
    volts, ohm = fleet.params["pcb_volts"][pcbs], fleet.params["pcb_ohm"][pcbs]
    assert np.allclose(ch[Metric.VOLTAGE][:, pcbs], volts - ohm * ch[Metric.CURRENT][:, pcbs])
    stopped = phys.planned_stop
    assert np.all(ch[Metric.RPM][stopped] == 0) and np.all(
        ch[Metric.CURRENT][:, motors][stopped[:, motors]] == 0
    )


def test_ambient_drifts_over_the_day() -> None:
    fleet = build_fleet(1, seed=1)
    ts = _ticks(24, 60.0)
    phys = simulate(fleet, ts, 60.0, PhysicsState())
    amb = phys.ambient[:, 0]
    hours = (ts % 86_400_000) / 3_600_000
    assert amb[np.argmin(np.abs(hours - 15))] - amb[np.argmin(np.abs(hours - 3))] > 5.0


def test_same_seed_gives_the_same_readings_whatever_the_block_size() -> None:
    a = generate(7, START, 0.5, 2.0, seed=11, chaos="heavy")
    b = generate(7, START, 0.5, 2.0, seed=11, chaos="heavy")
    assert a.readings.equals(b.readings) and a.faults.equals(b.faults)
    c = generate(7, START, 0.5, 2.0, seed=12, chaos="heavy")
    assert not a.readings["value"].equals(c.readings["value"])

    def run(block_ticks: int) -> ReadingBlock:
        sim = make_simulator(7, START, 0.5, 2.0, 11, "heavy")
        return ReadingBlock.concat([blk for blk, _ in iter_delivered(sim, block_ticks)])

    small, large = run(7), run(900)
    for name in ReadingBlock.COLUMNS:
        if name == "value":  # the chunked recurrences differ in the last bits only
            assert np.allclose(small.value, large.value, rtol=1e-9, atol=1e-9)
        else:
            assert np.array_equal(getattr(small, name), getattr(large, name)), name


def test_clean_run_has_no_faults_no_gaps_no_duplicates() -> None:
    data = generate(10, START, 1.0, 5.0, seed=2, chaos="none")
    r = data.readings
    assert data.faults.height == 0 and data.malformed.height == 0 and data.lost == 0
    assert (
        r["event_id"].n_unique() == r.height == 720 * sum(len(m["metrics"]) for m in data.machines)
    )
    gaps = r.sort("seq").group_by("machine_id").agg((pl.col("seq").diff().drop_nulls() != 1).sum())
    assert gaps["seq"].sum() == 0
    assert set(r["status_code"].unique()) <= {0, 3}
    assert set(r["quality"].unique()) == {"GOOD"}
    assert r.columns == [
        "event_id", "machine_id", "machine_type", "line_id", "metric", "unit", "value", "ts",
        "seq", "status_code", "quality",
    ]  # fmt: skip
    assert r.schema["ts"] == pl.Datetime("ms", "UTC")
    for metric, (lo, hi) in RANGES.items():
        values = r.filter(pl.col("metric") == str(metric))["value"]
        if len(values):
            assert lo <= values.min() and values.max() <= hi  # type: ignore[operator]


def test_machine_records_describe_every_machine_with_units_and_nominal_ranges() -> None:
    data = generate(6, START, 0.1, 10.0, seed=1, chaos="none")
    types = {m["machine_type"] for m in data.machines}
    assert types == {"MOTOR", "PUMP", "TANK", "PCB", "SENSOR"}
    motor = next(m for m in data.machines if m["machine_type"] == "MOTOR")
    assert set(motor["metrics"]) == {"temperature", "vibration", "rpm", "current", "energy"}
    assert motor["metrics"]["temperature"]["unit"] == "°C"
    # healthy readings stay inside their nominal band
    nominal = pl.DataFrame(
        [
            {
                "machine_id": m["machine_id"],
                "metric": k,
                "lo": v["nominal_min"],
                "hi": v["nominal_max"],
            }
            for m in data.machines
            for k, v in m["metrics"].items()
        ]
    )
    joined = data.readings.join(nominal, on=["machine_id", "metric"])
    outside = joined.filter(
        (pl.col("value") < pl.col("lo") - 1) | (pl.col("value") > pl.col("hi") + 1)
    )
    assert outside.height / joined.height < 0.001
