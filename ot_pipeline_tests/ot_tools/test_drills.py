"""`ot drill NAME --quick` against a drill stack of the tests' own (three brokers, Redis,
PostgreSQL on free ports): each drill's report must say nothing was lost or duplicated, and show
the behaviour the drill is about."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ot_pipeline_tests.support.paths import REPO_ROOT
from ot_pipeline_tests.support.ports import free_base_port
from ot_tools.drill import cli
from ot_tools.drill.harness import PORT_OFFSETS, DrillOptions, drill_stack
from streaming.stack.local import LocalStack

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def options() -> Iterator[DrillOptions]:
    # In the repository (not a 0700 temp folder): PostgreSQL runs as its own user when root.
    root = REPO_ROOT / ".drill-stack" / f"test-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    (root / "kafka-libs").symlink_to(
        LocalStack.from_env().ensure_kafka_jars(), target_is_directory=True
    )
    opts = DrillOptions(
        quick=True, stack_dir=root, port_base=free_base_port(PORT_OFFSETS), keep_stack=True
    )
    stack = drill_stack(opts)
    try:
        stack.up()
        yield opts
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)


def drill(name: str, options: DrillOptions) -> dict[str, Any]:
    report: dict[str, Any] = cli.registered()[name].load()(options)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert report["passed"], failed
    assert report["lost"] == 0 and report["duplicated"] == 0
    return report


def test_drill_command_lists_every_drill_of_the_issue() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streaming.cli", "drill", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = [line.split()[0] for line in out.splitlines()]
    assert listed == list(cli.ORDER)


def test_hostile_input_dead_letters_every_bad_payload_and_lands_every_valid_one(
    options: DrillOptions,
) -> None:
    report = drill("hostile-input", options)
    lake = report["reconciled"]["parts"]["kafka"]["lakes"]["lake"]
    assert lake["landed"] == report["load"]["valid_by_contract"] > 0
    assert lake["dead_lettered"] >= report["load"]["hostile"] * 0.99
    assert report["unrequested_exits"] == {}
    assert set(report["load"]["kinds"]) >= {"random_bytes", "nan", "one_mib"}
    assert len(report["dead_letter_reasons"]) >= 3  # told apart, not one catch-all
    webhook = report["webhook"]
    assert webhook["accepted"] > 0 and webhook["dead_lettered_by_gateway"] > 0
    assert not [a for a in webhook["answers"] if a.rsplit(" ", 1)[1].startswith("5")]


def test_consumer_loss_survivors_take_over_with_and_without_static_membership(
    options: DrillOptions,
) -> None:
    report = drill("consumer-loss", options)
    takeovers = report["takeover_s"]
    assert set(takeovers) == {
        "dynamic SIGKILL", "dynamic SIGTERM", "static SIGKILL", "static SIGTERM"
    }  # fmt: skip
    assert all(v is not None for t in takeovers.values() for v in t.values())
    # A graceful leave of a dynamic member hands over at once; a dead one waits for its session.
    assert takeovers["dynamic SIGTERM"]["landers"] < takeovers["dynamic SIGKILL"]["landers"]
    produced = [p["produced"] for p in report["reconciled"]["parts"].values()]
    assert all(n > 10_000 for n in produced)


@pytest.mark.drill
def test_redis_outage_state_writer_backs_off_resumes_exactly_and_api_answers_503(
    options: DrillOptions,
) -> None:
    report = drill("redis-outage", options)
    writer = report["state_writer"]
    assert writer["breaker_trips"] >= 2 and len(writer["recoveries"]) == writer["breaker_trips"]
    assert report["api"]["paused"]["live"]["status"] == 503
    assert report["api"]["paused"]["history"]["status"] == 200


@pytest.mark.drill
def test_broker_loss_leader_coordinator_two_brokers_and_a_hung_one(
    options: DrillOptions,
) -> None:
    report = drill("broker-loss", options)
    assert [p["phase"] for p in report["phases"]] == [
        "leader", "coordinator", "two-brokers", "hung-broker"
    ]  # fmt: skip
    assert report["load"]["delivery_failures"] == 0
    assert all(p["recovery_s"] is not None for p in report["phases"])


@pytest.mark.drill
def test_network_partition_consumers_cut_off_and_degraded_rejoin_and_catch_up(
    options: DrillOptions,
) -> None:
    report = drill("network-partition", options)
    cut = report["phases"][0]
    # Cut off longer than their session: the consumers lost their partitions and got them back.
    assert any("lost" in events for events in cut["events"].values()), cut["events"]


@pytest.mark.drill
def test_lake_disk_full_lander_stops_says_why_and_resumes_exactly(options: DrillOptions) -> None:
    report = drill("lake-disk-full", options)
    assert report["lander_exits_while_full"]


@pytest.mark.drill
def test_overload_consumers_fall_behind_with_bounded_memory_and_catch_up(
    options: DrillOptions,
) -> None:
    report = drill("overload", options)
    assert max(report["phases"][0]["peak_lag"].values()) > report["sustainable_per_s"]


@pytest.mark.drill
def test_postgres_outage_run_fails_clearly_then_retries_and_succeeds(
    options: DrillOptions,
) -> None:
    report = drill("postgres-outage", options)
    pipeline = report["pipeline"]
    assert pipeline["stays_down"]["exit"] == 1 and pipeline["stays_down"]["failed_assets"]
    assert pipeline["back_in_time"]["success"] and pipeline["back_in_time"]["retries"]


def test_drill_report_ends_with_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    from ot_tools.drill.harness import print_report

    report = {
        "drill": "x", "passed": True, "lost": 0, "duplicated": 0, "recovery_s": 1.5,
        "took_s": 2.0, "phases": [], "checks": [{"check": "c", "ok": True, "detail": None}],
        "peak_rss_mb": {"lander": 100.0}, "logs": "/tmp",
    }  # fmt: skip
    print_report(report)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == report
