"""Validate webhook readings with the contract's batch validator and turn the valid ones into the
Avro wire format the lander reads (the same bytes the simulator produces).

`check_requests` is pure: the payloads of several requests in, one `Checked` per request out.
`CoalescingChecker` feeds it: the requests that arrive within `WINDOW_S` of each other (at most
that long after the first) are validated in one `decode_batch` call. The validator and the
encoder cost about 1.5 ms per call whatever the batch size and microseconds per reading, so many
single-reading requests share that fixed cost instead of each paying it: without the window,
one process spent a whole core on 500 single-reading requests/s (docs/benchmarks.md). A request
that brings `ENOUGH_READINGS` or more (or completes such a group) is checked in the next turn,
without waiting: its fixed cost is already shared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streaming.events import Rejection, decode_batch, encode_avro_table


@dataclass
class Checked:
    """One request's outcome: the valid readings ready for Kafka, and the rejections (indices
    into that request's payload list)."""

    event_ids: list[str] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def check_requests(
    requests: Sequence[Sequence[bytes]], ingest_ms: int, *, max_future_ms: int, max_age_ms: int
) -> list[Checked]:
    payloads = [p for request in requests for p in request]
    starts = np.cumsum([0, *(len(r) for r in requests)])
    out = [Checked() for _ in requests]
    if not payloads:
        return out
    decoded = decode_batch(payloads, ingest_ms, max_future_ms=max_future_ms, max_age_ms=max_age_ms)
    for r in decoded.rejected:
        j = int(np.searchsorted(starts, r.index, side="right")) - 1
        out[j].rejected.append(Rejection(r.index - int(starts[j]), r.reason, r.detail))
    if decoded.valid.num_rows == 0:
        return out
    values = encode_avro_table(decoded.valid)
    event_ids = decoded.valid.column("event_id").to_pylist()
    machine_ids = decoded.valid.column("machine_id").to_pylist()
    order = np.argsort(decoded.valid_index, kind="stable")
    owner = np.searchsorted(starts, decoded.valid_index[order], side="right") - 1
    for row, j in zip(order.tolist(), owner.tolist(), strict=True):
        checked = out[j]
        checked.event_ids.append(event_ids[row])
        checked.keys.append(machine_ids[row].encode())
        checked.values.append(values[row])
    return out


WINDOW_S = 0.002
ENOUGH_READINGS = 100


class CoalescingChecker:
    """Validates together the requests that arrive within `window_s` of the first waiting one,
    or as soon as they hold `enough_readings`."""

    def __init__(
        self,
        max_future_ms: int,
        max_age_ms: int,
        window_s: float = WINDOW_S,
        enough_readings: int = ENOUGH_READINGS,
    ) -> None:
        self.max_future_ms = max_future_ms
        self.max_age_ms = max_age_ms
        self.window_s = window_s
        self.enough_readings = enough_readings
        self._waiting: list[tuple[Sequence[bytes], asyncio.Future[Checked]]] = []
        self._readings = 0
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False
        self.calls = 0
        self.requests = 0

    async def check(self, payloads: Sequence[bytes]) -> Checked:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Checked] = loop.create_future()
        first = not self._waiting
        self._waiting.append((payloads, future))
        self._readings += len(payloads)
        if self._readings >= self.enough_readings or self.window_s <= 0:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._soon:
                self._soon = True
                loop.call_soon(self._run)
        elif first:
            self._timer = loop.call_later(self.window_s, self._run)
        return await future

    def _run(self) -> None:
        waiting, self._waiting = self._waiting, []
        self._readings, self._timer, self._soon = 0, None, False
        if not waiting:
            return
        self.calls += 1
        self.requests += len(waiting)
        try:
            results = check_requests(
                [p for p, _ in waiting],
                int(time.time() * 1000),
                max_future_ms=self.max_future_ms,
                max_age_ms=self.max_age_ms,
            )
        except Exception as exc:  # a bug must fail these requests, not hang them
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(waiting, results, strict=True):
            if not future.done():  # the client may have gone away meanwhile
                future.set_result(result)
