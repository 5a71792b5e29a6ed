"""The MQTT 5 packets of the bridge's client, checked against the standard's byte layouts and
against paho-mqtt's own encoder (the reference client devices use)."""

from __future__ import annotations

import struct

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from streaming.bridge import protocol as p
from streaming.bridge.client import MqttAddress


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 268_435_455])
def test_variable_byte_integers_round_trip_with_their_standard_lengths(value: int) -> None:
    raw = p.encode_varint(value)
    assert len(raw) == 1 + (value >= 128) + (value >= 16_384) + (value >= 2_097_152)
    assert p.decode_varint(raw, 0, len(raw)) == (value, len(raw))
    assert p.decode_varint(raw[:-1], 0, len(raw) - 1) is None  # cut: wait for more bytes


def test_a_five_byte_length_is_a_protocol_error() -> None:
    with pytest.raises(p.ProtocolError):
        p.decode_varint(b"\xff\xff\xff\xff\x01", 0, 5)


def test_split_packets_keeps_a_partial_packet_for_the_next_read() -> None:
    a = p.publish_packet("factory/l/m/temperature", b"71.5", packet_id=1)
    b = p.publish_packet("factory/l/m/pressure", b"x" * 300, packet_id=2)  # 2-byte length
    data = a + b
    for cut in range(len(data) + 1):
        packets, used = p.split_packets(data[:cut])
        complete = [x for x in (a, a + b) if len(x) <= cut]
        assert used == (len(complete[-1]) if complete else 0), cut
        assert len(packets) == len(complete)
    packets, used = p.split_packets(data)
    decoded = [p.decode_publish(data, *packet) for packet in packets]
    assert [(m.topic, m.payload, m.packet_id, m.qos) for m in decoded] == [
        ("factory/l/m/temperature", b"71.5", 1, 1),
        ("factory/l/m/pressure", b"x" * 300, 2, 1),
    ]


def test_publish_from_paho_with_properties_and_flags_decodes() -> None:
    """A PUBLISH as a paho device sends it (MQTT 5, with properties), as the broker forwards it."""
    from paho.mqtt.client import MQTTv5
    from paho.mqtt.packettypes import PacketTypes as PT

    props = Properties(PT.PUBLISH)
    props.UserProperty = ("ts", "1790000000000")
    props.ContentType = "application/json"
    props.MessageExpiryInterval = 60
    topic = b"factory/line-a/press-07/temperature"
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", 4242) + props.pack()
    body += b'{"value": 1}'
    first = 0x30 | 0x08 | (1 << 1)  # PUBLISH, DUP, QoS 1
    raw = bytes([first]) + p.encode_varint(len(body)) + body
    (packet,), used = p.split_packets(raw)
    assert used == len(raw) and MQTTv5 == 5
    message = p.decode_publish(raw, *packet)
    assert (message.topic, message.payload, message.packet_id, message.qos, message.dup) == (
        "factory/line-a/press-07/temperature",
        b'{"value": 1}',
        4242,
        1,
        True,
    )


def test_qos0_publish_has_no_packet_id() -> None:
    raw = p.publish_packet("a/b", b"1", qos=0)
    (packet,), _ = p.split_packets(raw)
    message = p.decode_publish(raw, *packet)
    assert (message.packet_id, message.qos, message.payload) == (0, 0, b"1")


def test_pubacks_are_four_bytes_each_in_the_given_order() -> None:
    assert p.puback_packets([1, 258, 65_535]) == bytes.fromhex("40020001400201024002ffff")


def test_connect_packet_asks_for_a_persistent_session() -> None:
    raw = p.connect_packet(
        "ot-bridge", keepalive=30, clean_start=False, session_expiry=3600, receive_maximum=50_000
    )
    (packet,), _ = p.split_packets(raw)
    first, start, stop = packet
    body = raw[start:stop]
    assert first == 0x10
    assert body[:7] == b"\x00\x04MQTT\x05"
    assert body[7] == 0x00  # no clean start, no will, no credentials
    assert struct.unpack("!H", body[8:10]) == (30,)
    props, pos = p.decode_properties(body, 10, len(body))
    assert props == {p.RECEIVE_MAXIMUM: 50_000, p.SESSION_EXPIRY_INTERVAL: 3600}
    assert body[pos:] == b"\x00\x09ot-bridge"


def test_connect_packet_carries_credentials_from_the_url() -> None:
    address = MqttAddress.from_url("mqtt://bridge%40plant:s3cret@broker:1884")
    assert (address.host, address.port, address.username, address.password) == (
        "broker",
        1884,
        "bridge@plant",
        "s3cret",
    )
    raw = p.connect_packet("c", username=address.username, password=address.password)
    assert raw[2 + 7] & 0xC0 == 0xC0
    assert raw.endswith(b"\x00\x0cbridge@plant\x00\x06s3cret")
    assert MqttAddress.from_url("mqtt://h").port == 1883
    with pytest.raises(ValueError):
        MqttAddress.from_url("tcp://h:1")


def test_subscribe_packet_asks_for_qos1_without_retained_messages() -> None:
    raw = p.subscribe_packet(7, ["factory/+/+/+"], qos=1)
    assert raw[0] == 0x82
    (packet,), _ = p.split_packets(raw)
    _, start, stop = packet
    body = raw[start:stop]
    assert body[:3] == b"\x00\x07\x00"  # packet id 7, no properties
    assert body[3:] == b"\x00\x0dfactory/+/+/+" + bytes([0x01 | (2 << 4)])


def test_connack_suback_puback_and_disconnect_decode() -> None:
    props = Properties(PacketTypes.CONNACK)
    props.ReceiveMaximum = 100
    props.AssignedClientIdentifier = "x"
    connack = p.decode_connack(b"\x01\x00" + props.pack())
    assert connack.session_present and connack.reason == 0 and connack.receive_maximum == 100
    assert p.decode_connack(b"\x00\x87\x00").reason == 0x87
    assert p.decode_suback(b"\x00\x01\x00\x01\x87") == (1, [0x01, 0x87])
    assert p.decode_puback(b"\x00\x05") == (5, 0)
    assert p.decode_puback(b"\x00\x05\x10\x00") == (5, 0x10)
    reason = Properties(PacketTypes.DISCONNECT)
    reason.ReasonString = "taken over"
    assert p.decode_disconnect(b"\x8e" + reason.pack()) == (0x8E, "taken over")
    assert p.reason_name(0x8E) == "SESSION_TAKEN_OVER"
