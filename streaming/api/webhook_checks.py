"""Validate webhook readings with the contract's batch validator and turn the valid ones into the
Avro wire format the lander reads (the same bytes the simulator produces).

`check_requests` is pure: the payloads of several requests in, one `Checked` per request out.
`CoalescingChecker` feeds it: every request whose body is complete within the same turn of the
event loop is validated in one `decode_batch` call. The validator and the encoder cost about a
millisecond per call whatever the batch size and microseconds per reading, so under load many
single-reading requests share that fixed cost instead of each paying it.
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


class CoalescingChecker:
    """Validates the requests that are ready in the same event-loop turn together."""

    def __init__(self, max_future_ms: int, max_age_ms: int) -> None:
        self.max_future_ms = max_future_ms
        self.max_age_ms = max_age_ms
        self._waiting: list[tuple[Sequence[bytes], asyncio.Future[Checked]]] = []
        self.calls = 0
        self.requests = 0

    async def check(self, payloads: Sequence[bytes]) -> Checked:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Checked] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._run)
        self._waiting.append((payloads, future))
        return await future

    def _run(self) -> None:
        waiting, self._waiting = self._waiting, []
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
