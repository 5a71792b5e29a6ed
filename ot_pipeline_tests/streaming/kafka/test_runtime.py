"""The consumer runtime's pure parts: the breaker's backoff, what counts as a dead client, and
what a rebalance changed."""

from __future__ import annotations

import random

import pytest
from confluent_kafka import KafkaError

from streaming.kafka.rebalance import group_changes
from streaming.kafka.runtime import (
    FAILOVER_EXCUSE_S,
    REJOIN_BUDGET,
    REJOIN_HARD_BUDGET,
    REJOIN_WINDOW_S,
    Breaker,
    Rejoins,
    is_fatal,
)


def test_breaker_backs_off_exponentially_with_jitter_up_to_its_cap_and_closes_on_success() -> None:
    breaker = Breaker(base_s=0.25, cap_s=10.0, rng=random.Random(1))
    assert not breaker.open
    delays = [breaker.trip(now=100.0 + i) for i in range(10)]
    assert breaker.open and breaker.failures == 10
    for i, delay in enumerate(delays):
        ceiling = min(10.0, 0.25 * 2**i)
        assert ceiling / 2 <= delay <= ceiling  # never a hot loop, never beyond the cap
    assert breaker.retry_at == 109.0 + delays[-1]
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jitter: capped delays still differ
    assert breaker.reset(now=130.0) == 30.0
    assert not breaker.open and breaker.failures == 0


def test_a_fenced_static_member_is_fatal_although_librdkafka_says_not() -> None:
    fenced = KafkaError(KafkaError._FATAL, "Static consumer fenced", fatal=False)
    assert not fenced.fatal() and is_fatal(fenced)
    assert is_fatal(KafkaError(KafkaError.FENCED_INSTANCE_ID))
    assert is_fatal(KafkaError(KafkaError._FAIL, fatal=True))
    assert not is_fatal(KafkaError(KafkaError._TRANSPORT))
    assert not is_fatal(KafkaError(KafkaError._ALL_BROKERS_DOWN))


def _rejoin_until_give_up(rejoins: Rejoins, trouble_before_s: float | None) -> int:
    """Fresh clients made, one every 5 s, until the budget says give up."""
    now = 1000.0
    for made in range(100):
        trouble = None if trouble_before_s is None else now - trouble_before_s
        give_up, explained = rejoins.over_budget(now, trouble)
        if give_up:
            return made
        rejoins.record(now, explained)
        now += 5.0
    return 100


def test_fences_after_broker_trouble_are_failovers_and_do_not_spend_the_rejoin_budget() -> None:
    # Another process with the same instance id: fences with no broker trouble before them.
    assert _rejoin_until_give_up(Rejoins(), None) == REJOIN_BUDGET
    assert _rejoin_until_give_up(Rejoins(), FAILOVER_EXCUSE_S + 1) == REJOIN_BUDGET
    # The coordinator failing over (a transport error seconds before each fence): rejoin, up to
    # the hard budget.
    assert _rejoin_until_give_up(Rejoins(), 10.0) == REJOIN_HARD_BUDGET
    # Failovers do not hide a later conflict: their fresh clients count only for the hard cap.
    rejoins = Rejoins()
    for i in range(REJOIN_BUDGET + 2):
        rejoins.record(float(i), explained=True)
    assert rejoins.over_budget(10.0, None) == (False, False)
    # The window forgets: three unexplained fences long ago leave the budget whole.
    old = Rejoins()
    for i in range(REJOIN_BUDGET):
        old.record(float(i), explained=False)
    assert old.over_budget(2.0, None)[0]
    assert not old.over_budget(REJOIN_WINDOW_S + 10.0, None)[0]


def test_group_changes_name_who_joined_who_left_and_where_partitions_went() -> None:
    before = {"a": [0, 1, 2, 3], "b": [4, 5]}
    after = {"a": [0, 1], "c": [2, 3, 4, 5]}
    assert group_changes(before, after) == {
        "joined": ["c"],
        "left": ["b"],
        "moved": {
            2: {"from": "a", "to": "c"},
            3: {"from": "a", "to": "c"},
            4: {"from": "b", "to": "c"},
            5: {"from": "b", "to": "c"},
        },
    }
    assert group_changes(after, after) == {"joined": [], "left": [], "moved": {}}


def test_consumer_read_ahead_is_bounded_by_the_prefetch_setting() -> None:
    from streaming.kafka.config import MESSAGE_MAX_BYTES, consumer_config, prefetch_config
    from streaming.settings import Settings

    config = consumer_config(Settings(), "g", prefetch_mb=64)
    assert config["queued.max.messages.kbytes"] == 64 * 1024
    # The byte bound is the one that binds: six partitions' floors of ~70-byte readings hold
    # more than it (a small floor made small fetches: 230,000 readings/s instead of 555,000) ...
    assert 6 * config["queued.min.messages"] * 70 >= 64 * 2**20
    # ... and one fetch response adds at most the bound again, yet takes any message.
    assert MESSAGE_MAX_BYTES <= config["fetch.max.bytes"] <= 64 * 2**20
    assert prefetch_config(1)["fetch.max.bytes"] == MESSAGE_MAX_BYTES
    with pytest.raises(ValueError):
        prefetch_config(0)
