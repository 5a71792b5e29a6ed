"""Dead-letter headers: an invalid message goes to `sensor-readings.dlq` unchanged, and these
Kafka headers say why, at which stage, and where it came from (so it can be found and replayed).
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
MAX_DETAIL_BYTES = 512


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


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What the headers of a dead-lettered message say."""

    reason: str
    stage: str
    topic: str
    partition: int
    offset: int
    detail: str


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
    )
