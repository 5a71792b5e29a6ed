"""Per-key rate limits: two token buckets (requests/s and readings/s) kept in Redis, so every
gateway process behind a load balancer draws from the same buckets.

One Lua script refills both buckets from the time elapsed (Redis's own clock: the processes need
not agree on the time), then takes the request's cost from both or from neither. A refused
request learns how long to wait until both buckets hold its cost (`Retry-After`).

The requests that ask in the same event-loop turn share one pipelined round trip: a round trip
per request cost a third of the single-reading throughput (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio as aioredis

from streaming.redis_keys import RedisKeys

# KEYS[1] the key's bucket hash. ARGV: per bucket (requests, then readings) rate/s, capacity,
# cost. A rate of 0 means "no limit". Returns the wait in ms (0 = taken).
SCRIPT = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'req', 'rd', 'ts')
local last = tonumber(state[3]) or now
local elapsed = math.max(0, now - last) / 1000
local level, wait, ttl = {}, 0, 1000
for i = 0, 1 do
  local rate, cap, cost = tonumber(ARGV[i*3+1]), tonumber(ARGV[i*3+2]), tonumber(ARGV[i*3+3])
  local held = tonumber(state[i+1]) or cap
  if rate > 0 then
    held = math.min(cap, held + elapsed * rate)
    if held < cost then wait = math.max(wait, (cost - held) / rate) end
    ttl = math.max(ttl, math.ceil(cap / rate * 1000))
  end
  level[i+1] = held
end
if wait == 0 then
  for i = 0, 1 do
    if tonumber(ARGV[i*3+1]) > 0 then level[i+1] = level[i+1] - tonumber(ARGV[i*3+3]) end
  end
end
redis.call('HSET', KEYS[1], 'req', tostring(level[1]), 'rd', tostring(level[2]), 'ts', now)
redis.call('PEXPIRE', KEYS[1], ttl + 1000)
return math.ceil(wait * 1000)
"""


@dataclass(frozen=True)
class Limits:
    requests_per_second: float
    readings_per_second: float
    burst_seconds: float
    max_readings: int

    @property
    def request_capacity(self) -> float:
        return max(1.0, self.requests_per_second * self.burst_seconds)

    @property
    def reading_capacity(self) -> float:
        # A request of the largest allowed size must be able to pass at all.
        return max(float(self.max_readings), self.readings_per_second * self.burst_seconds)


class RateLimiter:
    def __init__(self, client: aioredis.Redis, prefix: str, limits: Limits) -> None:
        self.client = client
        self.keys = RedisKeys(prefix)
        self.limits = limits
        self._script = client.register_script(SCRIPT)
        self._waiting: list[tuple[str, int, int, asyncio.Future[float]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def unlimited(self) -> bool:
        return self.limits.requests_per_second <= 0 and self.limits.readings_per_second <= 0

    async def take(self, key_name: str, requests: int, readings: int) -> float:
        """Take the cost from both buckets of `key_name`; 0.0 if taken, else seconds to wait.
        Raises what Redis raised (the caller refuses the request)."""
        if self.unlimited:
            return 0.0
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._start)
        self._waiting.append((key_name, requests, readings, future))
        return await future

    def _start(self) -> None:
        waiting, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._run(waiting))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _run(self, waiting: list[tuple[str, int, int, asyncio.Future[float]]]) -> None:
        lim = self.limits
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key_name, requests, readings, _ in waiting:
                    await self._script(
                        keys=[self.keys.ratelimit(key_name)],
                        args=[
                            lim.requests_per_second,
                            lim.request_capacity,
                            requests,
                            lim.readings_per_second,
                            lim.reading_capacity,
                            readings,
                        ],
                        client=pipe,
                    )
                results = await pipe.execute()
        except Exception as exc:
            for *_, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), wait_ms in zip(waiting, results, strict=True):
            if not future.done():
                future.set_result(int(wait_ms) / 1000.0)
