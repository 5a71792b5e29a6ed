"""The compose healthcheck of the workers (deploy/healthcheck.py): the pure decision part."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from ot_pipeline_tests.support.paths import REPO_ROOT
from streaming.lake import Lake
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings

PROBE_FILE = REPO_ROOT / "deploy" / "healthcheck.py"


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ot_compose_healthcheck", PROBE_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


def test_simulator_is_healthy_only_while_it_keeps_producing(probe: ModuleType) -> None:
    judge, Probe = probe.judge, probe.Probe
    first = judge(None, Probe(100, 0), needs_growth=True, max_lag=10)
    assert first.healthy
    assert judge(Probe(100, 0), Probe(160, 0), needs_growth=True, max_lag=10).healthy
    stalled = judge(Probe(160, 0), Probe(160, 0), needs_growth=True, max_lag=10)
    assert not stalled.healthy and "0 messages" in stalled.reason


def test_consumer_is_healthy_when_caught_up_even_if_idle(probe: ModuleType) -> None:
    judge, Probe = probe.judge, probe.Probe
    assert judge(Probe(500, 3), Probe(500, 3), needs_growth=False, max_lag=10).healthy


def test_consumer_behind_is_healthy_while_advancing_and_unhealthy_when_stuck(
    probe: ModuleType,
) -> None:
    judge, Probe = probe.judge, probe.Probe
    assert judge(Probe(500, 900), Probe(700, 800), needs_growth=False, max_lag=10).healthy
    stuck = judge(Probe(700, 800), Probe(700, 950), needs_growth=False, max_lag=10)
    assert not stuck.healthy and "backlog=950" in stuck.reason


def test_consumer_position_starts_at_the_low_watermark_and_counts_the_backlog(
    probe: ModuleType,
) -> None:
    # Partition 0: retention removed offsets below 40, nothing landed yet -> backlog from 40.
    # Partition 1: landed up to offset 89 (next 90) of 100.
    marks = {0: (40, 100), 1: (0, 100)}
    measured = probe._consumer_probe(marks, {1: 90})
    assert measured == probe.Probe(progress=40 + 90, backlog=60 + 10)


def test_unknown_service_is_a_usage_error(probe: ModuleType) -> None:
    with pytest.raises(SystemExit, match="usage"):
        probe.measure("nonsense", Settings())


@pytest.mark.stack
def test_probes_measure_each_workers_progress_on_the_real_servers(
    probe: ModuleType, isolated: Settings
) -> None:
    """25 readings in the topic; the lander has landed 10 of partition 0 and the state writer
    applied 4 of partition 1: each probe sees its own worker's position and backlog."""
    import redis
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": isolated.kafka_bootstrap_servers})
    for partition, count in ((0, 15), (1, 10)):
        for _ in range(count):
            producer.produce(isolated.topics.readings, value=b"x", partition=partition)
    assert producer.flush(10) == 0
    assert probe.measure("simulator", isolated) == probe.Probe(progress=25, backlog=0)
    assert probe.measure("lander", isolated) == probe.Probe(progress=0, backlog=25)

    Lake(isolated.lake_dir).landed_path(0, 0, 9).parent.mkdir(parents=True)
    Lake(isolated.lake_dir).landed_path(0, 0, 9).touch()  # the probe reads file names only
    assert probe.measure("lander", isolated) == probe.Probe(progress=10, backlog=15)

    client = redis.Redis.from_url(isolated.redis_url)
    key = RedisKeys(isolated.redis_prefix, "state-writer").offsets
    try:
        client.hset(key, mapping={"1": 3})  # last applied offset 3 = four messages
        assert probe.measure("state-writer", isolated) == probe.Probe(progress=4, backlog=21)
    finally:
        client.delete(key)


def test_bridge_is_healthy_while_its_heartbeat_is_fresh_and_connected(probe: ModuleType) -> None:
    beat = {"ts": 1000.0, "connected": True, "acknowledged": 500, "unacked": 20}
    assert probe.bridge_probe(beat, now=1010.0) == probe.Probe(progress=500, backlog=20)
    with pytest.raises(RuntimeError, match="old"):
        probe.bridge_probe(beat, now=1000.0 + probe.BRIDGE_STALE_AFTER_S + 1)
    with pytest.raises(RuntimeError, match="not connected"):
        probe.bridge_probe({**beat, "connected": False}, now=1010.0)
    # Stuck: unacknowledged messages pile up and nothing is acknowledged any more.
    stuck = probe.judge(
        probe.Probe(500, 20_000), probe.Probe(500, 30_000), needs_growth=False, max_lag=10_000
    )
    assert not stuck.healthy
