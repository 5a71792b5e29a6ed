"""The pure parts of `ot bench e2e`: the rate search, which component a process is, the change
feed's latencies, and when a step passes."""

from __future__ import annotations

import orjson

from ot_tools.bench.e2e import (
    Options,
    Step,
    component_of,
    dagster_part,
    feed_latencies,
    figures,
    judge,
    machines_for,
    next_rate,
)

LADDER = (200, 10_000, 50_000, 100_000)


def test_search_climbs_the_ladder_while_steps_pass() -> None:
    assert next_rate([], LADDER, refine=1) == 200
    assert next_rate([(200, True)], LADDER, refine=1) == 10_000
    assert next_rate([(200, True), (10_000, True), (50_000, True)], LADDER, 1) == 100_000
    everything = [(r, True) for r in LADDER]
    assert next_rate(everything, LADDER, refine=1) is None  # the top of the ladder held


def test_search_halves_the_gap_after_the_first_failure_then_stops() -> None:
    done = [(200, True), (10_000, True), (50_000, False)]
    assert next_rate(done, LADDER, refine=0) is None
    assert next_rate(done, LADDER, refine=2) == 30_000
    assert next_rate([*done, (30_000, True)], LADDER, refine=2) == 40_000
    assert next_rate([*done, (30_000, False)], LADDER, refine=2) == 20_000
    assert next_rate([*done, (30_000, True), (40_000, True)], LADDER, refine=2) is None


def test_search_stops_when_the_first_step_fails() -> None:
    assert next_rate([(200, False)], LADDER, refine=3) is None


def test_fleet_grows_with_the_rate_up_to_a_thousand_machines() -> None:
    assert machines_for(200) == 56 and machines_for(10) == 20
    assert machines_for(100_000) == 1000


def test_components_are_named_from_the_command_lines_of_make_run() -> None:
    ot = "/repo/.venv/bin/ot"
    assert component_of([ot, "simulate", "--rate", "200"]) == "simulator"
    assert component_of(["/usr/bin/python3", ot, "land"]) == "lander"
    assert component_of([ot, "state"]) == "state_writer"
    assert component_of([ot, "api", "--port", "8000"]) == "api"
    assert component_of([ot, "bridge", "mqtt"]) == "mqtt_bridge"
    assert component_of(["/repo/.venv/bin/dagster", "dev", "-w", "workspace.yaml"]) == "dagster"
    assert component_of(["/usr/bin/python3", "/repo/.venv/bin/dagster", "dev"]) == "dagster"
    assert component_of(["sleep", "1"]) == "other"
    py = "/repo/.venv/bin/python"
    assert dagster_part([py, "-m", "dagster_webserver", "-p", "3000"]) == "dagster_webserver"
    daemon = [py, "/repo/.venv/bin/dagster-daemon", "run", "--grpc-socket", "/tmp/s.sock"]
    assert component_of(daemon) == "dagster" and dagster_part(daemon) == "dagster_daemon"
    assert dagster_part([py, "-m", "dagster._daemon", "run"]) == "dagster_daemon"
    assert dagster_part([py, "-m", "dagster", "api", "grpc", "--lazy-load"]) == (
        "dagster_code_server"
    )
    assert dagster_part([py, "-m", "dagster", "api", "execute_run", "{}"]) == "dagster_runs"
    step = [py, "-c", "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5)"]
    assert dagster_part(step) == "dagster_runs"


def test_latency_is_the_feed_entry_time_minus_each_readings_event_time() -> None:
    payload = orjson.dumps(
        [
            {"machine_id": "m1", "values": {"temperature": {"value": 1.0, "ts": 1_000}}},
            {
                "machine_id": "m2",
                "values": {"rpm": {"value": 2.0, "ts": 1_150}, "flow": {"value": 3.0, "ts": 1_100}},
            },
        ]
    )
    entries = [
        (b"1250-0", {b"t": b"machines", b"m": b"", b"d": payload}),
        (b"1300-0", {b"t": b"alert", b"m": b"m1", b"d": b"{}"}),  # not a reading
    ]
    assert sorted(feed_latencies(entries)) == [100.0, 150.0, 250.0]


def _step(**changes: object) -> Step:
    step = Step(
        rate=10_000,
        machines=1000,
        produced_per_s=9_990,
        lander_lag_s=8.0,
        state_lag_s=0.2,
        latency_ms={"p50": 120.0, "p95": 300.0, "p99": 450.0, "max": 800.0},
        materialized_s=150.0,
    )
    for k, v in changes.items():
        setattr(step, k, v)
    return step


def test_a_step_passes_only_when_every_criterion_holds() -> None:
    options = Options(max_lag_s=30.0, deadline_s=300.0)
    assert judge(_step(), options) == []
    assert "simulator produced" in judge(_step(produced_per_s=9_000), options)[0]
    assert "lander lag" in judge(_step(lander_lag_s=45.0), options)[0]
    assert "state writer lag" in judge(_step(state_lag_s=None), options)[0]
    assert "p99" in judge(_step(latency_ms={"p99": 1_000.0}), options)[0]
    assert "not materialized" in judge(_step(missing=["readings@h"]), options)[0]
    assert "materialized after" in judge(_step(materialized_s=301.0), options)[0]


def test_figures_name_each_step_and_the_best_passing_rate() -> None:
    low, high = _step(rate=200), _step(rate=50_000, reasons=["lander lag 99 s > 30 s"])
    out = figures([low, high])
    assert out["r200_passed"] is True and out["r50000_passed"] is False
    assert out["r50000_failed"].startswith("lander lag")
    assert out["r200_latency_p99_ms"] == 450.0
    assert out["sustained_readings_per_s"] == 200


def test_a_json_report_reads_back_as_tables_of_steps_and_components() -> None:
    from dataclasses import asdict

    from ot_tools.bench.e2e import tables

    step = _step(
        cpu_pct={"lander": 12.5, "kafka": 30.0, "platform": 12.5, "total": 42.5},
        rss_mb={"lander": 560.0, "kafka": 640.0, "platform": 560.0, "total": 1200.0},
        load_avg_end=3.2,
    )
    failed = _step(rate=50_000, reasons=["lander lag 99 s > 30 s"], load_avg_end=4.0)
    text = tables([asdict(step), asdict(failed)])
    rows = text.splitlines()
    assert rows[2].startswith("| 10,000 | 9,990 | 8.0 | 0.2 | 120.0 / 450.0 | 150.0 |")
    assert rows[2].endswith("| 3.2 | pass |") and rows[3].endswith("fail: lander lag 99 s > 30 s |")
    assert "| lander | 12.5 %, 560.0 MB | - %, - MB |" in text
    assert "| total | 42.5 %, 1,200 MB | - %, - MB |" in text
