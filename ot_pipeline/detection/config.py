"""One documented detection config: defaults per metric type, overrides per metric and machine.

Windows are counted in *samples*, not seconds: the same defaults then fit a pump bench sampled
every second and a temperature sensor sampled every five minutes. Every threshold is expressed in
robust standard deviations of the series itself, so data never seen before needs no tuning; only
the physical noise floors (the smallest change worth a flag) depend on the metric's unit.

A config is a `DetectionConfig` built in code or loaded from YAML (`DetectionConfig.from_yaml`):

```yaml
defaults: {z_threshold: 6.0}          # applies to every series
metrics:                              # per metric type (the `metric` column)
  temperature: {stuck_samples: 60}
machines:                             # per machine, optionally per metric of that machine
  press-07: {level_threshold: 6.0}
  pump-03:
    pressure: {upper_limit: 12.0}
```

Resolution order (later wins): built-in generic defaults, built-in per-metric defaults, `defaults`,
`metrics[metric]`, `machines[machine]` (flat keys), `machines[machine][metric]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

GENERIC = "generic"


@dataclass(frozen=True)
class DetectorSettings:
    """Settings of every detector for one series (one machine's metric).

    Windows are in samples (readings of the series) or in blocks of `block_samples` readings;
    thresholds are in robust noise sigmas of the series unless named otherwise.
    """

    # Long-term statistics are kept per block of readings (block medians are immune to spikes
    # and cheap to roll over a long history).
    block_samples: int = 30
    history_blocks: int = 3000  # long memory: the envelope of normal operation
    min_history_blocks: int = 4  # no level/drift/regime decision before this many blocks
    # ... and no level, rate-of-change, drift or ramp verdict before this many: the envelope
    # must have seen the process move (a setpoint change, a load step) before a move counts as
    # abnormal. The fleet (FLEET_DEFAULTS) waits 240 (2 hours at 1 s: a machine's first hour
    # shows few of its operating points; the wait is once in a series' life, as the detector
    # state carries it from hour to hour); a recording has no time to spare.
    baseline_blocks: int = 4
    noise_blocks: int = 100  # window of the noise estimate (median absolute step)
    # Spike: 1..spike_max_readings readings far from the level before them, then a return.
    spike_threshold: float = 6.0
    spike_max_readings: int = 3
    spike_return_share: float = 0.3
    # ... and beyond this many times the usual largest spike score of a block (0 = off): where
    # short excursions are the series' normal behaviour, only unusually large ones count.
    spike_usual_threshold: float = 2.0
    # Level: outside the envelope of recent normal block medians for level_consecutive readings.
    envelope_quantile: float = 0.1
    envelope_margin: float = 0.5  # times the envelope's width
    envelope_noise_margin: float = 3.0  # plus this many noise sigmas
    # Blocks whose median lies outside the envelope do not enter it: a long fault is not learnt
    # as normal. Each pass re-learns the envelope without the blocks the previous pass found
    # outside (causal: a block is judged against earlier blocks only), so a lasting change is
    # still absorbed in the end, about (passes + 1) times later. 0 = no freeze: the default for
    # a fleet, whose new operating points it would flag for longer; `ot detect` (recordings of
    # one machine with recurring faults) uses RECORDING_DEFAULTS.
    envelope_freeze_passes: int = 0
    # ... counting only blocks this many fences beyond the envelope (a new operating point just
    # outside it is learnt at the normal pace; a fault far outside is not).
    envelope_freeze_margin: float = 2.0
    level_consecutive: int = 10
    # Once raised, a level alarm holds (a deadband and an off-delay, as in alarm management
    # practice) until level_clear_samples consecutive readings are back inside the fence by at
    # least level_deadband x the fence: a fault hovering at the fence is one alarm, not many.
    level_deadband: float = 0.5
    level_clear_samples: int = 10
    # Static limits (e.g. from machine metadata), breached for limit_consecutive readings.
    lower_limit: float | None = None
    upper_limit: float | None = None
    limit_consecutive: int = 5
    # Drift: a consistent trend of block medians (the drift_consistency quantile of the last
    # drift_blocks block-to-block changes, i.e. all but that share of them go the same way),
    # against the usual value of that statistic in the series' history and against the noise.
    drift_blocks: int = 60
    drift_consistency: float = 0.2
    drift_threshold: float = 2.0
    drift_usual_quantile: float = 0.99
    drift_noise_threshold: float = 6.0
    # No drift verdict before the usual trend (and the usual net change) is known from this many
    # blocks where it was known itself: the trend needs drift_blocks // 2 blocks, the net change
    # drift_blocks, so verdicts start 90 / 120 blocks (45 / 60 min at 1 s) into a series (the
    # fleet waits 240, FLEET_DEFAULTS).
    drift_min_history_blocks: int = 60
    drift_direction_share: float = 0.9
    # Which drifts count: "both" (default), "up" or "down"; null: the series' `direction`.
    # A slow, consistent change of a running series is a fault either way (a sensor losing its
    # calibration, a process wandering); "a low value is idle" is about the level, and a stop
    # is a drop, not a drift. Until issue 15 drifts followed `direction`, so a temperature, a
    # vibration, an rpm, an energy or a current drifting down was never a drift.
    drift_direction: str | None = "both"
    drift_change_noise: float = 16.0
    # Ramp: the change of the block median over ramp_blocks blocks (2 min at 1 s) beyond
    # ramp_threshold x its usual size (the drift_usual_quantile of it over the history, known
    # after drift_min_history_blocks) and ramp_noise_threshold block-noise sigmas: a rise or fall
    # faster than the series has shown (an overheat, a valve closing), at any operating point.
    ramp_blocks: int = 4
    ramp_threshold: float = 3.0
    ramp_noise_threshold: float = 8.0
    # After a stop or a suppressed stretch, the process settles (reheats, refills) for this many
    # blocks before level and drift verdicts resume.
    settle_blocks: int = 80
    # Rate of change: a step of this many noise sigmas that leaves the envelope.
    roc_threshold: float = 8.0
    # Stuck-at: this many consecutive readings within stuck_tolerance of each other ...
    stuck_samples: int = 30
    stuck_tolerance: float = 0.0
    # ... on a series that normally moves (at most this share of its steps are flat).
    stuck_max_flat_share: float = 0.2
    # Data gaps: a time step this many times the series' median step, or a seq jump.
    gap_factor: float = 5.0
    # Regimes: a non-negative signal below this fraction of its running level is stopped/idle.
    stop_fraction: float | None = 0.6
    # A reading on the way down to a stop gets no downward flag, but only for this many readings:
    # a value that stays down there without stopping (a valve fault, a leak) is a fault.
    stop_transition_samples: int = 30
    # Which departures from the envelope count: "both", "up" (only high is bad) or "down".
    direction: str = "both"
    # Smallest noise sigma (metric units, and relative to the running level).
    abs_noise_floor: float = 0.0
    rel_noise_floor: float = 0.0005
    # Severity escalates one step once an anomalous run has lasted this many readings.
    escalate_samples: int = 120
    # Alarm budget (flood suppression): at most alarm_budget alarm episodes (anomalous runs
    # more than alarm_merge_samples apart) start within alarm_budget_window readings of a
    # series; later ones are muted while the flood lasts. 0 = no budget.
    alarm_budget: int = 6
    alarm_budget_window: int = 10_000
    alarm_merge_samples: int = 60
    # Multivariate (per machine, PCA with Hotelling T² and Q on its channels sampled together):
    # learnt on the machine's first multivariate_train_samples readings, on rolling means of
    # multivariate_smooth_samples; limits widened by multivariate_threshold; raised after
    # multivariate_consecutive readings beyond. On in `ot detect` (RECORDING_DEFAULTS).
    multivariate: bool = False
    multivariate_train_samples: int = 400
    multivariate_smooth_samples: int = 10
    multivariate_threshold: float = 2.5
    multivariate_consecutive: int = 10
    # Relation (per machine, each metric predicted from each other metric on aligned time
    # buckets, relation.py): broken when no other metric explains it within relation_threshold
    # x the fit's residual RMS for relation_consecutive buckets. On for the fleet.
    relation: bool = False
    relation_threshold: float = 10.0
    relation_bucket_seconds: float = 30.0
    relation_history_chunks: int = 24
    relation_consecutive: int = 4

    def validate(self) -> DetectorSettings:
        for name in (
            "block_samples",
            "history_blocks",
            "min_history_blocks",
            "baseline_blocks",
            "noise_blocks",
            "spike_max_readings",
            "level_consecutive",
            "level_clear_samples",
            "limit_consecutive",
            "drift_blocks",
            "drift_min_history_blocks",
            "ramp_blocks",
            "settle_blocks",
            "stuck_samples",
            "escalate_samples",
            "stop_transition_samples",
            "alarm_budget_window",
            "alarm_merge_samples",
            "multivariate_train_samples",
            "multivariate_smooth_samples",
            "multivariate_consecutive",
            "relation_history_chunks",
            "relation_consecutive",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.direction not in ("both", "up", "down"):
            raise ValueError("direction must be one of both, up, down")
        if self.drift_direction not in (None, "both", "up", "down"):
            raise ValueError("drift_direction must be one of both, up, down (or null)")
        if self.relation_bucket_seconds <= 0 or self.relation_threshold <= 0:
            raise ValueError("relation_bucket_seconds and relation_threshold must be positive")
        if self.alarm_budget < 0:
            raise ValueError("alarm_budget must not be negative (0 = no budget)")
        if self.envelope_freeze_passes < 0:
            raise ValueError("envelope_freeze_passes must not be negative")
        if not 0.0 <= self.level_deadband <= 1.0:
            raise ValueError("level_deadband must be in [0, 1] (a share of the level fence)")
        if not 0.0 <= self.envelope_quantile < 0.5:
            raise ValueError("envelope_quantile must be in [0, 0.5)")
        return self


# Physical noise floors per metric type (units of the event contract): below these, a change is
# sensor resolution, not an anomaly. Everything else is shared: thresholds are in robust sigmas.
# For machinery quantities (heat, vibration, load, speed, energy) a low value means idle or
# stopped, not broken: only departures upwards from the envelope count. Pressure and flow are
# watched both ways: a valve fault, a leak or a blockage moves them either way (a stop is still
# recognised as a stop, below stop_fraction of the running level). Levels and humidity are
# watched both ways too, as is a generic signal; voltage downwards (a sagging supply).
_UP = {"direction": "up"}
METRIC_DEFAULTS: dict[str, dict[str, Any]] = {
    GENERIC: {"stop_fraction": 0.2},
    "temperature": {"abs_noise_floor": 0.02, **_UP},
    "vibration": {"abs_noise_floor": 0.005, **_UP},
    "pressure": {"abs_noise_floor": 0.002},
    "energy": {"abs_noise_floor": 0.02, **_UP},
    "rpm": {"abs_noise_floor": 0.5, **_UP},
    "voltage": {"abs_noise_floor": 0.01, "direction": "down"},
    "current": {"abs_noise_floor": 0.01, **_UP},
    "level": {"abs_noise_floor": 0.02},
    "flow": {"abs_noise_floor": 0.05},
    "humidity": {"abs_noise_floor": 0.05},
}

# `ot detect` on a recording: the envelope freeze is on (docs/detection.md, "The envelope freeze").
# ... and the multivariate detector across the value columns (docs/detection.md).
RECORDING_DEFAULTS: dict[str, Any] = {"envelope_freeze_passes": 2, "multivariate": True}

# The fleet (the `anomalies` asset, the evaluation on the simulator): long-running series whose
# state the asset carries from hour to hour (resume.py), so verdicts can wait for a baseline.
# - no verdict on a move before a series has 240 blocks (7,200 readings: two hours at 1 s, 43
#   minutes at `make run`'s rate). With 4, a fresh fleet learnt one operating point in its first
#   minutes and flagged the first quarter-hourly setpoint change on every load-driven metric:
#   thousands of level flags in the first 15 minutes of a `make run` (docs/detection.md,
#   "Warm-up of a fresh fleet"); with 120, a machine's first new setpoint after its first hour
#   still flagged every load-driven metric (the largest class of false alarms left, session 7);
# - no drift verdict before 240 blocks where the usual trend was known (2 h at 1 s): removes the
#   drift verdicts of a series' first hours (morning ambient, first tank cycles) without losing a
#   detected fault (seed 31337: `none` 38 -> 33 false episodes, `default` F1 0.9407 -> 0.9421).
#   Not possible before the asset carried its state: an hour warmed with 60 minutes of history
#   never had 240 blocks. Recordings keep 60 (a recording of days at 5 min would wait 25 days).
FLEET_DEFAULTS: dict[str, Any] = {
    "baseline_blocks": 240,
    "drift_min_history_blocks": 240,
    "relation": True,
}


_FIELD_NAMES = {f.name for f in fields(DetectorSettings)}


def _checked(overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = set(overrides) - _FIELD_NAMES
    if unknown:
        raise ValueError(f"{where}: unknown detection setting(s) {sorted(unknown)}")
    return dict(overrides)


@dataclass(frozen=True)
class DetectionConfig:
    """Overrides on top of the built-in defaults; `settings_for` resolves one series."""

    defaults: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    machines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Flags on readings with these device status codes are suppressed (3 = maintenance).
    suppress_status_codes: tuple[int, ...] = (3,)

    def __post_init__(self) -> None:
        _checked(self.defaults, "defaults")
        for metric, overrides in self.metrics.items():
            _checked(overrides, f"metrics.{metric}")
        for machine, overrides in self.machines.items():
            flat = {k: v for k, v in overrides.items() if not isinstance(v, Mapping)}
            _checked(flat, f"machines.{machine}")
            for metric, sub in overrides.items():
                if isinstance(sub, Mapping):
                    _checked(sub, f"machines.{machine}.{metric}")
        self.settings_for(None, GENERIC)  # fail early on inconsistent values

    @classmethod
    def fleet(cls) -> DetectionConfig:
        """The config of the platform's own pipeline (FLEET_DEFAULTS)."""
        return cls(defaults=dict(FLEET_DEFAULTS))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> DetectionConfig:
        unknown = set(raw) - {"defaults", "metrics", "machines", "suppress_status_codes"}
        if unknown:
            raise ValueError(f"unknown detection config section(s) {sorted(unknown)}")
        return cls(
            defaults=dict(raw.get("defaults") or {}),
            metrics={k: dict(v) for k, v in (raw.get("metrics") or {}).items()},
            machines={k: dict(v) for k, v in (raw.get("machines") or {}).items()},
            suppress_status_codes=tuple(raw.get("suppress_status_codes", (3,))),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> DetectionConfig:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return cls.from_mapping(raw)

    def settings_for(self, machine_id: str | None, metric: str | None) -> DetectorSettings:
        metric_key = metric if metric in METRIC_DEFAULTS else GENERIC
        merged: dict[str, Any] = {**METRIC_DEFAULTS[metric_key], **self.defaults}
        if metric is not None:
            merged.update(self.metrics.get(metric, {}))
        if machine_id is not None and machine_id in self.machines:
            per_machine = self.machines[machine_id]
            merged.update({k: v for k, v in per_machine.items() if not isinstance(v, Mapping)})
            sub = per_machine.get(metric or "", {})
            if isinstance(sub, Mapping):
                merged.update(sub)
        return replace(DetectorSettings(), **merged).validate()

    def with_limits(
        self, limits: Mapping[tuple[str, str], tuple[float | None, float | None]]
    ) -> DetectionConfig:
        """A copy with static limits per (machine_id, metric), e.g. from machine metadata."""
        machines: dict[str, dict[str, Any]] = {k: dict(v) for k, v in self.machines.items()}
        for (machine_id, metric), (lower, upper) in limits.items():
            per_machine = machines.setdefault(machine_id, {})
            sub = dict(per_machine.get(metric, {}))
            sub.update({"lower_limit": lower, "upper_limit": upper})
            per_machine[metric] = sub
        return replace(self, machines=machines)
