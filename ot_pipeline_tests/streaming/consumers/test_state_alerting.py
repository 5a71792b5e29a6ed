"""Streaming alert rules and lifecycle, without servers."""

from __future__ import annotations

import polars as pl

from streaming.consumers.alerting import (
    ReadingRule,
    Severity,
    clear_offline,
    empty_state,
    evaluate,
    machine_status,
    open_offline,
    rules_frame,
)

RULES = rules_frame(
    [
        ReadingRule("temp_hard", "limit", Severity.CRITICAL, "temperature", None, 100.0),
        ReadingRule("temp_high", "limit", Severity.MEDIUM, "temperature", None, 80.0, 3),
        ReadingRule("fault", "fault", Severity.HIGH),
    ]
)


def _batch(
    values: list[float],
    *,
    machine: str = "m1",
    status: list[int] | None = None,
    first_offset: int = 0,
) -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame(
        {
            "machine_id": [machine] * n,
            "metric": ["temperature"] * n,
            "value": values,
            "ts": [1_000 * (first_offset + i) for i in range(n)],
            "status_code": status or [0] * n,
            "kafka_partition": [2] * n,
            "kafka_offset": list(range(first_offset, first_offset + n)),
        },
        schema_overrides={"status_code": pl.Int32, "kafka_partition": pl.Int32},
    )


def test_state_alert_opens_after_n_consecutive_breaches_across_batches_and_clears_once() -> None:
    step1 = evaluate(_batch([70, 85, 86]), empty_state(), RULES)
    assert step1.events.height == 0  # two in a row: not yet
    step2 = evaluate(_batch([87, 88, 60, 61], first_offset=3), step1.state, RULES)

    events = step2.events.select(
        "event", "rule", "alert_id", "value", "threshold", "opened_ms", "cleared_ms"
    ).rows()
    assert events == [
        ("opened", "temp_high", "temp_high|m1|temperature|2|3", 87.0, 80.0, 3_000, None),
        ("cleared", "temp_high", "temp_high|m1|temperature|2|3", 87.0, 80.0, 3_000, 5_000),
    ]
    assert step2.state.height == 0  # nothing open, no streak left
    assert step2.changed.filter(pl.col("rule") == "temp_high")["streak"].to_list() == [0]


def test_state_hard_limit_opens_at_once_and_stays_the_one_open_alert() -> None:
    step = evaluate(_batch([150, 160, 170, 90]), empty_state(), RULES)
    opened = step.events.filter(pl.col("event") == "opened")
    # One hard-limit alert for the run of three; temp_high opens on its third breach.
    assert opened["rule"].to_list() == ["temp_hard", "temp_high"]
    assert opened.filter(pl.col("rule") == "temp_hard")["severity"].to_list() == ["CRITICAL"]
    assert step.events.filter(pl.col("event") == "cleared")["rule"].to_list() == ["temp_hard"]
    open_now = step.state.filter(pl.col("alert_id").is_not_null())
    assert open_now["rule"].to_list() == ["temp_high"]
    assert machine_status(step.state, RULES).rows() == [("m1", "ANOMALY")]


def test_state_device_fault_status_opens_a_fault_alert_and_sets_status_fault() -> None:
    step = evaluate(_batch([50, 50, 50], status=[0, 2, 2]), empty_state(), RULES)
    assert step.events.select("event", "rule").rows() == [("opened", "fault")]
    assert machine_status(step.state, RULES).rows() == [("m1", "FAULT")]
    later = evaluate(_batch([50], status=[0], first_offset=3), step.state, RULES)
    assert later.events.select("event", "rule").rows() == [("cleared", "fault")]
    assert machine_status(later.state, RULES).height == 0  # back to ONLINE


def test_state_offline_alert_opens_once_per_silence_and_clears_when_heard_again() -> None:
    silent = pl.DataFrame(
        {"machine_id": ["m1", "m2"], "last_seen": [5_000, 7_000], "kafka_partition": [0, 1]}
    )
    first = open_offline(empty_state(), silent)
    assert first.events["alert_id"].to_list() == ["offline|m1|*|5000", "offline|m2|*|7000"]
    again = open_offline(first.state, silent)
    assert again.events.height == 0  # at most one open alert per machine and rule
    assert set(machine_status(first.state, RULES)["status"]) == {"OFFLINE"}

    heard = pl.DataFrame({"machine_id": ["m2"], "first_ts": [9_000], "kafka_partition": [1]})
    back = clear_offline(again.state, heard)
    assert back.events.select("event", "machine_id", "cleared_ms").rows() == [
        ("cleared", "m2", 9_000)
    ]
    assert back.state["machine_id"].to_list() == ["m1"]
