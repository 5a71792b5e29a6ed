"""The consumer runtime's pure parts: the breaker's backoff and what counts as a dead client."""

from __future__ import annotations

import random

from confluent_kafka import KafkaError

from streaming.kafka.runtime import Breaker, is_fatal


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
