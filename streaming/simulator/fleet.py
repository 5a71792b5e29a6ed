"""The fleet: which machines exist, what each type measures, and each machine's constants.

A fleet is a pure function of (size, seed): machine types cycle MOTOR, PUMP, TANK, PCB, SENSOR so
every fleet of five or more has each type; eight machines share a production line; the physical
constants of each machine are drawn from its own seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streaming.events.faults import MachineRecord
from streaming.events.model import UNITS, MachineType, Metric
from streaming.simulator.randomness import rng_for

TYPE_ORDER: tuple[MachineType, ...] = (
    MachineType.MOTOR,
    MachineType.PUMP,
    MachineType.TANK,
    MachineType.PCB,
    MachineType.SENSOR,
)
MACHINES_PER_LINE = 8

# What each machine type emits, in emission order.
TYPE_METRICS: dict[MachineType, tuple[Metric, ...]] = {
    MachineType.MOTOR: (
        Metric.TEMPERATURE,
        Metric.VIBRATION,
        Metric.RPM,
        Metric.CURRENT,
        Metric.ENERGY,
    ),
    MachineType.PUMP: (
        Metric.FLOW,
        Metric.PRESSURE,
        Metric.VIBRATION,
        Metric.TEMPERATURE,
        Metric.ENERGY,
    ),
    MachineType.TANK: (Metric.LEVEL, Metric.PRESSURE, Metric.TEMPERATURE),
    MachineType.PCB: (Metric.TEMPERATURE, Metric.VOLTAGE, Metric.CURRENT),
    MachineType.SENSOR: (Metric.TEMPERATURE, Metric.HUMIDITY),
}
MAX_METRICS = max(len(m) for m in TYPE_METRICS.values())

METRIC_ORDER: tuple[Metric, ...] = tuple(Metric)  # Avro enum order
TYPE_INDEX = {t: i for i, t in enumerate(MachineType)}  # Avro enum order
METRIC_INDEX = {m: i for i, m in enumerate(METRIC_ORDER)}

# Sensor noise (one standard deviation) per metric, in the metric's unit.
NOISE_SIGMA: dict[Metric, float] = {
    Metric.TEMPERATURE: 0.15,
    Metric.VIBRATION: 0.04,
    Metric.PRESSURE: 0.01,
    Metric.ENERGY: 0.08,
    Metric.RPM: 2.0,
    Metric.VOLTAGE: 0.03,
    Metric.CURRENT: 0.1,
    Metric.LEVEL: 0.15,
    Metric.FLOW: 1.0,
    Metric.HUMIDITY: 0.4,
}

# Three-phase 400 V motor with power factor 0.85: P[kW] = sqrt(3) * 400 * 0.85 / 1000 * I[A].
KW_PER_AMP = float(np.sqrt(3.0) * 400.0 * 0.85 / 1000.0)
# One metre of water column in bar.
BAR_PER_METRE = 0.0981
# Ambient band the physics stays in (daily swing, day-to-day and per-line offsets).
AMBIENT_MIN, AMBIENT_MAX = 14.0, 30.0


@dataclass(frozen=True)
class Machine:
    index: int
    machine_id: str
    machine_type: MachineType
    line_id: str
    metrics: tuple[Metric, ...]
    nominal: dict[Metric, tuple[float, float]]

    def record(self) -> dict[str, Any]:
        """The machine metadata record published on the ground-truth topic."""
        return MachineRecord(
            machine_id=self.machine_id,
            machine_type=str(self.machine_type),
            line_id=self.line_id,
            metrics={
                str(m): {
                    "unit": UNITS[m],
                    "nominal_min": round(self.nominal[m][0], 3),
                    "nominal_max": round(self.nominal[m][1], 3),
                }
                for m in self.metrics
            },
        ).to_json()


@dataclass(frozen=True)
class Fleet:
    """Machines plus their physical constants as arrays indexed by machine (vectorised physics)."""

    seed: int
    machines: tuple[Machine, ...]
    params: dict[str, npt.NDArray[np.float64]]
    type_idx: npt.NDArray[np.int64]  # index into TYPE_ORDER
    line_idx: npt.NDArray[np.int64]
    metric_codes: npt.NDArray[np.int64]  # (machines, MAX_METRICS), Avro metric index, -1 = none
    n_metrics: npt.NDArray[np.int64]  # metrics per machine

    @property
    def size(self) -> int:
        return len(self.machines)

    def is_type(self, machine_type: MachineType) -> npt.NDArray[np.bool_]:
        return np.asarray(self.type_idx == TYPE_ORDER.index(machine_type))

    def records(self) -> list[dict[str, Any]]:
        return [m.record() for m in self.machines]


def _constants(rng: np.random.Generator, machine_type: MachineType) -> dict[str, float]:
    u = rng.uniform
    return {
        "tau_s": {
            MachineType.MOTOR: u(900, 1500),
            MachineType.PUMP: u(1200, 1800),
            MachineType.TANK: u(2400, 3600),
            MachineType.PCB: u(240, 480),
            MachineType.SENSOR: u(300, 600),
        }[machine_type],
        "heat_rise": {
            MachineType.MOTOR: u(30, 45),
            MachineType.PUMP: u(15, 25),
            MachineType.TANK: u(8, 15),
            MachineType.PCB: u(35, 55),
            MachineType.SENSOR: u(0.5, 1.5),
        }[machine_type],
        "rpm_nom": float(rng.choice([1450.0, 2900.0])),
        "amps_nom": u(10, 40),
        "vib_nom": u(1.5, 3.0),
        "wear0": u(0.0, 0.3),
        "flow_nom": u(200, 600),
        "pump_bar": u(3, 8),
        "pump_kw": u(5, 30),
        "tank_height_m": u(2, 6),
        "tank_setpoint": u(50, 70),
        "tank_demand": u(0.8, 1.6),  # outflow at full load, % of volume per minute
        "tank_gain": u(0.04, 0.08),  # level controller, per minute
        "pcb_volts": float(rng.choice([12.0, 24.0, 48.0])),
        "pcb_ohm": u(0.02, 0.08),
        "pcb_idle_amps": u(0.5, 1.5),
        "pcb_amps": u(3, 8),
        "rh0": u(40, 55),
    }


def _nominal(machine_type: MachineType, c: dict[str, float]) -> dict[Metric, tuple[float, float]]:
    """Band a healthy machine stays in during normal operation (stops included)."""
    t_max = AMBIENT_MAX + c["heat_rise"] * 1.1 + 2
    nominal: dict[Metric, tuple[float, float]] = {Metric.TEMPERATURE: (AMBIENT_MIN - 1, t_max)}
    if machine_type in (MachineType.MOTOR, MachineType.PUMP):
        nominal[Metric.VIBRATION] = (0.0, 0.3 + c["vib_nom"] * 1.1 * (1 + 3 * c["wear0"]))
    if machine_type is MachineType.MOTOR:
        nominal[Metric.RPM] = (0.0, c["rpm_nom"] * 1.05)
        nominal[Metric.CURRENT] = (0.0, c["amps_nom"] * 1.05)
        nominal[Metric.ENERGY] = (0.0, c["amps_nom"] * KW_PER_AMP * 1.05)
    if machine_type is MachineType.PUMP:
        nominal[Metric.FLOW] = (0.0, c["flow_nom"] * 1.05)
        nominal[Metric.PRESSURE] = (0.0, c["pump_bar"] * 1.1 + 0.3)
        nominal[Metric.ENERGY] = (0.0, c["pump_kw"] * 1.1)
    if machine_type is MachineType.TANK:
        nominal[Metric.LEVEL] = (20.0, 95.0)
        nominal[Metric.PRESSURE] = (1.0, 1.0 + c["tank_height_m"] * BAR_PER_METRE)
    if machine_type is MachineType.PCB:
        v = c["pcb_volts"]
        nominal[Metric.VOLTAGE] = (v - c["pcb_ohm"] * (c["pcb_idle_amps"] + c["pcb_amps"]) - 0.2, v)
        nominal[Metric.CURRENT] = (0.0, (c["pcb_idle_amps"] + c["pcb_amps"]) * 1.05)
    if machine_type is MachineType.SENSOR:
        nominal[Metric.HUMIDITY] = (max(0.0, c["rh0"] - 30), min(100.0, c["rh0"] + 30))
    return nominal


def build_fleet(size: int, seed: int) -> Fleet:
    """The fleet of `size` machines for `seed` (deterministic)."""
    if size < 1:
        raise ValueError("a fleet needs at least one machine")
    machines: list[Machine] = []
    constants: list[dict[str, float]] = []
    for i in range(size):
        machine_type = TYPE_ORDER[i % len(TYPE_ORDER)]
        c = _constants(rng_for(seed, 0xF1EE7, i), machine_type)
        constants.append(c)
        machines.append(
            Machine(
                index=i,
                machine_id=f"{machine_type.lower()}-{i:04d}",
                machine_type=machine_type,
                line_id=f"line-{i // MACHINES_PER_LINE + 1:02d}",
                metrics=TYPE_METRICS[machine_type],
                nominal=_nominal(machine_type, c),
            )
        )
    params = {k: np.array([c[k] for c in constants]) for k in constants[0]}
    codes = np.full((size, MAX_METRICS), -1, dtype=np.int64)
    for m in machines:
        codes[m.index, : len(m.metrics)] = [METRIC_INDEX[x] for x in m.metrics]
    return Fleet(
        seed=seed,
        machines=tuple(machines),
        params=params,
        type_idx=np.array([TYPE_ORDER.index(m.machine_type) for m in machines]),
        line_idx=np.array([i // MACHINES_PER_LINE for i in range(size)]),
        metric_codes=codes,
        n_metrics=np.array([len(m.metrics) for m in machines]),
    )
