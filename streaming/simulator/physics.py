"""Machine physics over a block of ticks for the whole fleet at once: arrays (ticks, machines).

Everything is a function of absolute event time (so a block can start anywhere) except two
states carried from block to block: each machine's temperature (thermal inertia) and each tank's
level (it integrates in- and outflow). Both are first-order linear recurrences, solved with a
chunked cumulative-sum trick instead of a Python loop per tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streaming.events.model import MachineType, Metric
from streaming.simulator.fleet import BAR_PER_METRE, KW_PER_AMP, Fleet
from streaming.simulator.randomness import uniform

Array = npt.NDArray[np.float64]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SEGMENT_MS = 15 * 60_000  # production setpoint changes every quarter hour
SETPOINT_RAMP_MS = 3 * 60_000
SHIFT_STARTS_H = (6, 14, 22)
SHIFT_RAMP_MS = 10 * 60_000
STOP_WINDOW_MS = 4 * HOUR_MS  # at most one planned stop per machine per 4 hours
STOP_PROBABILITY = 0.35
RESTART_RAMP_MS = 5 * 60_000
IDLE_LOAD = 0.05
TWO_SHIFT_START_H, TWO_SHIFT_END_H = 6, 22

# Salts: one purpose tag per random quantity, so they never correlate.
SALT_SETPOINT, SALT_STOP, SALT_STOP_AT, SALT_STOP_LEN, SALT_DAY = 11, 12, 13, 14, 15
SALT_LINE_AMBIENT = 16


@dataclass
class PhysicsState:
    """What one block hands to the next: the lagged temperatures and the tank levels."""

    temperature: Array | None = None
    level: Array | None = None


@dataclass
class Physics:
    """Noise-free physical quantities of one block, each (ticks, machines)."""

    load: Array
    planned_stop: npt.NDArray[np.bool_]
    running: npt.NDArray[np.bool_]
    ambient: Array
    channels: dict[Metric, Array]
    tank_inflow: Array  # % of tank volume per minute
    tank_outflow: Array
    temperature_target: Array = field(repr=False)


def linear_recurrence(u: Array, a: Array, y0: Array, chunk: int = 0) -> Array:
    """y[k] = a * y[k-1] + u[k] along axis 0, y[-1] = y0; a in (0, 1] per column.

    Inside a chunk of C ticks, y[k] = a^(k+1) * (y0 + sum_{j<=k} u[j] * a^-(j+1)): one cumsum.
    C is chosen so that a^-C stays below 1e6 (no loss of precision); a per-tick loop only
    remains when a is tiny (ticks much longer than the time constant).
    """
    t_len = u.shape[0]
    out = np.empty_like(u)
    a = np.clip(a, 1e-12, 1.0)
    if chunk <= 0:
        worst = float(np.min(a))
        chunk = 256 if worst >= 1.0 else int(max(1, min(256, 13.8 / -np.log(worst))))
    y = y0.astype(np.float64).copy()
    log_a = np.log(a)
    for start in range(0, t_len, chunk):
        stop = min(t_len, start + chunk)
        k = np.arange(1, stop - start + 1, dtype=np.float64)[:, None]
        grow = np.exp(k * log_a[None, :])  # a^(k)
        acc = np.cumsum(u[start:stop] / grow, axis=0)
        out[start:stop] = grow * (y[None, :] + acc)
        y = out[stop - 1]
    return out


def ambient(fleet: Fleet, ts_ms: npt.NDArray[np.int64]) -> Array:
    """Hall temperature: a daily sine (coolest at 03:00, warmest at 15:00), a day-to-day offset
    and a fixed offset per production line."""
    hours = (ts_ms % DAY_MS) / HOUR_MS
    day = ts_ms // DAY_MS
    daily = 22.0 + 4.0 * np.sin(2 * np.pi * (hours - 9.0) / 24.0)
    # day-to-day offset, interpolated between midnights so it has no step
    d0 = uniform(fleet.seed, SALT_DAY, day) * 4.0 - 2.0
    d1 = uniform(fleet.seed, SALT_DAY, day + 1) * 4.0 - 2.0
    frac = (ts_ms % DAY_MS) / DAY_MS
    day_offset = d0 + (d1 - d0) * frac
    line_offset = uniform(fleet.seed, SALT_LINE_AMBIENT, fleet.line_idx) * 3.0 - 1.5
    return np.asarray((daily + day_offset)[:, None] + line_offset[None, :], dtype=np.float64)


def load_profile(fleet: Fleet, ts_ms: npt.NDArray[np.int64]) -> tuple[Array, npt.NDArray[np.bool_]]:
    """Load in [0, 1] and the planned-stop mask, (ticks, machines).

    Quarter-hourly setpoints ramped over 3 minutes; a 10-minute ramp at every shift start;
    lines with an odd number run two shifts (06-22) and idle at night; random planned stops of
    15-30 minutes (at most one per 4 hours) followed by a 5-minute restart ramp. Sensors never stop.
    """
    seed = fleet.seed
    machines = np.arange(fleet.size)[None, :]
    t = ts_ms[:, None]
    seg = t // SEGMENT_MS
    cur = 0.55 + 0.4 * uniform(seed, SALT_SETPOINT, machines, seg)
    prev = 0.55 + 0.4 * uniform(seed, SALT_SETPOINT, machines, seg - 1)
    ramp = np.minimum(1.0, (t - seg * SEGMENT_MS) / SETPOINT_RAMP_MS)
    load = prev + (cur - prev) * ramp

    ms_of_day = t % DAY_MS
    since_shift = np.full(ms_of_day.shape, DAY_MS, dtype=np.int64)
    for h in SHIFT_STARTS_H:
        d = (ms_of_day - h * HOUR_MS) % DAY_MS
        since_shift = np.minimum(since_shift, d)
    load = load * np.where(
        since_shift < SHIFT_RAMP_MS, 0.3 + 0.7 * since_shift / SHIFT_RAMP_MS, 1.0
    )
    two_shift = (fleet.line_idx % 2 == 1)[None, :]
    night = (ms_of_day < TWO_SHIFT_START_H * HOUR_MS) | (ms_of_day >= TWO_SHIFT_END_H * HOUR_MS)
    load = np.where(two_shift & night, IDLE_LOAD, load)

    window = t // STOP_WINDOW_MS
    has_stop = uniform(seed, SALT_STOP, machines, window) < STOP_PROBABILITY
    stop_len = (15 + 15 * uniform(seed, SALT_STOP_LEN, machines, window)) * 60_000
    stop_at = window * STOP_WINDOW_MS + (
        uniform(seed, SALT_STOP_AT, machines, window) * (STOP_WINDOW_MS - 2 * HOUR_MS)
    ).astype(np.int64)
    stop_end = stop_at + stop_len
    stoppable = ~fleet.is_type(MachineType.SENSOR)[None, :]
    planned = has_stop & (t >= stop_at) & (t < stop_end) & stoppable
    after = t - stop_end
    restart = has_stop & stoppable & (after >= 0) & (after < RESTART_RAMP_MS)
    load = np.where(restart, load * np.clip(after / RESTART_RAMP_MS, 0.0, 1.0), load)
    load = np.where(planned, 0.0, load)
    return np.asarray(load, dtype=np.float64), np.asarray(planned)


def simulate(
    fleet: Fleet,
    ts_ms: npt.NDArray[np.int64],
    interval_s: float,
    state: PhysicsState,
    *,
    tripped: npt.NDArray[np.bool_] | None = None,
    wear_extra: Array | None = None,
) -> Physics:
    """Noise-free channels of one block; updates `state` for the next block.

    `tripped` (a machine stopped by a failure) and `wear_extra` (bearing wear) come from the
    fault schedule; they are zero outside their fault windows.
    """
    p = fleet.params
    shape = (len(ts_ms), fleet.size)
    load, planned = load_profile(fleet, ts_ms)
    if tripped is None:
        tripped = np.zeros(shape, dtype=bool)
    if wear_extra is None:
        wear_extra = np.zeros(shape)
    running = ~planned & ~tripped
    load = np.where(running, load, 0.0)
    amb = ambient(fleet, ts_ms)
    is_pump = fleet.is_type(MachineType.PUMP)[None, :]
    is_tank = fleet.is_type(MachineType.TANK)[None, :]
    is_pcb = fleet.is_type(MachineType.PCB)[None, :]
    is_sensor = fleet.is_type(MachineType.SENSOR)[None, :]

    # Variable-speed drives: speed follows load, from 30 % at idle to 100 % at full load.
    speed = np.where(running, 0.3 + 0.7 * load, 0.0)

    # Temperature: first-order lag towards ambient + heat of the work being done.
    heat = np.where(running, 0.15 + 0.85 * load, 0.0)
    heat = np.where(is_sensor, 0.5, heat)
    target = amb + p["heat_rise"][None, :] * heat
    a_temp = np.exp(-interval_s / p["tau_s"])
    y0 = target[0] if state.temperature is None else state.temperature
    temperature = linear_recurrence((1.0 - a_temp)[None, :] * target, a_temp, y0)
    state.temperature = temperature[-1].copy()

    # Vibration grows with speed (~speed^1.5) and with bearing wear.
    wear = p["wear0"][None, :] + wear_extra
    vibration = 0.15 + p["vib_nom"][None, :] * speed**1.5 * (1.0 + 3.0 * wear)

    rpm = p["rpm_nom"][None, :] * speed
    motor_amps = np.where(running, p["amps_nom"][None, :] * (0.25 + 0.75 * load), 0.0)
    pcb_amps = p["pcb_idle_amps"][None, :] + np.where(running, p["pcb_amps"][None, :] * load, 0.0)
    current = np.where(is_pcb, pcb_amps, motor_amps)
    pump_kw = np.where(running, p["pump_kw"][None, :] * (0.05 + 0.95 * speed**3), 0.0)
    energy = np.where(is_pump, pump_kw, KW_PER_AMP * motor_amps)  # pump affinity law: P ~ n^3
    flow = p["flow_nom"][None, :] * speed
    pump_bar = 0.2 + p["pump_bar"][None, :] * speed**2  # head ~ n^2

    # Tank: level integrates inflow (P-controller towards the setpoint plus a feed) minus the
    # line's demand. L[k] = L[k-1] + dt/60 * (in[k] - out[k]), in[k] = feed + g * (sp - L[k-1]).
    dt_min = interval_s / 60.0
    gain, sp = p["tank_gain"], p["tank_setpoint"]
    feed = 0.6 * p["tank_demand"]
    outflow = p["tank_demand"][None, :] * load
    a_level = np.clip(1.0 - gain * dt_min, 0.0, 1.0)
    u = dt_min * (feed + gain * sp)[None, :] - dt_min * outflow
    l0 = sp.astype(np.float64) if state.level is None else state.level
    level = linear_recurrence(u, a_level, l0)
    prev_level = np.vstack([l0[None, :], level[:-1]])
    inflow = feed[None, :] + gain[None, :] * (sp[None, :] - prev_level)
    state.level = level[-1].copy()
    tank_bar = 1.0 + level / 100.0 * p["tank_height_m"][None, :] * BAR_PER_METRE

    voltage = p["pcb_volts"][None, :] - p["pcb_ohm"][None, :] * pcb_amps
    humidity = p["rh0"][None, :] - 1.5 * (temperature - amb) - 1.0 * (amb - 22.0)

    channels = {
        Metric.TEMPERATURE: temperature,
        Metric.VIBRATION: vibration,
        Metric.RPM: rpm,
        Metric.CURRENT: current,
        Metric.ENERGY: energy,
        Metric.FLOW: flow,
        Metric.PRESSURE: np.where(is_tank, tank_bar, pump_bar),
        Metric.LEVEL: level,
        Metric.VOLTAGE: voltage,
        Metric.HUMIDITY: humidity,
    }
    return Physics(
        load=load,
        planned_stop=planned,
        running=running,
        ambient=amb,
        channels=channels,
        tank_inflow=np.where(is_tank, inflow, 0.0),
        tank_outflow=np.where(is_tank, outflow, 0.0),
        temperature_target=target,
    )
