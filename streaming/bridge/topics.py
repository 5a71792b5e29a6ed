"""MQTT topics and payloads -> contract readings (pure: no broker, no Kafka).

Plain topics: `factory/{line_id}/{machine_id}/{metric}`. The topic names the machine, its line
and the metric; the payload carries the reading, in one of three forms (docs/mqtt.md):

1. a bare number: `71.25`;
2. a JSON object with some of the contract's fields: `{"value": 71.25, "ts": 1789999999000,
   "seq": 4711}`;
3. a full contract reading (docs/events.md, JSON form).

What is filled in when the payload leaves it out:

| field | from |
|---|---|
| `line_id`, `machine_id`, `metric` | the topic (a payload that repeats them must agree) |
| `unit` | the metric's canonical unit |
| `machine_type` | `SENSOR` |
| `ts` | the time the bridge received the message |
| `seq` | `ts * 16 + the metric's ordinal (0..9)`: deterministic from `ts` and the topic |
| `event_id` | `{machine_id}:{seq}` |
| `status_code`, `quality` | `0`, `GOOD` |

Identity across redelivery: a message the broker redelivers after a bridge crash must become the
same `event_id`. It does whenever the payload has `seq`, or `ts` (then `seq` is derived from it).
Only a payload with neither (a bare number, or an object with `value` alone) is stamped with
the receive time, so its redelivered copy gets a new `event_id`: devices that need exact
deduplication send `seq` or `ts`.

This module turns a message into a record dict (the 11 fields, JSON types) or a `Rejection`
for what only MQTT can get wrong (payload not JSON or a number, a payload contradicting its
topic, a field of the wrong type). The contract's own rules (ranges, ids, units, time window)
are applied afterwards by the contract's batch validator, so they are never restated here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streaming.events.model import MAX_PAYLOAD_BYTES, UNITS, MachineType, Metric, Quality
from streaming.events.reasons import Reason

DEFAULT_ROOT = "factory"  # the first topic level(s); OT_MQTT_TOPIC_ROOT sets another
METRIC_ORDINAL = {str(m): i for i, m in enumerate(Metric)}
SEQ_PER_MS = 16  # derived seq = ts * 16 + metric ordinal: one id per machine, metric and ms
DEFAULT_MACHINE_TYPE = str(MachineType.SENSOR)
DEFAULT_QUALITY = str(Quality.GOOD)
_MACHINE_TYPES = frozenset(str(t) for t in MachineType)
_QUALITIES = frozenset(str(q) for q in Quality)
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# The one reason only the bridge gives (the others are the contract's `Reason` codes): the topic
# is not the plain layout, or the payload names another machine, line or metric than its topic.
TOPIC_MISMATCH = "TOPIC_MISMATCH"
_INT_FIELDS = {"ts": INT64, "seq": INT64, "status_code": INT32}


@dataclass(frozen=True, slots=True)
class Bad:
    """A message that cannot become a reading: the contract's reason code and a short detail."""

    reason: str  # a `Reason` code, or TOPIC_MISMATCH
    detail: str


@dataclass(frozen=True, slots=True)
class PlainTopic:
    line_id: str
    machine_id: str
    metric: str


@dataclass(frozen=True)
class PlainLayout:
    """`{root}/{line_id}/{machine_id}/{metric}`; `root` may span levels (`acme/plant-1`)."""

    root: str = DEFAULT_ROOT

    @property
    def filter(self) -> str:
        return f"{self.root}/+/+/+"

    def parse(self, topic: str) -> PlainTopic | Bad:
        """The topic's levels; they are checked by the contract later, except the metric, which
        must be known to fill in the unit."""
        prefix = self.root + "/"
        parts = topic[len(prefix) :].split("/") if topic.startswith(prefix) else []
        if len(parts) != 3:
            layout = f"{self.root}/line/machine/metric"
            return Bad(TOPIC_MISMATCH, f"topic {topic[:120]!r} is not {layout}")
        line_id, machine_id, metric = parts
        if metric not in METRIC_ORDINAL:
            return Bad(Reason.UNKNOWN_ENUM, f"metric={metric[:40]!r} (last topic level)")
        return PlainTopic(line_id, machine_id, metric)

    def machine_of(self, topic: str) -> str:
        """The machine a topic names (the Kafka key of its dead letters), or the topic itself."""
        where = self.parse(topic)
        if isinstance(where, PlainTopic):
            return where.machine_id
        parts = topic.split("/")
        return parts[-2] if len(parts) >= 2 else topic[:200]


def readings_from_message(
    topic: str, payload: bytes, received_ms: int, layout: PlainLayout
) -> list[dict[str, Any] | Bad]:
    """Every reading one MQTT message holds (one for a plain topic), or why it holds none.
    Never raises: a message that trips anything unforeseen is rejected alone, not redelivered
    forever to a bridge that crashes on it."""
    try:
        return [reading_from_plain(topic, payload, received_ms, layout)]
    except Exception as exc:
        return [Bad(Reason.INVALID_JSON, f"unreadable payload: {type(exc).__name__}")]


def derived_seq(ts: int, metric: str) -> int:
    return ts * SEQ_PER_MS + METRIC_ORDINAL[metric]


def reading_from_plain(
    topic: str, payload: bytes, received_ms: int, layout: PlainLayout
) -> dict[str, Any] | Bad:
    """One plain-topic message -> a record dict of the 11 contract fields, or why not."""
    where = layout.parse(topic)
    if isinstance(where, Bad):
        return where
    body = _payload(payload)
    if isinstance(body, Bad):
        return body
    if not isinstance(body, dict):
        body = {"value": body}
    for name, expected in (
        ("line_id", where.line_id),
        ("machine_id", where.machine_id),
        ("metric", where.metric),
    ):
        if name in body and body[name] != expected:
            return Bad(
                TOPIC_MISMATCH,
                f"payload {name}={str(body[name])[:64]!r}, topic says {expected[:64]!r}",
            )
    return complete_reading(
        body,
        machine_id=where.machine_id,
        line_id=where.line_id,
        metric=where.metric,
        received_ms=received_ms,
    )


def _payload(payload: bytes) -> Any:
    """The payload as JSON (object or number), or the reason it is neither."""
    if not payload:
        return Bad(Reason.EMPTY, "empty payload")
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Bad(Reason.TOO_LARGE, f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        return Bad(Reason.INVALID_JSON, f"not JSON or a number: {str(exc)[:100]}")
    except RecursionError:
        return Bad(Reason.INVALID_JSON, "JSON nested too deeply")
    if isinstance(body, dict) or (isinstance(body, int | float) and not isinstance(body, bool)):
        return body
    kind = type(body).__name__
    return Bad(Reason.INVALID_JSON, f"a JSON {kind} is neither a reading object nor a number")


def complete_reading(
    body: dict[str, Any], *, machine_id: str, line_id: str, metric: str, received_ms: int
) -> dict[str, Any] | Bad:
    """Fill in what the payload leaves out (see the module docstring) and check JSON types, so
    the result is always encodable as Avro (the contract's rules are checked afterwards)."""
    value = body.get("value")
    if value is None:
        return Bad(Reason.MISSING_FIELD, "no field 'value'")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Bad(Reason.BAD_TYPE, f"value is a {type(value).__name__}, not a number")
    try:
        value = float(value)
    except OverflowError:
        value = float("inf")
    for name, (lo, hi) in _INT_FIELDS.items():
        v = body.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            return Bad(Reason.BAD_TYPE, f"{name} is a {type(v).__name__}, not an integer")
        if not lo <= v <= hi:
            return Bad(Reason.BAD_TYPE, f"{name}={v} outside its integer range")
    ts = body.get("ts")
    if ts is None:
        ts = received_ms
    seq = body.get("seq")
    if seq is None:
        seq = derived_seq(ts, metric)
        if not INT64[0] <= seq <= INT64[1]:
            return Bad(Reason.BAD_TYPE, f"ts={ts} too large to derive seq from")
    record = {
        "event_id": body.get("event_id", f"{machine_id}:{seq}"),
        "machine_id": machine_id,
        "machine_type": body.get("machine_type", DEFAULT_MACHINE_TYPE),
        "line_id": line_id,
        "metric": metric,
        "unit": body.get("unit", UNITS[Metric(metric)]),
        "value": value,
        "ts": ts,
        "seq": seq,
        "status_code": body.get("status_code", 0),
        "quality": body.get("quality", DEFAULT_QUALITY),
    }
    for name in ("event_id", "machine_id", "line_id", "unit", "machine_type", "quality"):
        text = record[name]
        if not isinstance(text, str):
            return Bad(Reason.BAD_TYPE, f"{name} is a {type(text).__name__}, not a string")
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
                return Bad(Reason.INVALID_JSON, f"{name} is not valid Unicode")
    if record["machine_type"] not in _MACHINE_TYPES:
        return Bad(Reason.UNKNOWN_ENUM, f"machine_type={record['machine_type'][:40]!r}")
    if record["quality"] not in _QUALITIES:
        return Bad(Reason.UNKNOWN_ENUM, f"quality={record['quality'][:40]!r}")
    return record
