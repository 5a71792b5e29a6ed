"""The gateway's coalescing checker: requests close together share one validator call."""

from __future__ import annotations

import asyncio
import json
import time

from streaming.api.webhook_checks import CoalescingChecker


def payload(seq: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"press-07:{seq}",
            "machine_id": "press-07",
            "machine_type": "MOTOR",
            "line_id": "line-a",
            "metric": "temperature",
            "unit": "°C",
            "value": 70.0,
            "ts": int(time.time() * 1000),
            "seq": seq,
            "status_code": 0,
            "quality": "GOOD",
        }
    ).encode()


def test_single_readings_within_the_window_share_one_validator_call() -> None:
    async def scenario() -> tuple[int, list[int]]:
        checker = CoalescingChecker(300_000, 10**10, window_s=0.05)

        async def later(seq: int, delay: float) -> int:
            await asyncio.sleep(delay)
            return len((await checker.check([payload(seq)])).event_ids)

        accepted = await asyncio.gather(*(later(i, i * 0.005) for i in range(1, 5)))
        return checker.calls, list(accepted)

    calls, accepted = asyncio.run(scenario())
    assert (calls, accepted) == (1, [1, 1, 1, 1])


def test_a_request_with_enough_readings_does_not_wait_for_the_window() -> None:
    async def scenario() -> tuple[float, int]:
        checker = CoalescingChecker(300_000, 10**10, window_s=5.0, enough_readings=100)
        started = time.perf_counter()
        checked = await checker.check([payload(i) for i in range(1, 101)])
        return time.perf_counter() - started, len(checked.event_ids)

    elapsed, accepted = asyncio.run(scenario())
    assert accepted == 100 and elapsed < 1.0
