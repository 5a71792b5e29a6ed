"""Faults injected on purpose: profiles, rates, the schedule, and the ground-truth records.

A fault has a type, a machine, maybe a metric, a window [start_ms, end_ms) and parameters. The
schedule is drawn per machine and per hour of the run from a seeded generator, so it is the same
for the same seed whatever the block size or the clock. Faults that change values never overlap
on one machine (each fault's effect stays attributable); delivery faults may overlap anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streaming.events.faults import FaultRecord
from streaming.events.model import MachineType, Metric
from streaming.simulator.fleet import NOISE_SIGMA, Fleet, Machine
from streaming.simulator.randomness import rng_for

FAULT_TYPES: tuple[str, ...] = (
    "spike",
    "drift",
    "stuck",
    "bearing_wear",
    "overheat",
    "packet_loss",
    "latency",
    "duplicate",
    "clock_skew",
    "malformed",
)
DETECTABLE = frozenset({"spike", "drift", "stuck", "bearing_wear", "overheat", "packet_loss"})
VALUE_FAULTS = frozenset(
    {"spike", "drift", "stuck", "bearing_wear", "overheat", "packet_loss", "clock_skew"}
)
MALFORMED_KINDS: tuple[str, ...] = ("undecodable", "out_of_range", "unknown_enum")
SCHEDULED_TYPES = tuple(t for t in FAULT_TYPES if t != "malformed")

# Expected faults per machine and hour; malformed is a share of readings.
PROFILES: dict[str, dict[str, float]] = {
    "none": dict.fromkeys(FAULT_TYPES, 0.0),
    "default": {
        "spike": 0.6,
        "drift": 0.08,
        "stuck": 0.1,
        "bearing_wear": 0.03,
        "overheat": 0.06,
        "packet_loss": 0.1,
        "latency": 0.1,
        "duplicate": 0.1,
        "clock_skew": 0.05,
        "malformed": 0.0005,
    },
    "heavy": {
        "spike": 3.0,
        "drift": 0.4,
        "stuck": 0.5,
        "bearing_wear": 0.15,
        "overheat": 0.3,
        "packet_loss": 0.5,
        "latency": 0.5,
        "duplicate": 0.5,
        "clock_skew": 0.25,
        "malformed": 0.005,
    },
}

MINUTE_MS = 60_000
# Window length ranges in minutes (spikes: in readings, see `schedule_segment`).
DURATION_MIN: dict[str, tuple[float, float]] = {
    "drift": (20, 60),
    "stuck": (5, 20),
    "bearing_wear": (30, 90),
    "overheat": (10, 30),
    "packet_loss": (1, 5),
    "latency": (2, 10),
    "duplicate": (2, 10),
    "clock_skew": (5, 20),
}
# Share of a bearing-wear window at its end during which the machine has failed (tripped).
FAILURE_SHARE = 0.1
# Early faults of a live run: at the expected rates the first fault of a 20-machine fleet comes
# minutes in, so a new user watched a platform with nothing to show. These start from
# EARLY_AFTER_MS on (once the detectors have their first 4 blocks of every series, 43 s at
# `make run`'s rate), EARLY_SPACING_MS apart: first a machine that goes silent for a minute or
# more (packet loss: the state writer opens an OFFLINE alarm after OT_OFFLINE_AFTER_SECONDS, so
# the alarm panel has something to acknowledge within two minutes), then a spike and a stuck
# value, kinds the detectors judge from the first minutes (a level change needs a learnt
# baseline first).
EARLY_TYPES = ("packet_loss", "spike", "stuck")
EARLY_AFTER_MS = 60_000
EARLY_SPACING_MS = 15_000


def chaos_rates(profile: str, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The per-fault rates of a named profile with per-fault overrides applied."""
    if profile not in PROFILES:
        raise ValueError(f"unknown chaos profile {profile!r}; known: {', '.join(PROFILES)}")
    rates = dict(PROFILES[profile])
    for name, rate in (overrides or {}).items():
        if name not in rates:
            raise ValueError(f"unknown fault type {name!r}; known: {', '.join(FAULT_TYPES)}")
        if not rate >= 0:
            raise ValueError(f"rate of {name} must be >= 0, got {rate}")
        rates[name] = float(rate)
    if rates["malformed"] > 0.5:
        raise ValueError("malformed is a share of readings and must be at most 0.5")
    return rates


def reference_sigma(machine: Machine, metric: Metric) -> float:
    """The scale a fault's size is expressed in: the larger of the sensor noise and 2 % of the
    machine's nominal band (a detector sees the slow variation too, not just the noise)."""
    lo, hi = machine.nominal[metric]
    return max(NOISE_SIGMA[metric], 0.02 * (hi - lo))


@dataclass
class Fault:
    fault_id: str
    fault_type: str
    machine: int  # index in the fleet
    machine_id: str
    metric: Metric | None
    start_ms: int
    end_ms: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def detectable(self) -> bool:
        return self.fault_type in DETECTABLE

    def ground_truth(self) -> FaultRecord:
        """The fault as the sim.faults contract records it."""
        return FaultRecord(
            fault_id=self.fault_id,
            fault_type=self.fault_type,
            machine_id=self.machine_id,
            metric=None if self.metric is None else str(self.metric),
            start_ms=self.start_ms,
            end_ms=self.end_ms,
            params=self.params,
            detectable=self.detectable,
        )

    def record(self) -> dict[str, Any]:
        """The ground-truth record published on the faults topic."""
        return self.ground_truth().to_json()


def _params(
    fault_type: str, rng: np.random.Generator, machine: Machine, metric: Metric | None
) -> dict[str, Any]:
    if fault_type == "spike":
        assert metric is not None
        k = float(rng.uniform(6, 10))
        return {"sigmas": round(k, 2), "magnitude": round(k * reference_sigma(machine, metric), 4)}
    if fault_type == "drift":
        assert metric is not None
        k = float(rng.uniform(5, 8)) * float(rng.choice([-1.0, 1.0]))
        return {
            "sigmas": round(k, 2),
            "offset_at_end": round(k * reference_sigma(machine, metric), 4),
        }
    if fault_type == "stuck":
        return {}
    if fault_type == "bearing_wear":
        return {
            "wear_at_failure": round(float(rng.uniform(0.8, 1.5)), 3),
            "heat_c": 12.0,
            "failure_share": FAILURE_SHARE,
        }
    if fault_type == "overheat":
        return {"delta_c": round(float(rng.uniform(12, 25)), 2), "ramp_share": 0.25}
    if fault_type == "packet_loss":
        return {"loss": 1.0}
    if fault_type == "latency":
        return {
            "delay_min_s": round(float(rng.uniform(30, 120)), 1),
            "delay_max_s": round(float(rng.uniform(300, 1200)), 1),
        }
    if fault_type == "duplicate":
        return {"share": 0.5, "resend_after_s": round(float(rng.uniform(1, 10)), 1)}
    if fault_type == "clock_skew":
        sign = float(rng.choice([-1.0, 1.0]))
        return {"offset_ms": int(sign * rng.uniform(30, 240) * 1000)}
    raise ValueError(fault_type)


def _eligible(fault_type: str, machine: Machine) -> bool:
    if fault_type == "bearing_wear":
        return machine.machine_type in (MachineType.MOTOR, MachineType.PUMP)
    return True


def _pick_metric(fault_type: str, rng: np.random.Generator, machine: Machine) -> Metric | None:
    if fault_type in ("spike", "drift", "stuck"):
        return machine.metrics[int(rng.integers(len(machine.metrics)))]
    if fault_type == "overheat":
        return Metric.TEMPERATURE
    if fault_type == "bearing_wear":
        return Metric.VIBRATION
    return None


@dataclass
class Scheduler:
    """Draws the fault schedule one segment (an hour of the run) at a time."""

    fleet: Fleet
    rates: dict[str, float]
    start_ms: int
    end_ms: int | None  # None: open-ended real-time run
    interval_ms: int
    segment_ms: int = 3_600_000
    early_faults: int = 0  # faults in the run's first two minutes (a live run's showcase)
    busy_until: dict[int, int] = field(default_factory=dict)

    def segment_count(self) -> int | None:
        if self.end_ms is None:
            return None
        return max(1, -(-(self.end_ms - self.start_ms) // self.segment_ms))

    def schedule_segment(self, segment: int) -> list[Fault]:
        """Faults whose window starts in segment `segment`, sorted by start."""
        seg_start = self.start_ms + segment * self.segment_ms
        seg_end = seg_start + self.segment_ms
        if self.end_ms is not None:
            seg_end = min(seg_end, self.end_ms)
        hours = (seg_end - seg_start) / 3_600_000
        faults: list[Fault] = []
        for machine in self.fleet.machines:
            rng = rng_for(self.fleet.seed, 0xFA017, machine.index, segment)
            drawn: list[Fault] = self._early(machine) if segment == 0 else []
            for fault_type in SCHEDULED_TYPES:
                rate = self.rates[fault_type]
                count = int(rng.poisson(rate * hours)) if rate > 0 else 0
                for _ in range(count):
                    fault = self._draw(fault_type, rng, machine, seg_start, seg_end)
                    if fault is not None:
                        drawn.append(fault)
            drawn.sort(key=lambda f: (f.start_ms, f.fault_type))  # early ones first: kept
            for n, fault in enumerate(drawn):
                if fault.fault_type in VALUE_FAULTS:
                    if fault.start_ms < self.busy_until.get(machine.index, 0):
                        continue
                    self.busy_until[machine.index] = fault.end_ms
                fault.fault_id = f"{machine.machine_id}:{segment}:{n}:{fault.fault_type}"
                faults.append(fault)
        faults.sort(key=lambda f: (f.start_ms, f.machine))
        return faults

    def _early(self, machine: Machine) -> list[Fault]:
        """The early fault of `machine` when it is one of the `early_faults` machines spread
        over the fleet (the k-th from EARLY_AFTER_MS + k x EARLY_SPACING_MS on), of a type the
        profile injects at all (`--chaos none` stays fault-free)."""
        size = len(self.fleet.machines)
        count = min(self.early_faults, size)
        chosen = [k * size // count for k in range(count)] if count else []
        if machine.index not in chosen:
            return []
        k = chosen.index(machine.index)
        fault_type = EARLY_TYPES[k % len(EARLY_TYPES)]
        if not self.rates.get(fault_type, 0.0) > 0:
            return []
        rng = rng_for(self.fleet.seed, 0xEA71, machine.index)
        metric = _pick_metric(fault_type, rng, machine)
        start = self.start_ms + EARLY_AFTER_MS + k * EARLY_SPACING_MS
        start += -(start - self.start_ms) % self.interval_ms  # on the tick grid
        if fault_type == "spike":
            duration = 2 * self.interval_ms
        else:
            duration = max(
                int(rng.uniform(*DURATION_MIN[fault_type]) * MINUTE_MS), 2 * self.interval_ms
            )
        if self.end_ms is not None:  # a bounded run: the window ends with it
            duration = min(duration, self.end_ms - start)
            if duration < 2 * self.interval_ms:
                return []
        params = _params(fault_type, rng, machine, metric)
        return [
            Fault(
                "",
                fault_type,
                machine.index,
                machine.machine_id,
                metric,
                start,
                start + duration,
                params,
            )
        ]

    def _draw(
        self,
        fault_type: str,
        rng: np.random.Generator,
        machine: Machine,
        seg_start: int,
        seg_end: int,
    ) -> Fault | None:
        metric = _pick_metric(fault_type, rng, machine)
        params = _params(fault_type, rng, machine, metric)
        start = seg_start + int(rng.uniform(0, seg_end - seg_start))
        start -= (start - self.start_ms) % self.interval_ms  # on the tick grid
        if fault_type == "spike":
            duration = int(rng.integers(1, 4)) * self.interval_ms
        else:
            lo, hi = DURATION_MIN[fault_type]
            duration = int(rng.uniform(lo, hi) * MINUTE_MS)
            duration = max(duration, 2 * self.interval_ms)
        if not _eligible(fault_type, machine):
            return None
        if self.end_ms is not None:
            duration = min(duration, self.end_ms - self.start_ms)
            start = max(self.start_ms, min(start, self.end_ms - duration))
            start -= (start - self.start_ms) % self.interval_ms
        return Fault(
            "",
            fault_type,
            machine.index,
            machine.machine_id,
            metric,
            start,
            start + duration,
            params,
        )
