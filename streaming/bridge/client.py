"""A small blocking MQTT 5 client over one TCP socket: subscribe and acknowledge in batches
(the bridge), publish QoS 1 with a window of messages in flight (the simulator, the benchmark).

Single-threaded on purpose: the caller decides when to read, when to acknowledge and when to
publish, so an acknowledgement can never overtake the Kafka confirmation it depends on.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from streaming.bridge import protocol as p

READ_CHUNK = 256 * 1024


class MqttError(RuntimeError):
    """The broker refused something, or the connection is gone; the message says which."""


class ConnectionLost(MqttError):
    pass


@dataclass(frozen=True)
class MqttAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> MqttAddress:
        """`mqtt://[user[:password]@]host[:port]` (port 1883 when left out)."""
        parts = urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ValueError(f"{url!r} is not an mqtt://host:port URL")
        return cls(
            host=parts.hostname,
            port=parts.port or 1883,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


class MqttClient:
    """One connection. `connect()` returns whether the broker resumed an existing session."""

    def __init__(
        self,
        address: MqttAddress,
        client_id: str,
        *,
        keepalive: int = 30,
        clean_start: bool = True,
        session_expiry: int = 0,
        receive_maximum: int = 65_535,
        connect_timeout: float = 10.0,
    ) -> None:
        self.address = address
        self.client_id = client_id
        self.keepalive = keepalive
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.receive_maximum = receive_maximum
        self.connect_timeout = connect_timeout
        self.sock: socket.socket | None = None
        self.buffer = bytearray()
        self.last_sent = 0.0
        self.connack: p.ConnAck | None = None
        # Publishing side: packet ids waiting for their PUBACK, and how that ended.
        self.unacked: set[int] = set()
        self.publish_window = 1
        self.next_id = 1
        self.acked = 0
        self.rejected: dict[str, int] = {}
        self._pending_out: list[bytes] = []

    # -- connection ----------------------------------------------------------------------------
    def connect(self) -> bool:
        self.close()
        try:
            sock = socket.create_connection(
                (self.address.host, self.address.port), timeout=self.connect_timeout
            )
        except OSError as exc:
            raise ConnectionLost(f"cannot reach {self.address}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        self.sock = sock
        self.buffer = bytearray()
        self._send(
            p.connect_packet(
                self.client_id,
                keepalive=self.keepalive,
                clean_start=self.clean_start,
                session_expiry=self.session_expiry,
                receive_maximum=self.receive_maximum,
                username=self.address.username,
                password=self.address.password,
            )
        )
        packet = self._expect(p.PacketType.CONNACK, self.connect_timeout)
        connack = p.decode_connack(packet.body)
        if connack.reason >= 0x80:
            self.close()
            why = p.reason_name(connack.reason)
            raise MqttError(f"{self.address} refused the connection: {why}")
        self.connack = connack
        self.publish_window = max(1, min(connack.receive_maximum, 65_000))
        self.unacked.clear()
        sock.settimeout(None)
        sock.setblocking(False)
        return connack.session_present

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def disconnect(self) -> None:
        """A normal DISCONNECT: the broker keeps the session (and its unacknowledged messages)."""
        if self.sock is not None:
            with contextlib.suppress(MqttError):
                self._send(p.DISCONNECT_NORMAL)
        self.close()

    def subscribe(self, filters: Sequence[str], qos: int = 1) -> list[int]:
        """Subscribe and wait for the SUBACK; raises if the broker refuses a filter."""
        self._send(p.subscribe_packet(1, filters, qos))
        self._flush_out()
        packet = self._expect(p.PacketType.SUBACK, self.connect_timeout)
        _, codes = p.decode_suback(packet.body)
        refused = [
            f"{f}: {p.reason_name(c)}" for f, c in zip(filters, codes, strict=False) if c >= 0x80
        ]
        if refused or len(codes) != len(filters):
            raise MqttError(f"subscription refused: {', '.join(refused) or codes}")
        return codes

    # -- receiving ------------------------------------------------------------------------------
    def receive(self, max_messages: int, timeout: float, fill: float = 0.0) -> list[p.Publish]:
        """Messages received within `timeout` s. Once the first arrived, keeps reading for up to
        `fill` s more while fewer than `max_messages` are in hand (bigger batches amortise the
        caller's per-batch work); returns at once when `max_messages` are in hand."""
        sock = self._sock()
        out: list[p.Publish] = []
        deadline = time.monotonic() + timeout
        fill_until: float | None = None
        while True:
            self._parse(out, max_messages)
            if len(out) >= max_messages:
                return out
            self.maintain()
            now = time.monotonic()
            if out and fill_until is None:
                fill_until = now + fill
            wait = max(0.0, (fill_until if fill_until is not None else deadline) - now)
            if not self._fill(sock, wait) and (out or now >= deadline):
                return out

    def ack(self, packet_ids: Iterable[int]) -> int:
        """PUBACK every given QoS 1 message, in the given order, with one write."""
        ids = [i for i in packet_ids if i]
        if ids:
            self._send(p.puback_packets(ids))
        return len(ids)

    def maintain(self) -> None:
        """Keep the connection alive: a PINGREQ when nothing was sent for half the keep-alive."""
        if self.keepalive and time.monotonic() - self.last_sent > self.keepalive / 2:
            self._send(p.PINGREQ)

    # -- publishing -----------------------------------------------------------------------------
    def publish_many(
        self, messages: Iterable[tuple[str, bytes]], qos: int = 1, timeout: float = 60.0
    ) -> int:
        """Publish in order, keeping at most the broker's Receive Maximum unacknowledged; returns
        the number sent. PUBACKs are read as they come (`acked`, `rejected`)."""
        sent = 0
        size = 0
        for topic, payload in messages:
            if qos:
                if len(self.unacked) >= self.publish_window:
                    self._wait_for_window(timeout)
                    size = 0
                packet_id = self._allocate_id()
                self.unacked.add(packet_id)
            else:
                packet_id = 0
            packet = p.publish_packet(topic, payload, packet_id, qos)
            self._pending_out.append(packet)
            size += len(packet)
            sent += 1
            if size >= 64 * 1024:
                self._read_acks(0.0)
                size = 0
        self._read_acks(0.0)
        return sent

    def wait_for_acks(self, timeout: float) -> int:
        """Wait until every published QoS 1 message is acknowledged; returns how many are not."""
        deadline = time.monotonic() + timeout
        while self.unacked and time.monotonic() < deadline:
            self._read_acks(max(0.0, deadline - time.monotonic()))
        return len(self.unacked)

    def _wait_for_window(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.unacked) >= self.publish_window:
            if time.monotonic() >= deadline:
                raise MqttError(f"{self.address}: no PUBACK within {timeout:g} s")
            self._read_acks(min(1.0, max(0.0, deadline - time.monotonic())))

    def _allocate_id(self) -> int:
        while True:
            packet_id = self.next_id
            self.next_id = 1 if packet_id >= 65_535 else packet_id + 1
            if packet_id not in self.unacked:
                return packet_id

    def _read_acks(self, timeout: float) -> None:
        """Send what is queued, then read what the broker sent (waiting up to `timeout` s)."""
        self._flush_out()
        self.maintain()
        sock = self._sock()
        if self._fill(sock, timeout):
            while len(self.buffer) < 4 * READ_CHUNK and self._fill(sock, 0.0):
                pass
        self._parse([], 0)

    # -- plumbing -------------------------------------------------------------------------------
    def _sock(self) -> socket.socket:
        if self.sock is None:
            raise ConnectionLost("not connected")
        return self.sock

    def _fill(self, sock: socket.socket, wait: float) -> bool:
        """Read what the socket has (waiting up to `wait` s for it); False if there was nothing."""
        try:
            ready, _, _ = select.select([sock], [], [], wait)
            if not ready:
                return False
            chunk = sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"{self.address}: {exc}") from exc
        if not chunk:
            self.close()
            raise ConnectionLost(f"{self.address} closed the connection")
        self.buffer += chunk
        return True

    def _parse(self, out: list[p.Publish], limit: int) -> None:
        """Move complete packets from the buffer: PUBLISH into `out` (up to `limit`), PUBACKs into
        the publishing state; a server DISCONNECT raises."""
        data = self.buffer
        if not data:
            return
        packets, _ = p.split_packets(data)
        if not packets:
            return
        frozen = bytes(data)
        used = 0
        for first, start, stop in packets:
            kind = first >> 4
            if kind == p.PacketType.PUBLISH:
                if len(out) >= limit:
                    break
                out.append(p.decode_publish(frozen, first, start, stop))
            elif kind == p.PacketType.PUBACK:
                packet_id, reason = p.decode_puback(frozen[start:stop])
                if packet_id in self.unacked:
                    self.unacked.discard(packet_id)
                    if reason >= 0x80:
                        name = p.reason_name(reason)
                        self.rejected[name] = self.rejected.get(name, 0) + 1
                    else:
                        self.acked += 1
            elif kind == p.PacketType.PINGRESP:
                pass
            elif kind == p.PacketType.DISCONNECT:
                code, text = p.decode_disconnect(frozen[start:stop])
                self.close()
                raise ConnectionLost(
                    f"{self.address} disconnected us: {p.reason_name(code)} {text}".rstrip()
                )
            else:
                raise p.ProtocolError(f"unexpected packet type {kind}")
            used = stop
        del data[:used]

    def _expect(self, kind: p.PacketType, timeout: float) -> p.Packet:
        """Wait for one packet of `kind` (CONNACK, SUBACK). PUBLISH packets of a resumed session
        may arrive before a SUBACK: they stay in the buffer for `receive`."""
        sock = self._sock()
        deadline = time.monotonic() + timeout
        while True:
            packets, _ = p.split_packets(self.buffer)
            packet_start = 0
            for first, start, stop in packets:
                body = bytes(self.buffer[start:stop])
                if first >> 4 == kind:
                    del self.buffer[packet_start:stop]
                    return p.Packet(kind, first & 0x0F, body)
                if first >> 4 == p.PacketType.DISCONNECT:
                    code, text = p.decode_disconnect(body)
                    self.close()
                    raise MqttError(f"{self.address}: {p.reason_name(code)} {text}".rstrip())
                if first >> 4 != p.PacketType.PUBLISH:
                    raise p.ProtocolError(f"expected packet type {kind}, got {first >> 4}")
                packet_start = stop
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise ConnectionLost(f"{self.address}: no {kind.name} within {timeout:g} s")
            self._fill(sock, remaining)

    def _send(self, data: bytes) -> None:
        self._pending_out.append(data)
        self._flush_out()

    def _flush_out(self) -> None:
        if not self._pending_out:
            return
        sock = self._sock()
        data = b"".join(self._pending_out)
        self._pending_out.clear()
        view = memoryview(data)
        try:
            while view:
                try:
                    sent = sock.send(view)
                except BlockingIOError:
                    # The broker is not reading: wait until it is, reading what it sends meanwhile
                    # so that neither side blocks on a full buffer.
                    readable, _, _ = select.select([sock], [sock], [], 1.0)
                    if readable:
                        self._fill(sock, 0.0)
                    continue
                view = view[sent:]
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"{self.address}: {exc}") from exc
        self.last_sent = time.monotonic()


def end_session(address: MqttAddress, client_id: str) -> None:
    """Remove a persistent session and everything queued for it (clean start, expiry 0)."""
    client = MqttClient(address, client_id, clean_start=True, session_expiry=0)
    client.connect()
    client.disconnect()
