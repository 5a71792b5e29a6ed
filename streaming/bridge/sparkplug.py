"""Sparkplug B (edge gateways): `spBv1.0/{group_id}/DBIRTH|DDATA/{edge_node_id}/{device_id}`.

The payload is the Eclipse Tahu protobuf `org.eclipse.tahu.protobuf.Payload` (sparkplug_b.proto,
proto2). Its descriptor is built here in code from the fields the bridge reads, with the field
numbers of the official file, so no generated module or `protoc` is needed; fields not declared
(metadata, properties, datasets, templates, extensions) are kept as unknown fields and ignored.

Mapping to the contract (docs/mqtt.md, "Sparkplug B"):

| reading | from |
|---|---|
| `line_id` | the group id |
| `machine_id` | the device id (the edge node only routes) |
| `metric` | the last `/`-level of the metric name, lower-cased (`Motor/Temperature`) |
| `value` | the metric's numeric value (Int*/UInt* by their width and sign, Float, Double) |
| `ts` | the metric's timestamp, else the payload's, else the receive time |
| `seq` | `ts * 16 + metric ordinal`, as for plain topics (Sparkplug's own `seq` wraps at 256) |
| the rest | as for plain topics: canonical unit, `SENSOR`, status 0, `GOOD` |

A metric whose name is not a contract metric (`Node Control/Rebirth`, `Properties/Serial`…) is
not a reading and is skipped (counted as `sparkplug_skipped_metrics`). A DDATA metric that
carries only an alias is named through the DBIRTH that declared the alias; the bridge keeps that
map in memory, so after a bridge restart, aliases are unknown until the device's next DBIRTH
(those metrics are dead-lettered, payload unchanged, so they can be replayed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from streaming.bridge.topics import INT64, METRIC_ORDINAL, TOPIC_MISMATCH, Bad, complete_reading
from streaming.events.reasons import Reason

NAMESPACE = "spBv1.0"
MESSAGE_TYPES = ("DBIRTH", "DDATA")

# Sparkplug data types (sparkplug_b.proto, "Indexes of Data Types").
INT8, INT16, INT32, INT64_TYPE = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64_TYPE: 64}


def _build_payload_class() -> Any:
    F = descriptor_pb2.FieldDescriptorProto
    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    file = descriptor_pb2.FileDescriptorProto(
        name="ot_sparkplug_b.proto", package="org.eclipse.tahu.protobuf", syntax="proto2"
    )
    payload = file.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    for name, number, kind, oneof in (
        ("name", 1, F.TYPE_STRING, False),
        ("alias", 2, F.TYPE_UINT64, False),
        ("timestamp", 3, F.TYPE_UINT64, False),
        ("datatype", 4, F.TYPE_UINT32, False),
        ("is_historical", 5, F.TYPE_BOOL, False),
        ("is_transient", 6, F.TYPE_BOOL, False),
        ("is_null", 7, F.TYPE_BOOL, False),
        ("int_value", 10, F.TYPE_UINT32, True),
        ("long_value", 11, F.TYPE_UINT64, True),
        ("float_value", 12, F.TYPE_FLOAT, True),
        ("double_value", 13, F.TYPE_DOUBLE, True),
        ("boolean_value", 14, F.TYPE_BOOL, True),
        ("string_value", 15, F.TYPE_STRING, True),
        ("bytes_value", 16, F.TYPE_BYTES, True),
    ):
        f = metric.field.add(name=name, number=number, type=kind, label=opt)
        if oneof:
            f.oneof_index = 0
    payload.field.add(name="timestamp", number=1, type=F.TYPE_UINT64, label=opt)
    payload.field.add(
        name="metrics",
        number=2,
        type=F.TYPE_MESSAGE,
        label=rep,
        type_name=".org.eclipse.tahu.protobuf.Payload.Metric",
    )
    payload.field.add(name="seq", number=3, type=F.TYPE_UINT64, label=opt)
    payload.field.add(name="uuid", number=4, type=F.TYPE_STRING, label=opt)
    payload.field.add(name="body", number=5, type=F.TYPE_BYTES, label=opt)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload")
    )


Payload = _build_payload_class()


def filters(groups: tuple[str, ...] = ("+",)) -> list[str]:
    """Subscriptions: DBIRTH and DDATA of every device of the given groups (`+` = all)."""
    return [f"{NAMESPACE}/{g}/{kind}/+/+" for g in groups for kind in MESSAGE_TYPES]


def is_sparkplug(topic: str) -> bool:
    return topic.startswith(NAMESPACE + "/")


def device_of(topic: str) -> str:
    parts = topic.split("/")
    return parts[4] if len(parts) == 5 else topic[:200]


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _number(metric: Any, datatype: int | None) -> float | int | Bad:
    kind = metric.WhichOneof("value")
    if metric.is_null or kind is None:
        return Bad(Reason.MISSING_FIELD, f"metric {metric.name or metric.alias!r} has no value")
    if kind in ("int_value", "long_value"):
        raw = int(getattr(metric, kind))
        bits = _SIGNED_BITS.get(datatype or 0)
        return _signed(raw, bits) if bits else raw
    if kind in ("float_value", "double_value"):
        return float(getattr(metric, kind))
    return Bad(Reason.BAD_TYPE, f"metric {metric.name or metric.alias!r} is a {kind}, not a number")


@dataclass
class SparkplugReader:
    """Turns DBIRTH/DDATA messages into contract records; remembers each device's aliases."""

    aliases: dict[tuple[str, str, str], dict[int, tuple[str, int | None]]] = field(
        default_factory=dict
    )
    skipped_metrics: int = 0

    def readings(self, topic: str, payload: bytes, received_ms: int) -> list[dict[str, Any] | Bad]:
        parts = topic.split("/")
        if len(parts) != 5 or parts[0] != NAMESPACE or parts[2] not in MESSAGE_TYPES:
            layout = f"{NAMESPACE}/group/DDATA|DBIRTH/edge/device"
            return [Bad(TOPIC_MISMATCH, f"topic {topic[:120]!r} is not {layout}")]
        _, group, kind, edge, device = parts
        try:
            message = Payload.FromString(payload)
        except (DecodeError, RuntimeError, ValueError) as exc:
            return [Bad(Reason.UNDECODABLE, f"not a Sparkplug B payload: {str(exc)[:100]}")]
        key = (group, edge, device)
        if kind == "DBIRTH":
            self.aliases[key] = {
                int(m.alias): (m.name, int(m.datatype) if m.HasField("datatype") else None)
                for m in message.metrics
                if m.HasField("alias") and m.name
            }
        known = self.aliases.get(key, {})
        default_ts = int(message.timestamp) if message.HasField("timestamp") else received_ms
        out: list[dict[str, Any] | Bad] = []
        for m in message.metrics:
            name = m.name
            datatype = int(m.datatype) if m.HasField("datatype") else None
            if not name and m.HasField("alias"):
                name, birth_type = known.get(int(m.alias), ("", None))
                datatype = datatype if datatype is not None else birth_type
                if not name:
                    out.append(
                        Bad(
                            Reason.MISSING_FIELD,
                            f"metric alias {int(m.alias)} unknown: no DBIRTH of {device!r} "
                            "since the bridge started",
                        )
                    )
                    continue
            metric = name.rsplit("/", 1)[-1].strip().lower()
            if metric not in METRIC_ORDINAL:
                self.skipped_metrics += 1
                continue
            value = _number(m, datatype)
            if isinstance(value, Bad):
                out.append(value)
                continue
            ts = int(m.timestamp) if m.HasField("timestamp") else default_ts
            if ts > INT64[1]:
                out.append(Bad(Reason.BAD_TYPE, f"timestamp={ts} outside its integer range"))
                continue
            out.append(
                complete_reading(
                    {"value": value, "ts": ts},
                    machine_id=device,
                    line_id=group,
                    metric=metric,
                    received_ms=received_ms,
                )
            )
        return out
