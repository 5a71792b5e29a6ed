"""Streaming alert rules and their lifecycle, as pure functions over Polars frames.

A reading rule breaches on one reading (a value beyond a limit, or the device reporting FAULT);
its alert opens once `consecutive` readings in a row of one (machine, metric) breach, and clears
on the first reading that does not. OFFLINE alerts open when a machine has been silent too long
and clear when it speaks again. At most one alert is open per (machine, metric, rule): the state
is one row per key with the current streak and the open alert, if any. Alert ids are derived from
the Kafka position of the opening reading, so a replay produces the same ids (consumers dedupe).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

import polars as pl

from streaming.events.model import Metric

FAULT_STATUS = 2  # device-reported status_code meaning FAULT
OFFLINE_RULE = "offline"
ANY_METRIC = "*"
KEY = ["machine_id", "metric", "rule"]


class Severity(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    def raised(self) -> Severity:
        """One level up (escalation); CRITICAL stays CRITICAL."""
        order = list(Severity)
        return order[min(order.index(self) + 1, len(order) - 1)]


@dataclass(frozen=True)
class ReadingRule:
    """`kind` "limit": breach when value > high or value < low; "fault": status_code == 2.
    `manual_clear`: an operator may clear its alerts (`POST /api/v1/alerts/{id}/clear`)."""

    name: str
    kind: str
    severity: Severity
    metric: str | None = None  # None: every metric
    low: float | None = None
    high: float | None = None
    consecutive: int = 1
    manual_clear: bool = False


# Defaults: hard limits open at once, softer limits after 5 readings in a row, device FAULT.
DEFAULT_RULES: tuple[ReadingRule, ...] = (
    ReadingRule("temperature_hard", "limit", Severity.CRITICAL, "temperature", None, 120.0),
    ReadingRule("temperature_high", "limit", Severity.MEDIUM, "temperature", None, 95.0, 5),
    ReadingRule("vibration_hard", "limit", Severity.HIGH, "vibration", None, 25.0),
    ReadingRule("vibration_high", "limit", Severity.MEDIUM, "vibration", None, 12.0, 5),
    ReadingRule("pressure_hard", "limit", Severity.HIGH, "pressure", None, 40.0),
    ReadingRule("level_bounds", "limit", Severity.MEDIUM, "level", 5.0, 98.0, 5),
    ReadingRule("humidity_high", "limit", Severity.LOW, "humidity", None, 90.0, 5),
    # A device may stay in FAULT until someone fixed it: an operator may clear the alarm.
    ReadingRule("device_fault", "fault", Severity.HIGH, manual_clear=True),
)
OFFLINE_SEVERITY = Severity.HIGH
# A decommissioned machine never speaks again, so its OFFLINE alert would never clear by itself.
OFFLINE_MANUAL_CLEAR = True


def manual_clear_by_rule(rules: Iterable[ReadingRule]) -> dict[str, bool]:
    """Rule name -> whether an operator may clear its alerts (OFFLINE included)."""
    return {**{r.name: r.manual_clear for r in rules}, OFFLINE_RULE: OFFLINE_MANUAL_CLEAR}


STATE_SCHEMA: dict[str, pl.DataType] = {
    "machine_id": pl.String(),
    "metric": pl.String(),
    "rule": pl.String(),
    "streak": pl.Int64(),
    "alert_id": pl.String(),
    "severity": pl.String(),
    "opened_ms": pl.Int64(),
    "value": pl.Float64(),
    "threshold": pl.Float64(),
}
EVENT_COLUMNS = [
    "event",
    "alert_id",
    "rule",
    "machine_id",
    "metric",
    "severity",
    "value",
    "threshold",
    "opened_ms",
    "cleared_ms",
    "kafka_partition",
]


def load_rules(path: Path) -> tuple[ReadingRule, ...]:
    """Rules from a JSON list of objects with the fields of `ReadingRule`."""
    items = json.loads(path.read_text())
    return tuple(ReadingRule(**{**i, "severity": Severity(i["severity"])}) for i in items)


def rules_json(rules: Iterable[ReadingRule]) -> str:
    return json.dumps([asdict(r) for r in rules], indent=2)


def rules_frame(rules: Iterable[ReadingRule]) -> pl.DataFrame:
    """One row per (rule, metric) it applies to."""
    rows = []
    for r in rules:
        if r.consecutive < 1:
            raise ValueError(f"rule {r.name}: consecutive must be at least 1")
        for metric in [r.metric] if r.metric else [str(m) for m in Metric]:
            rows.append(
                {
                    "rule": r.name,
                    "metric": metric,
                    "kind": r.kind,
                    "low": r.low,
                    "high": r.high,
                    "need": r.consecutive,
                    "rule_severity": str(r.severity),
                }
            )
    schema = {
        "rule": pl.String,
        "metric": pl.String,
        "kind": pl.String,
        "low": pl.Float64,
        "high": pl.Float64,
        "need": pl.Int64,
        "rule_severity": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def empty_state() -> pl.DataFrame:
    return pl.DataFrame(schema=STATE_SCHEMA)


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "event": pl.String,
            "alert_id": pl.String,
            "rule": pl.String,
            "machine_id": pl.String,
            "metric": pl.String,
            "severity": pl.String,
            "value": pl.Float64,
            "threshold": pl.Float64,
            "opened_ms": pl.Int64,
            "cleared_ms": pl.Int64,
            "kafka_partition": pl.Int32,
        }
    )


@dataclass(frozen=True)
class AlertStep:
    events: pl.DataFrame  # EVENT_COLUMNS, in reading order
    state: pl.DataFrame  # the whole new state (rows with a streak or an open alert)
    changed: pl.DataFrame  # touched keys: rows to write (streak > 0) or delete (streak == 0)


def evaluate(readings: pl.DataFrame, state: pl.DataFrame, rules: pl.DataFrame) -> AlertStep:
    """Apply the reading rules to one batch (machine_id, metric, value, ts, status_code,
    kafka_partition, kafka_offset; in consume order) given the state before it."""
    g = KEY
    x = (
        readings.select(
            "machine_id", "metric", "value", "ts", "status_code", "kafka_partition", "kafka_offset"
        )
        .with_row_index("_order")
        .join(rules, on="metric", how="inner")
    )
    if x.height == 0:
        return AlertStep(empty_events(), state, state.clear())
    value = pl.col("value")
    high, low = pl.col("high"), pl.col("low")
    over_high = high.is_not_null() & (value > high)
    under_low = low.is_not_null() & (value < low)
    is_fault = pl.col("kind") == "fault"
    x = x.with_columns(
        breach=pl.when(is_fault)
        .then(pl.col("status_code") == FAULT_STATUS)
        .otherwise(over_high | under_low),
        _threshold=pl.when(is_fault)
        .then(pl.lit(float(FAULT_STATUS)))
        .when(over_high)
        .then(high)
        .otherwise(low),
    )
    # Only keys with a breach now or a streak/open alert before can change: usually very few.
    hot = pl.concat([x.filter("breach").select(g), state.select(g)]).unique()
    x = x.join(hot, on=g, how="semi")
    if x.height == 0:
        return AlertStep(empty_events(), state, state.clear())
    before = state.select(
        *g,
        pl.col("streak").alias("_c0"),
        pl.col("alert_id").alias("_id0"),
        pl.col("opened_ms").alias("_op0"),
        pl.col("value").alias("_v0"),
        pl.col("threshold").alias("_t0"),
    )
    x = x.join(before, on=g, how="left").with_columns(pl.col("_c0").fill_null(0))
    x = x.sort([*g, "_order"])
    x = x.with_columns(_run=(~pl.col("breach")).cast(pl.Int64).cum_sum().over(g))
    x = x.with_columns(_k=pl.col("breach").cast(pl.Int64).cum_sum().over([*g, "_run"]))
    x = x.with_columns(
        streak=pl.when(pl.col("breach"))
        .then(pl.col("_k") + pl.when(pl.col("_run") == 0).then(pl.col("_c0")).otherwise(0))
        .otherwise(0)
    )
    x = x.with_columns(_prev=pl.col("streak").shift(1).over(g).fill_null(pl.col("_c0")))
    opened = pl.col("breach") & (pl.col("streak") == pl.col("need"))
    cleared = ~pl.col("breach") & (pl.col("_prev") >= pl.col("need"))
    new_id = pl.concat_str(
        [
            pl.col("rule"),
            pl.col("machine_id"),
            pl.col("metric"),
            pl.col("kafka_partition"),
            pl.col("kafka_offset"),
        ],
        separator="|",
    )
    x = x.with_columns(_opened=opened, _cleared=cleared).with_columns(
        alert_id=pl.coalesce(
            pl.when("_opened").then(new_id).forward_fill().over(g), pl.col("_id0")
        ),
        opened_ms=pl.coalesce(
            pl.when("_opened").then(pl.col("ts")).forward_fill().over(g), pl.col("_op0")
        ),
        open_value=pl.coalesce(
            pl.when("_opened").then(pl.col("value")).forward_fill().over(g), pl.col("_v0")
        ),
        open_threshold=pl.coalesce(
            pl.when("_opened").then(pl.col("_threshold")).forward_fill().over(g), pl.col("_t0")
        ),
    )
    events = (
        x.filter(pl.col("_opened") | pl.col("_cleared"))
        .sort("_order")
        .select(
            event=pl.when("_opened").then(pl.lit("opened")).otherwise(pl.lit("cleared")),
            alert_id="alert_id",
            rule="rule",
            machine_id="machine_id",
            metric="metric",
            severity="rule_severity",
            value="open_value",
            threshold="open_threshold",
            opened_ms="opened_ms",
            cleared_ms=pl.when("_cleared").then(pl.col("ts")).otherwise(None),
            kafka_partition=pl.col("kafka_partition").cast(pl.Int32),
        )
    )
    last = x.group_by(g, maintain_order=True).agg(pl.all().last())
    is_open = pl.col("streak") >= pl.col("need")
    changed = last.select(
        *g,
        streak=pl.min_horizontal("streak", "need").cast(pl.Int64),
        alert_id=pl.when(is_open).then("alert_id"),
        severity=pl.when(is_open).then("rule_severity"),
        opened_ms=pl.when(is_open).then("opened_ms"),
        value=pl.when(is_open).then("open_value"),
        threshold=pl.when(is_open).then("open_threshold"),
    ).cast(STATE_SCHEMA)  # type: ignore[arg-type]
    kept = state.join(changed.select(g), on=g, how="anti")
    new_state = pl.concat([kept, changed.filter(pl.col("streak") > 0)])
    return AlertStep(events.select(EVENT_COLUMNS), new_state, changed)


def open_offline(
    state: pl.DataFrame, silent: pl.DataFrame, severity: Severity = OFFLINE_SEVERITY
) -> AlertStep:
    """OFFLINE alerts for silent machines (machine_id, last_seen, kafka_partition) that have none
    open; the alert id names the silence it reports, so a repeated sweep reuses it."""
    open_now = state.filter(pl.col("rule") == OFFLINE_RULE).select("machine_id")
    new = silent.join(open_now, on="machine_id", how="anti")
    rows = new.select(
        machine_id="machine_id",
        metric=pl.lit(ANY_METRIC),
        rule=pl.lit(OFFLINE_RULE),
        streak=pl.lit(1, pl.Int64),
        alert_id=pl.concat_str(
            [pl.lit(OFFLINE_RULE), "machine_id", pl.lit(ANY_METRIC), "last_seen"], separator="|"
        ),
        severity=pl.lit(str(severity)),
        opened_ms=pl.col("last_seen").cast(pl.Int64),
        value=pl.lit(None, pl.Float64),
        threshold=pl.lit(None, pl.Float64),
    ).cast(STATE_SCHEMA)  # type: ignore[arg-type]
    events = _state_events(
        rows, "opened", pl.lit(None, pl.Int64), new["kafka_partition"].cast(pl.Int32)
    )
    return AlertStep(events, pl.concat([state, rows]), rows)


def _state_events(
    rows: pl.DataFrame, event: str, cleared_ms: pl.Expr, kafka_partition: pl.Expr | pl.Series
) -> pl.DataFrame:
    """Alert events (EVENT_COLUMNS) of alert-state rows, e.g. OFFLINE alerts opened or cleared."""
    return rows.select(
        pl.lit(event).alias("event"),
        "alert_id",
        "rule",
        "machine_id",
        "metric",
        "severity",
        "value",
        "threshold",
        "opened_ms",
        cleared_ms.alias("cleared_ms"),
        kafka_partition.alias("kafka_partition"),
    )


def clear_offline(state: pl.DataFrame, heard: pl.DataFrame) -> AlertStep:
    """Clear the OFFLINE alerts of machines heard from again (machine_id, first_ts,
    kafka_partition)."""
    offline = state.filter(pl.col("rule") == OFFLINE_RULE)
    back = offline.join(heard, on="machine_id", how="inner")
    if back.height == 0:
        return AlertStep(empty_events(), state, state.clear())
    events = _state_events(
        back,
        "cleared",
        pl.col("first_ts").cast(pl.Int64),
        pl.col("kafka_partition").cast(pl.Int32),
    )
    changed = back.select(list(STATE_SCHEMA)).with_columns(
        streak=pl.lit(0, pl.Int64), alert_id=pl.lit(None, pl.String)
    )
    kept = state.join(changed.select(KEY), on=KEY, how="anti")
    return AlertStep(events, kept, changed)


def machine_status(state: pl.DataFrame, rules: pl.DataFrame) -> pl.DataFrame:
    """Per machine with an open alert: OFFLINE > FAULT > ANOMALY (others are ONLINE)."""
    kinds = rules.select("rule", "kind").unique()
    open_ = state.filter(pl.col("alert_id").is_not_null()).join(kinds, on="rule", how="left")
    return open_.group_by("machine_id").agg(
        status=pl.when((pl.col("rule") == OFFLINE_RULE).any())
        .then(pl.lit("OFFLINE"))
        .when((pl.col("kind") == "fault").any())
        .then(pl.lit("FAULT"))
        .otherwise(pl.lit("ANOMALY"))
    )
