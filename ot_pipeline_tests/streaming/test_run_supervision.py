"""`make run`'s restart policy: backoff doubling to a ceiling, reset after health, give up on a
crash loop (pure: the supervised run itself is in test_run.py)."""

from __future__ import annotations

from streaming.run import Restarts


def test_backoff_doubles_to_the_ceiling_and_resets_after_a_minute_of_health():
    policy = Restarts(crash_limit=100)
    now = 0.0
    delays = []
    for _ in range(7):
        delay = policy.exited(now, lived=2)
        assert delay is not None
        delays.append(delay)
        now += 100  # outside the crash window: only the backoff grows
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert policy.exited(now + 100, lived=61) == 1  # healthy for a minute: from 1 s again


def test_five_exits_within_two_minutes_give_up():
    policy = Restarts()
    assert [policy.exited(t, lived=1) for t in (0, 2, 5, 10)] == [1, 2, 4, 8]
    assert policy.exited(30, lived=1) is None


def test_exits_spread_over_more_than_the_window_keep_restarting():
    policy = Restarts()
    for t in (0, 40, 80, 120, 160, 200, 240):
        assert policy.exited(t, lived=30) is not None
