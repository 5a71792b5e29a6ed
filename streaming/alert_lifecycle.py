"""The alert record and its lifecycle in Redis: the one place both the state writer (open, clear,
escalate) and `ot api` (acknowledge, assign, clear by hand) change an alert.

ThingsBoard's alarm model: an alert is ACTIVE or CLEARED and, independently, UNACKnowledged or
ACKnowledged (`status` = `ACTIVE_UNACK`, `ACTIVE_ACK`, `CLEARED_UNACK`, `CLEARED_ACK`), with who and
when for each transition, an assignee, and a severity that rises one level when it stays
unacknowledged too long (escalation).

The record of an alert is its latest event: the fields of the state writer's `opened` event plus
the lifecycle fields below, with `event` naming the last transition, `at_ms` when and `by` who
(the API key's name; null for the platform itself). Open alerts live in `alerts:active`, cleared
ones in `alerts:cleared` (capped, oldest cleared dropped first); every transition is pushed, as
the new record, onto `alerts:log`, the partition's alert outbox (the state writer publishes it to
the `alerts` topic) and the change feed.

Escalation is indexed: per Kafka partition, a sorted set holds the unacknowledged open alerts by
the time they started waiting (`created_ms`, then `escalated_ms`); opening adds, acknowledging and
clearing remove, and the escalation timer reads only the entries that are due, so its cost per
tick does not grow with the number of open alerts.

Every transition is one Lua script, so it is atomic against the others and against the state
writer's batch transaction (the scripts run inside its MULTI/EXEC): two concurrent acks make one
transition, a clear never loses an ack, and a repeated request changes nothing (`unchanged`).
The scripts re-encode records with their own JSON encoder (doubles with 17 digits: Redis's
cjson keeps only 14, which would alter reading values).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from streaming.consumers.alerting import Severity
from streaming.redis_keys import RedisKeys

ALERT_LOG_CAP = 10_000  # events kept in alerts:log
ALERT_HISTORY_CAP = 10_000  # cleared alerts kept in alerts:cleared


class AlertStatus(StrEnum):
    ACTIVE_UNACK = "ACTIVE_UNACK"
    ACTIVE_ACK = "ACTIVE_ACK"
    CLEARED_UNACK = "CLEARED_UNACK"
    CLEARED_ACK = "CLEARED_ACK"


class Transition(StrEnum):
    """What a lifecycle script did: `changed` (a new event), `unchanged` (already so: the
    request is answered with the same state), `missing` (no such alert), `not-allowed` (a manual
    clear of an alert whose rule does not allow it)."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"
    MISSING = "missing"
    NOT_ALLOWED = "not-allowed"


def opened_record(
    event: Mapping[str, Any], *, line_id: str | None, manual_clear: bool, now_ms: int
) -> dict[str, Any]:
    """The record of a newly opened alert: the `opened` event plus the lifecycle fields.
    `created_ms` is the platform's clock when the alert opened (escalation counts from it;
    `opened_ms` is the device's clock)."""
    return {
        **event,
        "line_id": line_id,
        "manual_clear": manual_clear,
        "status": str(AlertStatus.ACTIVE_UNACK),
        "acknowledged": False,
        "ack_by": None,
        "ack_ms": None,
        "ack_note": None,
        "assignee": None,
        "assigned_by": None,
        "assigned_ms": None,
        "cleared_by": None,
        "original_severity": event["severity"],
        "escalations": 0,
        "escalated_ms": None,
        "created_ms": now_ms,
        "at_ms": now_ms,
        "by": None,
    }


def encode_record(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def decode_record(raw: bytes | str) -> dict[str, Any]:
    """A record from Redis; `value`/`threshold` as floats (the scripts write 150.0 as 150)."""
    record: dict[str, Any] = json.loads(raw)
    for name in ("value", "threshold"):
        if isinstance(record.get(name), int):
            record[name] = float(record[name])
    return record


_COMMON = """
local NULL = cjson.null
local function val(x) if x == NULL then return nil end return x end
local function enc(v)
  local t = type(v)
  if t == 'string' then return cjson.encode(v) end
  if t == 'number' then
    if v == math.floor(v) and math.abs(v) < 9007199254740992 then
      return string.format('%.0f', v)
    end
    return string.format('%.17g', v)
  end
  if t == 'boolean' then return v and 'true' or 'false' end
  return 'null'
end
local function encode(rec)
  local parts = {}
  for k, v in pairs(rec) do parts[#parts + 1] = cjson.encode(k) .. ':' .. enc(v) end
  table.sort(parts)
  return '{' .. table.concat(parts, ',') .. '}'
end
local function set_status(rec)
  rec.status = (val(rec.cleared_ms) and 'CLEARED' or 'ACTIVE')
    .. (rec.acknowledged == true and '_ACK' or '_UNACK')
end
local function partition_of(rec)
  local partition = val(rec.kafka_partition)
  if partition then return string.format('%.0f', partition) end
  return nil
end
-- the escalation index of the alert's partition: waiting since `since` (nil: not waiting)
local function index(prefix, rec, id, since)
  local partition = partition_of(rec)
  if not partition then return end
  if since then
    redis.call('ZADD', prefix .. partition, since, id)
  else
    redis.call('ZREM', prefix .. partition, id)
  end
end
-- log, outbox of the alert's Kafka partition, change feed
local function emit(log_key, feed_key, outbox_prefix, log_cap, maxlen, doc, rec)
  redis.call('LPUSH', log_key, doc)
  redis.call('LTRIM', log_key, 0, log_cap - 1)
  local partition = val(rec.kafka_partition)
  if partition then
    redis.call('RPUSH', outbox_prefix .. string.format('%.0f', partition), doc)
  end
  redis.call('XADD', feed_key, 'MAXLEN', '~', maxlen, '*', 't', 'alert',
    'm', val(rec.machine_id) or '', 'l', val(rec.line_id) or '', 'a', val(rec.alert_id) or '',
    'd', doc)
end
"""

# KEYS: active, cleared, log, changes.
# ARGV: id, record, outbox prefix, log cap, feed maxlen, escalation prefix.
OPEN_LUA = (
    _COMMON
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 0  -- the same alert again (a replay): keep the record and its lifecycle
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local rec = cjson.decode(ARGV[2])
if rec.acknowledged ~= true then
  index(ARGV[6], rec, ARGV[1], val(rec.created_ms) or val(rec.opened_ms))
end
emit(KEYS[3], KEYS[4], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[2], rec)
return 1
"""
)

# KEYS: active, cleared, cleared index, log, changes.
# ARGV: op (ack|assign|clear|auto_clear), id, now ms, by, arg (note | assignee ('' = none) |
#       cleared ms), outbox prefix, log cap, feed maxlen, history cap, escalation prefix.
TRANSITION_LUA = (
    _COMMON
    + """
local op, id, now, by, arg = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local raw = redis.call('HGET', KEYS[1], id)
local active = true
if not raw then
  raw = redis.call('HGET', KEYS[2], id)
  active = false
end
if not raw then return {'missing', ''} end
local rec = cjson.decode(raw)
local event = nil
if op == 'ack' then
  if rec.acknowledged ~= true then
    rec.acknowledged = true
    rec.ack_by = by
    rec.ack_ms = now
    if arg ~= '' then rec.ack_note = arg else rec.ack_note = NULL end
    event = 'acknowledged'
  end
elseif op == 'assign' then
  local current = val(rec.assignee)
  if arg == '' then
    if current ~= nil then
      rec.assignee = NULL
      event = 'unassigned'
    end
  elseif current ~= arg then
    rec.assignee = arg
    event = 'assigned'
  end
  if event then
    rec.assigned_by = by
    rec.assigned_ms = now
  end
elseif op == 'clear' or op == 'auto_clear' then
  if active then
    if op == 'clear' then
      if rec.manual_clear ~= true then return {'not-allowed', raw} end
      rec.cleared_ms = now
      rec.cleared_by = by
    else
      rec.cleared_ms = tonumber(arg)
      rec.cleared_by = NULL
    end
    event = 'cleared'
  end
end
if not event then return {'unchanged', raw} end
rec.event = event
rec.at_ms = now
if by ~= '' then rec.by = by else rec.by = NULL end
set_status(rec)
local doc = encode(rec)
if event == 'cleared' or event == 'acknowledged' then
  index(ARGV[10], rec, id, nil)  -- no longer waiting for an acknowledgement
end
if event == 'cleared' then
  redis.call('HDEL', KEYS[1], id)
  redis.call('HSET', KEYS[2], id, doc)
  redis.call('ZADD', KEYS[3], now, id)
  local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[9])
  if over > 0 then
    local old = redis.call('ZRANGE', KEYS[3], 0, over - 1)
    redis.call('HDEL', KEYS[2], unpack(old))
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, over - 1)
  end
elseif active then
  redis.call('HSET', KEYS[1], id, doc)
else
  redis.call('HSET', KEYS[2], id, doc)
end
emit(KEYS[4], KEYS[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], doc, rec)
return {'changed', doc}
"""
)

# KEYS: active, log, changes, escalation indexed (marker).
# ARGV: now ms, after ms, outbox prefix, log cap, feed maxlen, partitions (a,b,..), severities
#       in rising order (a,b,..), escalation prefix.
ESCALATE_LUA = (
    _COMMON
    + """
local now, after, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[8]
local order, rank = {}, {}
for s in string.gmatch(ARGV[7], '[^,]+') do
  order[#order + 1] = s
  rank[s] = #order
end
local function since_of(rec)
  return val(rec.escalated_ms) or val(rec.created_ms) or val(rec.opened_ms)
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  -- once: index the open alerts recorded before the index existed
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local rec = cjson.decode(all[i + 1])
    if rec.acknowledged ~= true then index(prefix, rec, all[i], since_of(rec)) end
  end
  redis.call('SET', KEYS[4], '1')
end
local n = 0
for p in string.gmatch(ARGV[6], '[^,]+') do
  local zkey = prefix .. p
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', zkey, '-inf', now - after)) do
    local raw = redis.call('HGET', KEYS[1], id)
    local rec = raw and cjson.decode(raw)
    local level = rec and rank[val(rec.severity) or '']
    if not rec or rec.acknowledged == true or not level or level >= #order then
      redis.call('ZREM', zkey, id)  -- gone, acknowledged, or at the top: nothing to wait for
    else
      if val(rec.original_severity) == nil then rec.original_severity = rec.severity end
      rec.severity = order[level + 1]
      rec.escalations = (val(rec.escalations) or 0) + 1
      rec.escalated_ms = now
      rec.event = 'escalated'
      rec.at_ms = now
      rec.by = NULL
      set_status(rec)
      local doc = encode(rec)
      redis.call('HSET', KEYS[1], id, doc)
      if level + 1 >= #order then
        redis.call('ZREM', zkey, id)
      else
        redis.call('ZADD', zkey, now, id)
      end
      emit(KEYS[2], KEYS[3], ARGV[3], tonumber(ARGV[4]), ARGV[5], doc, rec)
      n = n + 1
    end
  end
end
return n
"""
)


class AlertScripts:
    """The lifecycle scripts bound to one Redis client, sync (the state writer: call them with
    `client=pipe` inside its transaction) or asyncio (`ot api`: await the result)."""

    def __init__(
        self,
        client: Any,
        keys: RedisKeys,
        feed_maxlen: int,
        *,
        log_cap: int = ALERT_LOG_CAP,
        history_cap: int = ALERT_HISTORY_CAP,
    ) -> None:
        self.keys = keys
        self.feed_maxlen = feed_maxlen
        self.log_cap = log_cap
        self.history_cap = history_cap
        self._open = client.register_script(OPEN_LUA)
        self._transition = client.register_script(TRANSITION_LUA)
        self._escalate = client.register_script(ESCALATE_LUA)

    def open(self, record: Mapping[str, Any], pipe: Any = None) -> Any:
        """Record a newly opened alert (nothing if that id is known: a replay)."""
        k = self.keys
        return self._open(
            keys=[k.alerts_active, k.alerts_cleared, k.alerts_log, k.changes],
            args=[
                record["alert_id"],
                encode_record(record),
                k.outbox_prefix,
                self.log_cap,
                self.feed_maxlen,
                k.escalation_prefix,
            ],
            client=pipe,
        )

    def transition(
        self, op: str, alert_id: str, now_ms: int, by: str = "", arg: str = "", pipe: Any = None
    ) -> Any:
        """`op` is ack (arg: note), assign (arg: assignee, '' unassigns), clear (by hand) or
        auto_clear (the state writer; arg: cleared_ms). Result: [Transition, record JSON]."""
        k = self.keys
        return self._transition(
            keys=[
                k.alerts_active,
                k.alerts_cleared,
                k.alerts_cleared_index,
                k.alerts_log,
                k.changes,
            ],
            args=[
                op,
                alert_id,
                now_ms,
                by,
                arg,
                k.outbox_prefix,
                self.log_cap,
                self.feed_maxlen,
                self.history_cap,
                k.escalation_prefix,
            ],
            client=pipe,
        )

    def escalate(self, now_ms: int, after_ms: int, partitions: Sequence[int]) -> Any:
        """Raise by one severity the unacknowledged active alerts of these Kafka partitions that
        waited `after_ms` since they opened (or last rose), read from the escalation index (only
        the due entries). Result: how many rose."""
        k = self.keys
        return self._escalate(
            keys=[k.alerts_active, k.alerts_log, k.changes, k.escalation_indexed],
            args=[
                now_ms,
                after_ms,
                k.outbox_prefix,
                self.log_cap,
                self.feed_maxlen,
                ",".join(str(p) for p in partitions),
                ",".join(str(s) for s in Severity),
                k.escalation_prefix,
            ],
        )


def transition_result(result: Sequence[Any]) -> tuple[Transition, dict[str, Any] | None]:
    """The (Transition, record) a transition script answered."""
    outcome = Transition(result[0].decode() if isinstance(result[0], bytes) else result[0])
    raw = result[1]
    return outcome, decode_record(raw) if raw else None
