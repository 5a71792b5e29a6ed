"""Per-key rate limits: two token buckets (requests/s and readings/s) kept in Redis, so every
gateway process behind a load balancer draws from the same buckets.

One Lua script refills both buckets from the time elapsed (Redis's own clock: the processes need
not agree on the time), then takes the request's cost from both or from neither. A refused
request learns how long to wait until both buckets hold its cost (`Retry-After`).

Leases: a round trip per request cost a third of the single-reading throughput (see
docs/benchmarks.md), so a process that asks Redis also takes a *lease*, a block of
`LEASE_SECONDS` of the key's rate from both buckets, and serves the next requests of that key
from it without a round trip (until it is used up, or `LEASE_TTL_SECONDS` old: then the rest is
dropped, never given back). The script grants a lease only while both buckets stay at least
half full after it, so near the limit no tokens sit in leases and every request is decided in
Redis, exactly as without leases. Leased tokens left the shared bucket: the processes together
never admit more than the bucket allows; the most a key can be held back by leases elsewhere is
one block per process (1 % of a second's rate).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import redis.asyncio as aioredis

from streaming.redis_keys import RedisKeys

# A lease is this much of the key's rate (per bucket), dropped when unused for this long.
LEASE_SECONDS = 0.01
LEASE_TTL_SECONDS = 0.5

# KEYS[1] the key's bucket hash. ARGV: per bucket (requests, then readings) rate/s, capacity,
# cost, lease. A rate of 0 means "no limit". Returns {wait in ms (0 = taken), lease granted
# (0/1)}: the lease comes on top of the cost, only if both buckets stay half full after it.
SCRIPT = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'req', 'rd', 'ts')
local last = tonumber(state[3]) or now
local elapsed = math.max(0, now - last) / 1000
local level, wait, ttl, lease = {}, 0, 1000, 1
for i = 0, 1 do
  local rate, cap, cost = tonumber(ARGV[i*4+1]), tonumber(ARGV[i*4+2]), tonumber(ARGV[i*4+3])
  local extra = tonumber(ARGV[i*4+4])
  local held = tonumber(state[i+1]) or cap
  if rate > 0 then
    held = math.min(cap, held + elapsed * rate)
    if held < cost then wait = math.max(wait, (cost - held) / rate) end
    if extra <= 0 or held - cost - extra < cap / 2 then lease = 0 end
    ttl = math.max(ttl, math.ceil(cap / rate * 1000))
  end
  level[i+1] = held
end
if wait == 0 then
  for i = 0, 1 do
    if tonumber(ARGV[i*4+1]) > 0 then
      level[i+1] = level[i+1] - tonumber(ARGV[i*4+3]) - lease * tonumber(ARGV[i*4+4])
    end
  end
else
  lease = 0
end
redis.call('HSET', KEYS[1], 'req', tostring(level[1]), 'rd', tostring(level[2]), 'ts', now)
redis.call('PEXPIRE', KEYS[1], ttl + 1000)
return {math.ceil(wait * 1000), lease}
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

    @property
    def request_lease(self) -> int:
        return math.floor(self.requests_per_second * LEASE_SECONDS)

    @property
    def reading_lease(self) -> int:
        return math.floor(self.readings_per_second * LEASE_SECONDS)

    @property
    def leases(self) -> bool:
        """Whether a lease can serve a request at all: a whole token in every limited bucket
        (at low rates every request goes to Redis)."""
        return (self.requests_per_second <= 0 or self.request_lease >= 1) and (
            self.readings_per_second <= 0 or self.reading_lease >= 1
        )


@dataclass
class _Lease:
    """Tokens of one key this process took from Redis ahead of its requests (inf: no limit)."""

    requests: float
    readings: float
    expires: float  # event-loop time

    def take(self, requests: int, readings: int, now: float) -> bool:
        if now >= self.expires or self.requests < requests or self.readings < readings:
            return False
        self.requests -= requests
        self.readings -= readings
        return True


_Waiting = tuple[str, int, int, "asyncio.Future[float]"]


class RateLimiter:
    def __init__(self, client: aioredis.Redis, prefix: str, limits: Limits) -> None:
        self.client = client
        self.keys = RedisKeys(prefix)
        self.limits = limits
        self.round_trips = 0  # Redis round trips so far (one per event-loop turn that asked)
        self._script = client.register_script(SCRIPT)
        self._waiting: list[_Waiting] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._leases: dict[str, _Lease] = {}

    @property
    def unlimited(self) -> bool:
        return self.limits.requests_per_second <= 0 and self.limits.readings_per_second <= 0

    async def take(self, key_name: str, requests: int, readings: int) -> float:
        """Take the cost from both buckets of `key_name`; 0.0 if taken, else seconds to wait.
        Raises what Redis raised (the caller refuses the request)."""
        if self.unlimited:
            return 0.0
        loop = asyncio.get_running_loop()
        lease = self._leases.get(key_name)
        if lease is not None and lease.take(requests, readings, loop.time()):
            return 0.0
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

    async def _run(self, waiting: list[_Waiting]) -> None:
        lim = self.limits
        # One lease per key per turn: the first request of a key asks for it.
        asking: set[str] = set()
        extras: list[bool] = []
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key_name, requests, readings, _ in waiting:
                    extra = lim.leases and key_name not in asking
                    asking.add(key_name)
                    extras.append(extra)
                    await self._script(
                        keys=[self.keys.ratelimit(key_name)],
                        args=[
                            lim.requests_per_second,
                            lim.request_capacity,
                            requests,
                            lim.request_lease if extra else 0,
                            lim.readings_per_second,
                            lim.reading_capacity,
                            readings,
                            lim.reading_lease if extra else 0,
                        ],
                        client=pipe,
                    )
                self.round_trips += 1
                results = await pipe.execute()
        except Exception as exc:
            for *_, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        expires = asyncio.get_running_loop().time() + LEASE_TTL_SECONDS
        for (key_name, *_, future), (wait_ms, leased) in zip(waiting, results, strict=True):
            if int(leased):
                self._leases[key_name] = _Lease(
                    lim.request_lease if lim.requests_per_second > 0 else math.inf,
                    lim.reading_lease if lim.readings_per_second > 0 else math.inf,
                    expires,
                )
            if not future.done():
                future.set_result(int(wait_ms) / 1000.0)
