"""The fleet simulator's engine: readings for the whole fleet, one block of ticks at a time.

`FleetSimulator.block()` returns a `ReadingBlock`: flat numpy columns of every message the
devices send in that block (valid readings, resent duplicates and malformed copies), each with
the time it is *delivered* (late for the latency fault). `DeliveryQueue` turns blocks into the
delivery order. `generate()` is the pure, Kafka-free entry point used to score detectors offline.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from streaming.events.faults import faults_frame as ground_truth_faults
from streaming.events.model import RANGES, UNITS, Metric, event_id_expr
from streaming.simulator.chaos import (
    MALFORMED_KINDS,
    Fault,
    Scheduler,
    chaos_rates,
)
from streaming.simulator.fleet import (
    MAX_METRICS,
    METRIC_ORDER,
    NOISE_SIGMA,
    Fleet,
    build_fleet,
)
from streaming.simulator.physics import PhysicsState, simulate
from streaming.simulator.randomness import normal, uniform

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

SALT_NOISE, SALT_DELAY, SALT_DUP, SALT_MALFORMED, SALT_MALFORMED_KIND = 101, 102, 103, 104, 105
STATUS_OK, STATUS_WARNING, STATUS_FAULT, STATUS_MAINTENANCE = 0, 1, 2, 3
QUALITY_GOOD, QUALITY_UNCERTAIN, QUALITY_BAD = 0, 1, 2
QUALITY_NAMES = ("GOOD", "UNCERTAIN", "BAD")
VALID = -1  # `malformed` column value of a message that is a proper reading

_SIGMA = np.array([NOISE_SIGMA[m] for m in METRIC_ORDER])
_RANGE_LO = np.array([RANGES[m][0] for m in METRIC_ORDER])
_RANGE_HI = np.array([RANGES[m][1] for m in METRIC_ORDER])


@dataclass
class ReadingBlock:
    """Messages of one block, as parallel columns (one row per message)."""

    machine: I64  # index in the fleet
    metric: I64  # index in METRIC_ORDER (the Avro enum index)
    value: F64
    ts: I64  # device event time, epoch ms (clock skew included)
    seq: I64
    status: I64
    quality: I64
    deliver_ms: I64  # when the message leaves the device (latency and resends included)
    duplicate: npt.NDArray[np.bool_]  # a resent copy of an earlier message
    malformed: I64  # VALID, or index into MALFORMED_KINDS
    lost: int = 0  # readings dropped by packet loss in this block (their seq never appear)

    def __len__(self) -> int:
        return len(self.value)

    def take(self, index: npt.NDArray[np.int64] | npt.NDArray[np.bool_]) -> ReadingBlock:
        return ReadingBlock(**{name: getattr(self, name)[index] for name in ReadingBlock.COLUMNS})

    COLUMNS = (
        "machine", "metric", "value", "ts", "seq", "status", "quality", "deliver_ms",
        "duplicate", "malformed",
    )  # fmt: skip

    @staticmethod
    def concat(blocks: list[ReadingBlock]) -> ReadingBlock:
        if len(blocks) == 1:
            return blocks[0]
        cols = {
            name: np.concatenate([getattr(b, name) for b in blocks])
            for name in ReadingBlock.COLUMNS
        }
        return ReadingBlock(**cols, lost=sum(b.lost for b in blocks))

    @staticmethod
    def empty() -> ReadingBlock:
        i = np.zeros(0, dtype=np.int64)
        return ReadingBlock(i, i, np.zeros(0), i, i, i, i, i, np.zeros(0, dtype=bool), i)


def _window_mask(ts: I64, fault: Fault) -> npt.NDArray[np.bool_]:
    return (ts >= fault.start_ms) & (ts < fault.end_ms)


@dataclass
class FleetSimulator:
    """Generates the fleet's messages block by block; same seed and fleet -> same messages."""

    fleet: Fleet
    start_ms: int
    interval_ms: int
    rates: dict[str, float]
    end_ms: int | None = None
    state: PhysicsState = field(default_factory=PhysicsState)
    active: list[Fault] = field(default_factory=list)
    stuck_values: dict[str, float] = field(default_factory=dict)
    next_segment: int = 0
    scheduler: Scheduler | None = None
    lost_total: int = 0  # readings dropped by packet loss so far
    early_faults: int = 0  # faults in the first two minutes (a live run), see chaos.EARLY_TYPES

    def __post_init__(self) -> None:
        if self.interval_ms < 1:
            raise ValueError("interval must be at least 1 ms")
        self.scheduler = Scheduler(
            self.fleet,
            self.rates,
            self.start_ms,
            self.end_ms,
            self.interval_ms,
            early_faults=self.early_faults,
        )

    @property
    def total_ticks(self) -> int | None:
        if self.end_ms is None:
            return None
        return max(0, -(-(self.end_ms - self.start_ms) // self.interval_ms))

    def schedule_until(self, ts_ms: int) -> list[Fault]:
        """Schedule every segment that starts by `ts_ms` (all of them for a bounded run, since
        a fault near the end may be moved earlier to fit); returns the new faults."""
        assert self.scheduler is not None
        count = self.scheduler.segment_count()
        new: list[Fault] = []
        while True:
            if count is not None:
                if self.next_segment >= count:
                    break
            elif self.start_ms + self.next_segment * self.scheduler.segment_ms > ts_ms:
                break
            new.extend(self.scheduler.schedule_segment(self.next_segment))
            self.next_segment += 1
        self.active.extend(new)
        return new

    def block(self, first_tick: int, n_ticks: int) -> tuple[ReadingBlock, list[Fault]]:
        """Messages of ticks [first_tick, first_tick + n_ticks) and the faults newly scheduled."""
        fleet = self.fleet
        ts = self.start_ms + (first_tick + np.arange(n_ticks, dtype=np.int64)) * self.interval_ms
        new_faults = self.schedule_until(int(ts[-1]))
        block_start, block_end = int(ts[0]), int(ts[-1]) + 1
        here = [f for f in self.active if f.start_ms < block_end and f.end_ms > block_start]
        self.active = [f for f in self.active if f.end_ms > block_start]

        shape = (n_ticks, fleet.size)
        tripped = np.zeros(shape, dtype=bool)
        wear_extra = np.zeros(shape)
        warning = np.zeros(shape, dtype=bool)
        heat_extra = np.zeros(shape)
        for f in here:
            if f.fault_type != "bearing_wear":
                continue
            fail_at = f.start_ms + int((f.end_ms - f.start_ms) * (1 - f.params["failure_share"]))
            progress = np.clip((ts - f.start_ms) / max(1, fail_at - f.start_ms), 0.0, 1.0) ** 2
            wearing = (ts >= f.start_ms) & (ts < fail_at)
            failing = (ts >= fail_at) & (ts < f.end_ms)
            wear_extra[:, f.machine] += np.where(wearing, f.params["wear_at_failure"] * progress, 0)
            heat_extra[:, f.machine] += np.where(wearing, f.params["heat_c"] * progress, 0.0)
            warning[:, f.machine] |= wearing & (progress > 0.5)
            tripped[:, f.machine] |= failing

        phys = simulate(
            fleet, ts, self.interval_ms / 1000.0, self.state, tripped=tripped, wear_extra=wear_extra
        )
        phys.channels[Metric.TEMPERATURE] = phys.channels[Metric.TEMPERATURE] + heat_extra

        # (ticks, machines, metric slots) -> the value of each slot's metric
        codes = fleet.metric_codes  # (M, K), -1 = unused slot
        stacked = np.stack([phys.channels[m] for m in METRIC_ORDER])  # (C, T, M)
        safe = np.where(codes < 0, 0, codes)
        values = stacked[safe[None, :, :], np.arange(n_ticks)[:, None, None],
                         np.arange(fleet.size)[None, :, None]]  # fmt: skip
        abs_tick = ts // self.interval_ms
        k_per = fleet.n_metrics
        seq = abs_tick[:, None, None] * k_per[None, :, None] + np.arange(MAX_METRICS)[None, None, :]
        machines3 = np.broadcast_to(np.arange(fleet.size)[None, :, None], values.shape)
        values = values + normal(fleet.seed, SALT_NOISE, machines3, seq) * _SIGMA[safe][None, :, :]

        status = np.where(phys.planned_stop, STATUS_MAINTENANCE, STATUS_OK)
        lost = np.zeros(shape, dtype=bool)
        skew = np.zeros(shape, dtype=np.int64)
        for f in here:
            m = f.machine
            in_win = _window_mask(ts, f)
            if not in_win.any():
                continue
            slot = None if f.metric is None else fleet.machines[m].metrics.index(f.metric)
            if f.fault_type == "spike":
                values[in_win, m, slot] += f.params["magnitude"]
            elif f.fault_type == "drift":
                frac = (ts[in_win] - f.start_ms) / (f.end_ms - f.start_ms)
                values[in_win, m, slot] += f.params["offset_at_end"] * frac
            elif f.fault_type == "stuck":
                if f.fault_id not in self.stuck_values:
                    first = int(np.argmax(in_win))
                    self.stuck_values[f.fault_id] = float(values[first, m, slot])
                values[in_win, m, slot] = self.stuck_values[f.fault_id]
            elif f.fault_type == "overheat":
                d, r = f.params["delta_c"], f.params["ramp_share"]
                pos = (ts[in_win] - f.start_ms) / (f.end_ms - f.start_ms)
                shape_ = np.clip(np.minimum(pos, 1.0 - pos) / r, 0.0, 1.0)
                values[in_win, m, slot] += d * shape_
                warning[in_win, m] |= shape_ > 0.5
            elif f.fault_type == "packet_loss":
                lost[in_win, m] = True
            elif f.fault_type == "clock_skew":
                skew[in_win, m] = f.params["offset_ms"]
            elif f.fault_type == "bearing_wear":
                fail_at = f.start_ms + int(
                    (f.end_ms - f.start_ms) * (1 - f.params["failure_share"])
                )
                status[(ts >= fail_at) & in_win, m] = STATUS_FAULT
        status = np.where(warning & (status == STATUS_OK), STATUS_WARNING, status)
        quality = np.where(status == STATUS_FAULT, QUALITY_UNCERTAIN, QUALITY_GOOD)
        values = np.clip(values, _RANGE_LO[safe][None], _RANGE_HI[safe][None])

        # Flatten in emission order (tick, machine, metric slot); drop unused slots and lost packets
        slot_used = codes >= 0
        keep3 = slot_used[None, :, :] & ~lost[:, :, None]
        n_lost = int((slot_used[None, :, :] & lost[:, :, None]).sum())
        sel = np.nonzero(keep3.reshape(-1))[0]
        tm = sel // MAX_METRICS  # flat (tick, machine) index
        tick_i = tm // fleet.size
        mach = tm % fleet.size
        true_ts = ts[tick_i]
        seq_f = seq.reshape(-1)[sel]
        block = ReadingBlock(
            machine=mach,
            metric=safe.reshape(-1)[sel % (fleet.size * MAX_METRICS)],
            value=values.reshape(-1)[sel],
            ts=true_ts + skew.reshape(-1)[tm],
            seq=seq_f,
            status=status.reshape(-1)[tm].astype(np.int64),
            quality=quality.reshape(-1)[tm].astype(np.int64),
            deliver_ms=true_ts.copy(),
            duplicate=np.zeros(len(sel), dtype=bool),
            malformed=np.full(len(sel), VALID, dtype=np.int64),
            lost=n_lost,
        )
        self.lost_total += n_lost
        return self._delivery_faults(block, here), new_faults

    def _delivery_faults(self, block: ReadingBlock, here: list[Fault]) -> ReadingBlock:
        """Latency (late delivery), duplicates (resent copies) and malformed copies."""
        seed = self.fleet.seed
        true_ts = block.deliver_ms.copy()
        extra: list[ReadingBlock] = []
        for f in here:
            if f.fault_type not in ("latency", "duplicate"):
                continue
            rows = np.nonzero((block.machine == f.machine) & (true_ts >= f.start_ms)
                              & (true_ts < f.end_ms))[0]  # fmt: skip
            if not len(rows):
                continue
            if f.fault_type == "latency":
                lo, hi = f.params["delay_min_s"], f.params["delay_max_s"]
                u = uniform(seed, SALT_DELAY, f.machine, block.seq[rows])
                block.deliver_ms[rows] += ((lo + (hi - lo) * u) * 1000).astype(np.int64)
            else:
                u = uniform(seed, SALT_DUP, f.machine, block.seq[rows])
                copies = block.take(rows[u < f.params["share"]])
                copies.deliver_ms = copies.deliver_ms + int(f.params["resend_after_s"] * 1000)
                copies.duplicate[:] = True
                extra.append(copies)
        share = self.rates.get("malformed", 0.0)
        if share > 0:
            u = uniform(seed, SALT_MALFORMED, block.machine, block.seq)
            rows = np.nonzero(u < share)[0]
            if len(rows):
                bad = block.take(rows)
                kind = uniform(seed, SALT_MALFORMED_KIND, bad.machine, bad.seq)
                bad.malformed = (kind * len(MALFORMED_KINDS)).astype(np.int64)
                extra.append(bad)
        if not extra:
            return block
        lost = block.lost
        out = ReadingBlock.concat([block, *extra])
        out.lost = lost
        return out


@dataclass
class DeliveryQueue:
    """Holds messages until their delivery time: releases, in delivery order, everything due by
    `now_ms` (in fast-forward, `now` is the newest event time generated so far)."""

    held: ReadingBlock = field(default_factory=ReadingBlock.empty)

    def push(self, block: ReadingBlock) -> None:
        self.held = ReadingBlock.concat([self.held, block]) if len(self.held) else block

    def release(self, now_ms: int | None) -> ReadingBlock:
        held = self.held
        due = np.ones(len(held), dtype=bool) if now_ms is None else held.deliver_ms <= now_ms
        out = held.take(np.nonzero(due)[0])
        self.held = held.take(np.nonzero(~due)[0])
        order = np.argsort(out.deliver_ms, kind="stable")
        return out.take(order)


def malformed_fault(fleet: Fleet, block: ReadingBlock, row: int) -> Fault:
    """The ground-truth record of one malformed message (one per message)."""
    machine = fleet.machines[int(block.machine[row])]
    kind = MALFORMED_KINDS[int(block.malformed[row])]
    ts = int(block.ts[row])
    return Fault(
        fault_id=f"{machine.machine_id}:{int(block.seq[row])}:malformed",
        fault_type="malformed",
        machine=machine.index,
        machine_id=machine.machine_id,
        metric=METRIC_ORDER[int(block.metric[row])],
        start_ms=ts,
        end_ms=ts + 1,
        params={"kind": kind, "seq": int(block.seq[row])},
    )


def iter_delivered(
    sim: FleetSimulator, block_ticks: int
) -> Iterator[tuple[ReadingBlock, list[Fault]]]:
    """A bounded run as delivered blocks (delivery order) with the faults scheduled meanwhile."""
    total = sim.total_ticks
    assert total is not None, "iter_delivered needs a bounded run"
    queue = DeliveryQueue()
    for first in range(0, total, block_ticks):
        n = min(block_ticks, total - first)
        block, faults = sim.block(first, n)
        queue.push(block)
        now = sim.start_ms + (first + n - 1) * sim.interval_ms
        yield queue.release(now), faults
    yield queue.release(None), []


def align_ms(ts_ms: int, interval_ms: int) -> int:
    """The first tick of the interval grid at or after `ts_ms` (so seq = tick number)."""
    return -(-ts_ms // interval_ms) * interval_ms


def to_epoch_ms(start: datetime) -> int:
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return int(start.timestamp() * 1000)


@dataclass
class SimulatedData:
    """Everything a simulated run emits, without Kafka (see docs/simulator.md)."""

    readings: pl.DataFrame
    faults: pl.DataFrame
    machines: list[dict[str, Any]]
    malformed: pl.DataFrame  # one row per malformed message (never among the readings)
    lost: int  # readings dropped by packet loss


def faults_frame(faults: list[Fault]) -> pl.DataFrame:
    return ground_truth_faults([f.ground_truth() for f in faults])


def readings_frame(fleet: Fleet, block: ReadingBlock) -> pl.DataFrame:
    """Contract columns (event_id ... quality) of the given messages."""
    ids = pl.Series([m.machine_id for m in fleet.machines], dtype=pl.String)
    types = pl.Series([str(m.machine_type) for m in fleet.machines], dtype=pl.String)
    lines = pl.Series([m.line_id for m in fleet.machines], dtype=pl.String)
    metrics = pl.Series([str(m) for m in METRIC_ORDER], dtype=pl.String)
    units = pl.Series([UNITS[m] for m in METRIC_ORDER], dtype=pl.String)
    quality = pl.Series(list(QUALITY_NAMES), dtype=pl.String)
    mach = pl.Series(block.machine, dtype=pl.UInt32)
    met = pl.Series(block.metric, dtype=pl.UInt32)
    machine_id = ids.gather(mach)
    seq = pl.Series("seq", block.seq, dtype=pl.Int64)
    frame = pl.DataFrame(
        {
            "machine_id": machine_id,
            "machine_type": types.gather(mach),
            "line_id": lines.gather(mach),
            "metric": metrics.gather(met),
            "unit": units.gather(met),
            "value": pl.Series(block.value, dtype=pl.Float64),
            "ts": pl.Series(block.ts, dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            "seq": seq,
            "status_code": pl.Series(block.status, dtype=pl.Int32),
            "quality": quality.gather(pl.Series(block.quality, dtype=pl.UInt32)),
        }
    )
    return frame.select(event_id_expr(), pl.all())


def make_simulator(
    fleet_size: int,
    start: datetime,
    hours: float,
    interval_s: float,
    seed: int,
    chaos: str,
    rates: Mapping[str, float] | None = None,
    early_faults: int = 0,
) -> FleetSimulator:
    interval_ms = max(1, round(interval_s * 1000))
    start_ms = align_ms(to_epoch_ms(start), interval_ms)
    fleet = build_fleet(fleet_size, seed)
    return FleetSimulator(
        fleet=fleet,
        start_ms=start_ms,
        interval_ms=interval_ms,
        rates=chaos_rates(chaos, rates),
        end_ms=start_ms + round(hours * 3_600_000),
        early_faults=early_faults,
    )


def generate(
    fleet_size: int,
    start: datetime,
    hours: float,
    interval_s: float,
    seed: int,
    chaos: str,
    rates: Mapping[str, float] | None = None,
    early_faults: int = 0,
) -> SimulatedData:
    """A fast-forward run without Kafka: readings in delivery order (duplicates included, lost
    and malformed messages excluded), the ground-truth faults and the machine records.
    `early_faults`: the first minutes of a live run (see `chaos.EARLY_TYPES`)."""
    sim = make_simulator(fleet_size, start, hours, interval_s, seed, chaos, rates, early_faults)
    block_ticks = max(1, 200_000 // max(1, int(sim.fleet.n_metrics.sum())))
    blocks: list[ReadingBlock] = []
    faults: list[Fault] = []
    for block, new in iter_delivered(sim, block_ticks):
        faults.extend(new)
        if len(block):
            blocks.append(block)
    allm = ReadingBlock.concat(blocks) if blocks else ReadingBlock.empty()
    bad_rows = np.nonzero(allm.malformed != VALID)[0]
    faults.extend(malformed_fault(sim.fleet, allm, int(r)) for r in bad_rows)
    good = allm.take(np.nonzero(allm.malformed == VALID)[0])
    bad = allm.take(bad_rows)
    malformed = readings_frame(sim.fleet, bad).select("event_id", "machine_id", "metric", "ts")
    malformed = malformed.with_columns(
        kind=pl.Series([MALFORMED_KINDS[k] for k in bad.malformed], dtype=pl.String)
    )
    return SimulatedData(
        readings=readings_frame(sim.fleet, good),
        faults=faults_frame(sorted(faults, key=lambda f: (f.start_ms, f.fault_id))),
        machines=sim.fleet.records(),
        malformed=malformed,
        lost=sim.lost_total,
    )


__all__ = ["SimulatedData", "generate"]
