"""Dead-letter headers: an invalid message goes to `sensor-readings.dlq` unchanged, and these
Kafka headers say why, at which stage, and where it came from (so it can be found and replayed).

A message too big to forward whole with its headers (`fit_dead_letter`) goes with its value cut
to fit and two more headers, `ot.truncated=true` and `ot.original.size`: it is still recorded,
and it never blocks its partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HEADER_REASON = "ot.reason"
HEADER_STAGE = "ot.stage"
HEADER_TOPIC = "ot.source.topic"
HEADER_PARTITION = "ot.source.partition"
HEADER_OFFSET = "ot.source.offset"
HEADER_DETAIL = "ot.detail"
HEADER_TRUNCATED = "ot.truncated"  # "true" when the value was cut to fit the dead-letter topic
HEADER_ORIGINAL_SIZE = "ot.original.size"  # the value's size in bytes before the cut
MAX_DETAIL_BYTES = 512
MAX_TRUNCATED_KEY_BYTES = 1024  # a cut dead letter keeps at most this much of its key


def dlq_headers(
    reason: str, stage: str, topic: str, partition: int, offset: int, detail: str
) -> list[tuple[str, bytes]]:
    """Kafka headers of a dead-lettered message (values UTF-8; detail cut to 512 bytes)."""
    return [
        (HEADER_REASON, str(reason).encode()),
        (HEADER_STAGE, stage.encode()),
        (HEADER_TOPIC, topic.encode()),
        (HEADER_PARTITION, str(int(partition)).encode()),
        (HEADER_OFFSET, str(int(offset)).encode()),
        (HEADER_DETAIL, detail.encode()[:MAX_DETAIL_BYTES].decode(errors="ignore").encode()),
    ]


def fit_dead_letter(
    value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]], limit: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The dead letter as sent: unchanged if key, value and headers take at most `limit` bytes;
    otherwise the value (and a key beyond 1 KiB) cut so that they do, with the truncation
    headers added."""
    size = sum(len(k) + len(v) for k, v in headers)
    if len(value or b"") + len(key or b"") + size <= limit:
        return value, key, headers
    original = len(value or b"")
    headers = [
        *headers,
        (HEADER_TRUNCATED, b"true"),
        (HEADER_ORIGINAL_SIZE, str(original).encode()),
    ]
    key = key[:MAX_TRUNCATED_KEY_BYTES] if key else key
    room = limit - len(key or b"") - sum(len(k) + len(v) for k, v in headers)
    return (value or b"")[: max(0, room)], key, headers


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What the headers of a dead-lettered message say."""

    reason: str
    stage: str
    topic: str
    partition: int
    offset: int
    detail: str
    truncated: bool = False  # the value was cut to fit the dead-letter topic
    original_size: int | None = None  # the value's size before the cut (only when truncated)


def parse_dlq_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> DeadLetter:
    """Inverse of `dlq_headers` (for tests and tools); KeyError if a required header is missing."""
    found = {k: (v or b"").decode(errors="replace") for k, v in (headers or [])}
    return DeadLetter(
        reason=found[HEADER_REASON],
        stage=found[HEADER_STAGE],
        topic=found[HEADER_TOPIC],
        partition=int(found[HEADER_PARTITION]),
        offset=int(found[HEADER_OFFSET]),
        detail=found.get(HEADER_DETAIL, ""),
        truncated=found.get(HEADER_TRUNCATED) == "true",
        original_size=int(found[HEADER_ORIGINAL_SIZE]) if HEADER_ORIGINAL_SIZE in found else None,
    )
