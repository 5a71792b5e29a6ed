"""Crash and rebalance drills: `ot land` processes killed with SIGKILL or stopped mid-stream."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from ot_tools import drills
from ot_tools.coverage import lake_coverage
from streaming.lake import Lake
from streaming.settings import Settings

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SMALL_FILES = ["--flush-rows", "1500", "--flush-age", "0.4", "--batch-size", "2000"]


def _assert_exact_cover(settings: Settings, produced: int) -> None:
    marks = drills.watermarks(settings, settings.topics.readings)
    assert sum(high - low for low, high in marks.values()) == produced
    coverage = lake_coverage(Lake(settings.lake_dir), marks)
    bad = {p: c for p, c in coverage.items() if not c.exact}
    assert not bad, bad
    # Every dead-lettered offset reached the DLQ (at least once: a crash may repeat one).
    in_lake = sum(c.dead_lettered for c in coverage.values())
    in_dlq = set(drills.dead_lettered_sources(settings))
    assert len(in_dlq) == in_lake > 0


def test_lander_survives_repeated_sigkill_without_gaps_or_duplicates(
    isolated: Settings, tmp_path: Path
) -> None:
    messages = drills.heavy_fleet(machines=40, minutes=3.0, seed=11)
    producer = drills.produce_paced(isolated, isolated.topics.readings, messages, seconds=14)
    group = f"lander-drill-{isolated.topics.readings}"
    args = ["--group", group, "--instance-id", "lander-0", *SMALL_FILES]
    log = tmp_path / "lander.log"

    hits = drills.kill_repeatedly("land", isolated, args, log, kills=10)
    producer.join()
    final = drills.summary_of(drills.spawn("land", isolated, [*args, "--until-idle", "4"], log))

    assert hits == 10
    assert final["lag"] == 0
    _assert_exact_cover(isolated, len(messages))
    assert '"event": "landed"' in log.read_text()  # the killed processes did land files


def test_lander_rebalance_two_landers_share_partitions_and_hand_over(
    isolated: Settings, tmp_path: Path
) -> None:
    messages = drills.readings(40_000, machines=60, garbage_every=97)
    producer = drills.produce_paced(isolated, isolated.topics.readings, messages, seconds=10)
    args = ["--group", f"lander-rb-{isolated.topics.readings}", *SMALL_FILES]
    first = drills.spawn("land", isolated, [*args, "--until-idle", "5"], tmp_path / "a.log")
    second = drills.spawn("land", isolated, args, tmp_path / "b.log")

    time.sleep(6)  # both are in the group and landing when the second one is stopped
    second.send_signal(signal.SIGTERM)
    stopped = drills.summary_of(second)
    producer.join()
    kept = drills.summary_of(first)

    assert stopped["stopped_by"] == "SIGTERM"
    assert stopped["files"] > 0 and kept["files"] > 0  # they did share the partitions
    assert stopped["consumed"] + kept["consumed"] >= len(messages)
    _assert_exact_cover(isolated, len(messages))


def test_lander_restarted_after_sigkill_without_instance_id_lands_every_offset(
    isolated: Settings, tmp_path: Path
) -> None:
    # Without a static member id the dead member keeps its partitions until its session expires
    # (10 s): the restarted lander waits for them, and that wait is not idle time.
    messages = drills.readings(30_000, machines=60, garbage_every=97)
    producer = drills.produce_paced(isolated, isolated.topics.readings, messages, seconds=6)
    args = ["--group", f"lander-restart-{isolated.topics.readings}", *SMALL_FILES]
    log = tmp_path / "lander.log"

    killed = drills.spawn("land", isolated, args, log)
    deadline = time.monotonic() + 60
    while '"event": "landed"' not in log.read_text() and time.monotonic() < deadline:
        assert killed.poll() is None
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=30)
    restarted = drills.spawn("land", isolated, [*args, "--until-idle", "5"], log)
    producer.join()
    summary = drills.summary_of(restarted)

    assert summary["stopped_by"] == "idle"
    assert summary["consumed"] > 0
    assert summary["lag"] == 0
    _assert_exact_cover(isolated, len(messages))
    marks = drills.watermarks(isolated, isolated.topics.readings)
    coverage = lake_coverage(Lake(isolated.lake_dir), marks)
    assert sum(c.landed + c.dead_lettered for c in coverage.values()) == len(messages)
