"""Each injected fault changes the signal as specified, inside its window only (no server)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from streaming.events import decode_batch
from streaming.events.model import Metric
from streaming.simulator import generate
from streaming.simulator.chaos import (
    DETECTABLE,
    FAULT_TYPES,
    VALUE_FAULTS,
    Fault,
    chaos_rates,
    reference_sigma,
)
from streaming.simulator.fleet import METRIC_INDEX, build_fleet
from streaming.simulator.generator import (
    STATUS_FAULT,
    STATUS_WARNING,
    VALID,
    FleetSimulator,
    ReadingBlock,
    iter_delivered,
    make_simulator,
)
from streaming.simulator.wire import AvroBlockEncoder

START = datetime(2026, 3, 2, 8, tzinfo=UTC)  # production hours
START_MS = int(START.timestamp() * 1000)
MIN = 60_000
MOTOR = 0  # machine 0 is a motor, machine 1 a pump, 2 a tank, 3 a PCB, 4 a sensor


def _sim(rates: dict[str, float] | None = None) -> FleetSimulator:
    return make_simulator(5, START, 1.0, 5.0, seed=3, chaos="none", rates=rates)


def _emitted(fault: Fault | None) -> ReadingBlock:
    """All messages of one hour in emission order (one block), with `fault` injected."""
    sim = _sim()
    if fault is not None:
        sim.active.append(fault)
    block, _ = sim.block(0, sim.total_ticks or 0)
    return block


def _fault(fault_type: str, metric: Metric | None, start_min: float, end_min: float,
           params: dict[str, Any], machine: int = MOTOR) -> Fault:  # fmt: skip
    ids = ["motor-0000", "pump-0001", "tank-0002", "pcb-0003", "sensor-0004"]
    start, end = START_MS + int(start_min * MIN), START_MS + int(end_min * MIN)
    return Fault(
        f"test:{fault_type}", fault_type, machine, ids[machine], metric, start, end, params
    )


def _rows(block: ReadingBlock, machine: int, metric: Metric) -> ReadingBlock:
    return block.take(
        np.nonzero((block.machine == machine) & (block.metric == METRIC_INDEX[metric]))[0]
    )


def _inside(block: ReadingBlock, fault: Fault) -> np.ndarray:
    return (block.ts >= fault.start_ms) & (block.ts < fault.end_ms)


def _assert_untouched_outside(clean: ReadingBlock, faulty: ReadingBlock, fault: Fault) -> None:
    assert len(clean) == len(faulty)
    outside = ~_inside(clean, fault) | (clean.machine != fault.machine)
    for name in ReadingBlock.COLUMNS:
        assert np.array_equal(getattr(clean, name)[outside], getattr(faulty, name)[outside]), name


CLEAN = _emitted(None)


def test_spike_adds_several_sigma_to_its_readings_only() -> None:
    fault = _fault("spike", Metric.VIBRATION, 30, 30 + 10 / 60, {"sigmas": 8, "magnitude": 2.0})
    faulty = _emitted(fault)
    _assert_untouched_outside(CLEAN, faulty, fault)
    a, b = _rows(CLEAN, MOTOR, Metric.VIBRATION), _rows(faulty, MOTOR, Metric.VIBRATION)
    inside = _inside(a, fault)
    assert inside.sum() == 2  # 10 s window, 5 s interval
    assert np.allclose(b.value[inside] - a.value[inside], 2.0)
    other = _rows(faulty, MOTOR, Metric.RPM)
    assert np.array_equal(other.value, _rows(CLEAN, MOTOR, Metric.RPM).value)


def test_drift_grows_linearly_to_its_end_offset_inside_the_window() -> None:
    fault = _fault("drift", Metric.TEMPERATURE, 10, 40, {"sigmas": 6, "offset_at_end": 6.0})
    faulty = _emitted(fault)
    _assert_untouched_outside(CLEAN, faulty, fault)
    a, b = _rows(CLEAN, MOTOR, Metric.TEMPERATURE), _rows(faulty, MOTOR, Metric.TEMPERATURE)
    inside = _inside(a, fault)
    delta = b.value[inside] - a.value[inside]
    assert np.all(np.diff(delta) > 0) and delta[0] < 0.01 and delta[-1] > 5.9


def test_stuck_sensor_repeats_one_value_for_the_whole_window() -> None:
    fault = _fault("stuck", Metric.CURRENT, 20, 32, {})
    faulty = _emitted(fault)
    _assert_untouched_outside(CLEAN, faulty, fault)
    a, b = _rows(CLEAN, MOTOR, Metric.CURRENT), _rows(faulty, MOTOR, Metric.CURRENT)
    inside = _inside(a, fault)
    assert inside.sum() == 12 * 12
    assert np.unique(b.value[inside]).size == 1 and b.value[inside][0] == a.value[inside][0]
    assert np.unique(a.value[inside]).size > 100  # the healthy signal moves


def test_stuck_value_holds_across_block_boundaries() -> None:
    sim = _sim()
    fault = _fault("stuck", Metric.CURRENT, 20, 32, {})
    sim.active.append(fault)
    blocks = [sim.block(first, 50)[0] for first in range(0, 720, 50)]
    b = _rows(ReadingBlock.concat(blocks), MOTOR, Metric.CURRENT)
    assert np.unique(b.value[_inside(b, fault)]).size == 1


def test_overheat_raises_temperature_by_its_delta_and_warns() -> None:
    fault = _fault("overheat", Metric.TEMPERATURE, 10, 30, {"delta_c": 20.0, "ramp_share": 0.25})
    faulty = _emitted(fault)
    _assert_untouched_outside(CLEAN, faulty, fault)
    a, b = _rows(CLEAN, MOTOR, Metric.TEMPERATURE), _rows(faulty, MOTOR, Metric.TEMPERATURE)
    inside = _inside(a, fault)
    delta = b.value[inside] - a.value[inside]
    assert abs(delta.max() - 20.0) < 1e-9 and delta.min() >= 0
    assert np.any(b.status[inside] == STATUS_WARNING) and not np.any(a.status == STATUS_WARNING)


def test_bearing_wear_raises_vibration_and_temperature_then_fails() -> None:
    params = {"wear_at_failure": 1.0, "heat_c": 12.0, "failure_share": 0.1}
    fault = _fault("bearing_wear", Metric.VIBRATION, 5, 55, params)
    faulty = _emitted(fault)
    before = CLEAN.ts < fault.start_ms
    assert np.array_equal(CLEAN.value[before], faulty.value[before])
    a, b = _rows(CLEAN, MOTOR, Metric.VIBRATION), _rows(faulty, MOTOR, Metric.VIBRATION)
    fail_at = fault.start_ms + 45 * MIN
    wearing = (a.ts >= fault.start_ms) & (a.ts < fail_at)
    ratio = b.value[wearing] / a.value[wearing]
    assert ratio[-20:].mean() > 1.5 > 1.05 > ratio[:20].mean()  # slowly rising
    ta, tb = _rows(CLEAN, MOTOR, Metric.TEMPERATURE), _rows(faulty, MOTOR, Metric.TEMPERATURE)
    assert (tb.value - ta.value)[wearing][-5:].mean() > 10.0
    failing = (b.ts >= fail_at) & (b.ts < fault.end_ms)
    assert np.all(b.status[failing] == STATUS_FAULT)
    assert not np.any(b.status[~failing] == STATUS_FAULT)
    rpm = _rows(faulty, MOTOR, Metric.RPM)
    assert np.all(rpm.value[(rpm.ts >= fail_at + 10_000) & (rpm.ts < fault.end_ms)] < 20)
    # after the window the vibration is back to the healthy signal (bearing replaced)
    after = a.ts >= fault.end_ms
    assert np.array_equal(a.value[after], b.value[after])


def test_packet_loss_removes_every_seq_of_its_window_and_nothing_else() -> None:
    fault = _fault("packet_loss", None, 12, 15, {"loss": 1.0})
    sim = _sim()
    sim.active.append(fault)
    faulty, _ = sim.block(0, 720)
    in_window = (CLEAN.machine == MOTOR) & _inside(CLEAN, fault)
    assert in_window.sum() == 36 * 5 == sim.lost_total
    kept = CLEAN.take(np.nonzero(~in_window)[0])
    for name in ReadingBlock.COLUMNS:
        assert np.array_equal(getattr(kept, name), getattr(faulty, name)), name
    seqs = np.sort(faulty.seq[faulty.machine == MOTOR])
    gaps = np.nonzero(np.diff(seqs) != 1)[0]
    assert len(gaps) == 1 and seqs[gaps[0] + 1] - seqs[gaps[0]] == 36 * 5 + 1


def test_clock_skew_shifts_device_time_inside_the_window_only() -> None:
    fault = _fault("clock_skew", None, 20, 30, {"offset_ms": 90_000})
    faulty = _emitted(fault)
    inside = (CLEAN.machine == MOTOR) & _inside(CLEAN, fault)
    assert np.array_equal(faulty.ts - CLEAN.ts, np.where(inside, 90_000, 0))
    assert np.array_equal(faulty.value, CLEAN.value) and np.array_equal(faulty.seq, CLEAN.seq)


def _delivered(fault: Fault, rates: dict[str, float] | None = None) -> ReadingBlock:
    sim = _sim(rates)
    sim.active.append(fault)
    return ReadingBlock.concat([b for b, _ in iter_delivered(sim, 100)])


def test_latency_delivers_late_and_out_of_order_some_after_their_hour_keeping_ts() -> None:
    fault = _fault("latency", None, 50, 58, {"delay_min_s": 60, "delay_max_s": 900})
    out = _delivered(fault)
    clean = _delivered(_fault("latency", None, 0, 0, {"delay_min_s": 0, "delay_max_s": 0}))
    # same messages, same values and event times: only the delivery moved
    key = lambda b: np.lexsort((b.seq, b.machine))  # noqa: E731
    for name in ("machine", "metric", "value", "ts", "seq", "status", "quality"):
        assert np.array_equal(getattr(out, name)[key(out)], getattr(clean, name)[key(clean)]), name
    late = (out.machine == MOTOR) & (out.ts >= fault.start_ms) & (out.ts < fault.end_ms)
    delay = out.deliver_ms[late] - out.ts[late]
    assert delay.min() >= 60_000 and delay.max() <= 900_000
    position = np.arange(len(out))
    # a late message is delivered after messages with a later event time
    first_late = position[late][0]
    assert out.ts[:first_late].max() > out.ts[first_late]
    hour_end = START_MS + 60 * MIN
    assert np.any(out.deliver_ms[late] >= hour_end)  # some arrive after their hour is over
    assert np.all(np.diff(out.deliver_ms) >= 0)  # the stream is in delivery order
    on_time = ~late
    assert np.all(out.deliver_ms[on_time] == out.ts[on_time])


def test_duplicates_resend_the_same_event_inside_the_window_only() -> None:
    fault = _fault("duplicate", None, 10, 20, {"share": 0.5, "resend_after_s": 3})
    out = _delivered(fault)
    ids = out.machine * 10**12 + out.seq
    values, counts = np.unique(ids, return_counts=True)
    dup_ids = values[counts > 1]
    assert counts.max() == 2 and 0.3 * 120 * 5 < len(dup_ids) < 0.7 * 120 * 5
    dup_rows = np.isin(ids, dup_ids)
    assert np.all(out.machine[dup_rows] == MOTOR)
    assert np.all((out.ts[dup_rows] >= fault.start_ms) & (out.ts[dup_rows] < fault.end_ms))
    assert out.duplicate.sum() == len(dup_ids)
    copies, originals = (
        out.take(np.nonzero(out.duplicate)[0]),
        out.take(np.nonzero(dup_rows & ~out.duplicate)[0]),
    )
    o = np.argsort(copies.seq), np.argsort(originals.seq)
    assert np.array_equal(copies.value[o[0]], originals.value[o[1]])
    assert np.all(copies.deliver_ms[o[0]] - originals.deliver_ms[o[1]] == 3000)


def test_malformed_messages_are_rejected_by_the_validator_and_never_counted_as_readings() -> None:
    sim = _sim({"malformed": 0.01})
    out = ReadingBlock.concat([b for b, _ in iter_delivered(sim, 100)])
    bad = out.take(np.nonzero(out.malformed != VALID)[0])
    good = out.take(np.nonzero(out.malformed == VALID)[0])
    assert len(good) == len(CLEAN) and 0.005 * len(good) < len(bad) < 0.02 * len(good)
    encoder = AvroBlockEncoder(sim.fleet)
    payloads = encoder.malformed(bad)
    decoded = decode_batch(payloads, int(out.ts.max()), max_future_ms=300_000, max_age_ms=10**12)
    assert len(decoded.valid_index) == 0 and len(decoded.rejected) == len(bad)
    expected = {0: "UNDECODABLE", 1: "OUT_OF_RANGE", 2: "UNKNOWN_ENUM"}
    for rejection in decoded.rejected:
        assert str(rejection.reason) == expected[int(bad.malformed[rejection.index])]
    assert set(bad.malformed.tolist()) == {0, 1, 2}
    good_decoded = decode_batch(encoder.encode(good), int(out.ts.max()), max_future_ms=300_000,
                                max_age_ms=10**12)  # fmt: skip
    assert len(good_decoded.rejected) == 0


def test_fault_schedule_respects_profiles_windows_and_no_overlap() -> None:
    assert all(v == 0 for v in chaos_rates("none").values())
    with pytest.raises(ValueError):
        chaos_rates("wild")
    with pytest.raises(ValueError):
        chaos_rates("default", {"meteor": 1.0})
    heavy = generate(10, START, 4.0, 10.0, seed=4, chaos="heavy")
    default = generate(10, START, 4.0, 10.0, seed=4, chaos="default")
    f = heavy.faults
    assert f.height > default.faults.height > 0
    assert set(f["fault_type"].unique()) == set(FAULT_TYPES)
    end_ms = START_MS + 4 * 3_600_000
    scheduled = f.filter(f["fault_type"] != "malformed")
    assert (scheduled["start_ms"] >= START_MS).all() and (scheduled["end_ms"] <= end_ms).all()
    assert (scheduled["end_ms"] > scheduled["start_ms"]).all()
    assert f["fault_id"].n_unique() == f.height
    for row in f.iter_rows(named=True):
        assert row["detectable"] == (row["fault_type"] in DETECTABLE)
    value = scheduled.filter(scheduled["fault_type"].is_in(list(VALUE_FAULTS))).sort("start_ms")
    for _, group in value.group_by("machine_id"):
        starts, ends = group["start_ms"].to_numpy(), group["end_ms"].to_numpy()
        assert np.all(starts[1:] >= ends[:-1])


def test_detectable_faults_are_sized_in_sigmas_of_the_metric() -> None:
    data = generate(10, START, 4.0, 10.0, seed=4, chaos="heavy")
    sim = make_simulator(10, START, 4.0, 10.0, 4, "heavy")
    machines = {m.machine_id: m for m in sim.fleet.machines}
    import json

    for row in data.faults.filter(data.faults["fault_type"].is_in(["spike", "drift"])).iter_rows(
        named=True
    ):
        params = json.loads(row["params"])
        sigma = reference_sigma(machines[row["machine_id"]], Metric(row["metric"]))
        size = abs(params.get("magnitude", params.get("offset_at_end", 0)))
        assert size >= 4.9 * sigma


def test_a_live_run_injects_its_first_faults_in_the_first_two_minutes() -> None:
    """At the expected rates the first fault of a 20-machine fleet came about 9 minutes into a
    `make run`; a live run now starts with `early_faults` faults on machines spread over the
    fleet, from 60 s on: a machine falling silent (an OFFLINE alarm), a spike and a stuck value,
    while a fast-forward history keeps its plain rates and `--chaos none` stays fault-free."""
    fleet = build_fleet(20, 7)

    def first_segment(early: int, chaos: str) -> list[Fault]:
        sim = FleetSimulator(
            fleet=fleet,
            start_ms=START_MS,
            interval_ms=360,
            rates=chaos_rates(chaos),
            end_ms=None,  # a live run is open-ended
            early_faults=early,
        )
        return sim.schedule_until(START_MS)

    def key(f: Fault) -> tuple[str, str, int]:
        return (f.fault_type, f.machine_id, f.start_ms)

    live = first_segment(3, "default")
    plain = first_segment(0, "default")
    added = [f for f in live if key(f) not in {key(p) for p in plain}]
    assert len(added) == 3
    assert [f.fault_type for f in sorted(added, key=lambda f: f.start_ms)] == [
        "packet_loss",
        "spike",
        "stuck",
    ]
    assert len({f.machine_id for f in added}) == 3
    # after the detectors' first blocks (43 s at `make run`'s rate), within two minutes
    assert all(MIN <= f.start_ms - START_MS <= 2 * MIN for f in added)
    assert all(f.detectable for f in added)
    assert all(f.metric is not None for f in added if f.fault_type != "packet_loss")
    silent = next(f for f in added if f.fault_type == "packet_loss")
    assert silent.end_ms - silent.start_ms >= MIN  # longer than the 30 s OFFLINE limit
    assert not [f for f in plain if f.detectable and f.start_ms - START_MS <= 2 * MIN]
    assert first_segment(3, "none") == []
    # the rest of the schedule is the same draw: only faults overlapping an early one go
    assert {key(f) for f in live} - {key(f) for f in added} <= {key(f) for f in plain}
