"""MQTT 5 packets: the few the bridge and the simulator need, encoded and decoded in bulk.

Why not paho-mqtt: measured on this machine (Mosquitto 2.0, QoS 1, manual acks), paho's receive
loop drains about 13,000 messages/s and publishes about 7,000/s: it reads every packet with three
`recv` calls after a `select`, and writes every PUBACK with its own `send`. The bridge needs
20,000 messages/s QoS 1 on two cores shared with the broker, Kafka and the publishers. The packets
involved are few and simple, so this module parses whatever a `recv` of 256 KiB returned in one
pass and acknowledges a whole batch with one `send`. paho stays the reference client in the tests:
every test publishes with it, so a device with any standard client is what is tested.

Covered (MQTT 5.0, OASIS standard): CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH (QoS 0 and 1),
PUBACK, PINGREQ/PINGRESP, DISCONNECT. Not covered: QoS 2, AUTH, topic aliases (never enabled:
the client sends no Topic Alias Maximum, so the server must not use them). Pure functions over
bytes; the socket side is `streaming.bridge.client`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

PROTOCOL_LEVEL = 5
MAX_REMAINING_LENGTH = 268_435_455


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    SUBSCRIBE = 8
    SUBACK = 9
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class ProtocolError(ValueError):
    """Bytes that are not a well-formed MQTT 5 packet (the connection cannot continue)."""


# Property identifiers used here (MQTT 5.0, 2.2.2.2), and the wire type of every identifier, so
# that unknown properties can be skipped.
SESSION_EXPIRY_INTERVAL = 0x11
RECEIVE_MAXIMUM = 0x21
MAXIMUM_QOS = 0x24
MAXIMUM_PACKET_SIZE = 0x27
ASSIGNED_CLIENT_ID = 0x12
REASON_STRING = 0x1F
SERVER_KEEP_ALIVE = 0x13
USER_PROPERTY = 0x26
_BYTE, _INT2, _INT4, _VARINT, _STRING, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES = {
    0x01: _BYTE, 0x02: _INT4, 0x03: _STRING, 0x08: _STRING, 0x09: _BINARY, 0x0B: _VARINT,
    0x11: _INT4, 0x12: _STRING, 0x13: _INT2, 0x15: _STRING, 0x16: _BINARY, 0x17: _BYTE,
    0x18: _INT4, 0x19: _BYTE, 0x1A: _STRING, 0x1C: _STRING, 0x1F: _STRING, 0x21: _INT2,
    0x22: _INT2, 0x23: _INT2, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _INT4, 0x28: _BYTE,
    0x29: _BYTE, 0x2A: _BYTE,
}  # fmt: skip

PINGREQ = b"\xc0\x00"
DISCONNECT_NORMAL = b"\xe0\x00"  # reason 0x00: normal disconnection, the session is kept

# Reason codes that matter to the callers (everything >= 0x80 is a failure).
REASON_NAMES = {
    0x00: "SUCCESS",
    0x01: "GRANTED_QOS_1",
    0x10: "NO_MATCHING_SUBSCRIBERS",
    0x80: "UNSPECIFIED_ERROR",
    0x81: "MALFORMED_PACKET",
    0x82: "PROTOCOL_ERROR",
    0x83: "IMPLEMENTATION_SPECIFIC_ERROR",
    0x84: "UNSUPPORTED_PROTOCOL_VERSION",
    0x85: "CLIENT_IDENTIFIER_NOT_VALID",
    0x86: "BAD_USER_NAME_OR_PASSWORD",
    0x87: "NOT_AUTHORIZED",
    0x88: "SERVER_UNAVAILABLE",
    0x89: "SERVER_BUSY",
    0x8B: "SERVER_SHUTTING_DOWN",
    0x8D: "KEEP_ALIVE_TIMEOUT",
    0x8E: "SESSION_TAKEN_OVER",
    0x8F: "TOPIC_FILTER_INVALID",
    0x90: "TOPIC_NAME_INVALID",
    0x93: "RECEIVE_MAXIMUM_EXCEEDED",
    0x95: "PACKET_TOO_LARGE",
    0x97: "QUOTA_EXCEEDED",
    0x99: "PAYLOAD_FORMAT_INVALID",
    0x9E: "SHARED_SUBSCRIPTIONS_NOT_SUPPORTED",
}


def reason_name(code: int) -> str:
    return REASON_NAMES.get(code, f"0x{code:02X}")


# -- primitives ------------------------------------------------------------------------------------
def encode_varint(value: int) -> bytes:
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes | bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """(value, position after it), or None when `data[pos:end]` ends inside it."""
    value, shift = 0, 0
    for i in range(4):
        if pos + i >= end:
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise ProtocolError("variable byte integer longer than 4 bytes")


def _string(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def _binary(raw: bytes) -> bytes:
    if len(raw) > 0xFFFF:
        raise ValueError("binary field longer than 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + encode_varint(len(body)) + body


def _properties(props: Iterable[tuple[int, int]]) -> bytes:
    """Integer-valued properties (all this client sends), with their length prefix."""
    out = bytearray()
    for ident, value in props:
        kind = _PROPERTY_TYPES[ident]
        out.append(ident)
        if kind == _BYTE:
            out.append(value)
        elif kind == _INT2:
            out += struct.pack("!H", value)
        elif kind == _INT4:
            out += struct.pack("!I", value)
        else:  # pragma: no cover - only integer properties are sent
            raise ValueError(f"property 0x{ident:02X} is not an integer property")
    return encode_varint(len(out)) + bytes(out)


def decode_properties(data: bytes | bytearray, pos: int, end: int) -> tuple[dict[int, object], int]:
    """Properties at `pos` (length-prefixed) -> ({identifier: value}, position after them).
    User properties are collected as a list of (name, value) pairs."""
    parsed = decode_varint(data, pos, end)
    if parsed is None:
        raise ProtocolError("truncated property length")
    length, pos = parsed
    stop = pos + length
    if stop > end:
        raise ProtocolError("properties run past the packet")
    props: dict[int, object] = {}
    while pos < stop:
        ident = data[pos]
        pos += 1
        kind = _PROPERTY_TYPES.get(ident)
        if kind is None:
            raise ProtocolError(f"unknown property 0x{ident:02X}")
        value: object
        if kind == _BYTE:
            value, pos = data[pos], pos + 1
        elif kind == _INT2:
            (value,), pos = struct.unpack_from("!H", data, pos), pos + 2
        elif kind == _INT4:
            (value,), pos = struct.unpack_from("!I", data, pos), pos + 4
        elif kind == _VARINT:
            got = decode_varint(data, pos, stop)
            if got is None:
                raise ProtocolError("truncated property")
            value, pos = got
        elif kind in (_STRING, _BINARY):
            (n,) = struct.unpack_from("!H", data, pos)
            raw = bytes(data[pos + 2 : pos + 2 + n])
            value, pos = (raw.decode(errors="replace") if kind == _STRING else raw), pos + 2 + n
        else:  # a string pair
            (n,) = struct.unpack_from("!H", data, pos)
            name = bytes(data[pos + 2 : pos + 2 + n]).decode(errors="replace")
            pos += 2 + n
            (m,) = struct.unpack_from("!H", data, pos)
            text = bytes(data[pos + 2 : pos + 2 + m]).decode(errors="replace")
            pos += 2 + m
            pairs = props.setdefault(ident, [])
            assert isinstance(pairs, list)
            pairs.append((name, text))
            continue
        props[ident] = value
    if pos != stop:
        raise ProtocolError("properties run past their length")
    return props, stop


# -- client -> server ----------------------------------------------------------------------------
def connect_packet(
    client_id: str,
    *,
    keepalive: int = 30,
    clean_start: bool = True,
    session_expiry: int = 0,
    receive_maximum: int = 65_535,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT. `session_expiry` > 0 with `clean_start=False` makes a persistent session: the
    broker keeps the subscriptions and queues QoS 1 messages while the client is away."""
    flags = (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    flags |= 0x02 if clean_start else 0
    props = [(RECEIVE_MAXIMUM, receive_maximum)]
    if session_expiry:
        props.append((SESSION_EXPIRY_INTERVAL, session_expiry))
    body = bytearray(_string("MQTT"))
    body += bytes([PROTOCOL_LEVEL, flags]) + struct.pack("!H", keepalive)
    body += _properties(props)
    body += _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _binary(password.encode())
    return _packet(PacketType.CONNECT << 4, bytes(body))


def subscribe_packet(
    packet_id: int, filters: Sequence[str], qos: int = 1, retain_handling: int = 2
) -> bytes:
    """SUBSCRIBE. Retain handling 2: retained messages are not sent at subscribe time (a retained
    reading is old state, not a new reading; one published while the bridge is away is queued
    in its session like any other)."""
    body = bytearray(struct.pack("!H", packet_id)) + _properties(())
    options = (qos & 0x03) | ((retain_handling & 0x03) << 4)
    for topic_filter in filters:
        body += _string(topic_filter) + bytes([options])
    return _packet((PacketType.SUBSCRIBE << 4) | 0x02, bytes(body))


_PUBACK = struct.Struct("!BBH")


def puback_packets(packet_ids: Iterable[int]) -> bytes:
    """PUBACKs (reason SUCCESS, which MQTT 5 lets us leave out) for many messages, as one write."""
    pack = _PUBACK.pack
    return b"".join([pack(0x40, 2, mid) for mid in packet_ids])


def publish_packet(topic: str | bytes, payload: bytes, packet_id: int = 0, qos: int = 1) -> bytes:
    """PUBLISH without properties (QoS 0 or 1, no retain)."""
    name = topic.encode() if isinstance(topic, str) else topic
    header = struct.pack("!H", len(name)) + name
    if qos:
        header += struct.pack("!H", packet_id)
    body_len = len(header) + 1 + len(payload)
    return (
        bytes([(PacketType.PUBLISH << 4) | (qos << 1)])
        + encode_varint(body_len)
        + header
        + (b"\x00" + payload)
    )


# -- server -> client ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Publish:
    """One received PUBLISH. `packet_id` is 0 for QoS 0 (nothing to acknowledge)."""

    topic: str
    payload: bytes
    packet_id: int
    qos: int
    dup: bool = False
    retain: bool = False


@dataclass(frozen=True)
class ConnAck:
    session_present: bool
    reason: int
    properties: dict[int, object] = field(default_factory=dict)

    @property
    def receive_maximum(self) -> int:
        value = self.properties.get(RECEIVE_MAXIMUM, 65_535)
        return int(value) if isinstance(value, int) else 65_535


@dataclass(frozen=True)
class Packet:
    """Any other packet: its type, flags and body bytes."""

    type: int
    flags: int
    body: bytes


def split_packets(data: bytes | bytearray) -> tuple[list[tuple[int, int, int]], int]:
    """Complete packets at the start of `data`: (first byte, body start, body end) each, and the
    number of bytes they take (a trailing partial packet is left for the next read)."""
    out: list[tuple[int, int, int]] = []
    pos, end = 0, len(data)
    while pos + 2 <= end:
        first = data[pos]
        # Fast path: a remaining length below 128 is one byte (most readings).
        length = data[pos + 1]
        if length < 0x80:
            start = pos + 2
        else:
            parsed = decode_varint(data, pos + 1, end)
            if parsed is None:
                break
            length, start = parsed
        stop = start + length
        if stop > end:
            break
        out.append((first, start, stop))
        pos = stop
    return out, pos


def decode_publish(data: bytes, first: int, start: int, stop: int) -> Publish:
    """The PUBLISH whose body is `data[start:stop]` (MQTT 5: properties before the payload)."""
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    if start + 2 > stop:
        raise ProtocolError("truncated PUBLISH")
    n = (data[start] << 8) | data[start + 1]
    pos = start + 2 + n
    topic_raw = data[start + 2 : pos]
    packet_id = 0
    if qos:
        if pos + 2 > stop:
            raise ProtocolError("truncated PUBLISH")
        packet_id = (data[pos] << 8) | data[pos + 1]
        pos += 2
    if pos >= stop:
        raise ProtocolError("truncated PUBLISH properties")
    length = data[pos]
    if length < 0x80:
        pos += 1 + length
    else:
        _, pos = decode_properties(data, pos, stop)
    if pos > stop:
        raise ProtocolError("PUBLISH properties run past the packet")
    try:
        topic = topic_raw.decode()
    except UnicodeDecodeError:
        raise ProtocolError("PUBLISH topic is not UTF-8") from None
    return Publish(
        topic, bytes(data[pos:stop]), packet_id, qos, bool(first & 0x08), bool(first & 0x01)
    )


def decode_connack(body: bytes) -> ConnAck:
    if len(body) < 2:
        raise ProtocolError("truncated CONNACK")
    props: dict[int, object] = {}
    if len(body) > 2:
        props, _ = decode_properties(body, 2, len(body))
    return ConnAck(bool(body[0] & 0x01), body[1], props)


def decode_suback(body: bytes) -> tuple[int, list[int]]:
    """(packet id, reason code per filter)."""
    if len(body) < 3:
        raise ProtocolError("truncated SUBACK")
    (packet_id,) = struct.unpack_from("!H", body, 0)
    _, pos = decode_properties(body, 2, len(body))
    return packet_id, list(body[pos:])


def decode_puback(body: bytes) -> tuple[int, int]:
    """(packet id, reason code); the reason is left out when it is SUCCESS."""
    if len(body) < 2:
        raise ProtocolError("truncated PUBACK")
    (packet_id,) = struct.unpack_from("!H", body, 0)
    return packet_id, body[2] if len(body) > 2 else 0


def decode_disconnect(body: bytes) -> tuple[int, str]:
    """(reason code, reason string) of a server DISCONNECT."""
    if not body:
        return 0, ""
    text = ""
    if len(body) > 1:
        props, _ = decode_properties(body, 1, len(body))
        text = str(props.get(REASON_STRING, ""))
    return body[0], text
