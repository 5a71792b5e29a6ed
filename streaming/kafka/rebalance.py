"""Rebalances made visible: who is in the group and with which partitions, who joined or left,
which partitions moved from whom to whom, and why a member lost its partitions.

The eager protocol tells a member only its own part (`revoked [0,1,2]`, then `assigned {...}`).
After each assignment the runtime describes the group (`describe_group`) and logs the difference
to the view it had before (`group_changes`); librdkafka's own log lines that explain a lost
assignment (session timed out, poll interval exceeded, fenced) are kept by `ClientLog`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from streaming.observability.logs import EventLog, KafkaClientLog

# librdkafka log facilities that explain why a member lost its partitions or left the group.
REASONS = {
    "SESSTMOUT": "session timed out",
    "MAXPOLL": "max.poll.interval.ms exceeded",
    "FATAL": "fatal client error (e.g. fenced by a member with the same group.instance.id)",
    "MEMBERID": "member id no longer known to the coordinator",
}


def member_name(member: Any) -> str:
    """A group member as the logs name it: its static instance id, else its member id (which
    starts with the client id, `ot-<command>-<pid>@<host>`)."""
    return str(member.group_instance_id or member.member_id)


def describe_group(
    admin: AdminClient, group: str, topic: str, timeout: float = 5.0
) -> dict[str, list[int]] | None:
    """Each member of a stable group with its partitions of `topic`; None while the group is
    still rebalancing or cannot be described."""
    try:
        futures = admin.describe_consumer_groups([group], request_timeout=timeout)
        desc = futures[group].result(timeout=timeout)
    except Exception:
        return None
    if desc.state != ConsumerGroupState.STABLE:
        return None
    return {
        member_name(m): sorted(
            tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic
        )
        for m in desc.members
    }


def group_changes(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, Any]:
    """Who joined, who left and which partitions moved where between two views of a group."""
    owner_before = {p: m for m, ps in before.items() for p in ps}
    owner_after = {p: m for m, ps in after.items() for p in ps}
    moved = {
        p: {"from": owner_before.get(p), "to": owner_after.get(p)}
        for p in sorted(set(owner_before) | set(owner_after))
        if owner_before.get(p) != owner_after.get(p)
    }
    return {
        "joined": sorted(set(after) - set(before)),
        "left": sorted(set(before) - set(after)),
        "moved": moved,
    }


class ClientLog(logging.Handler):
    """librdkafka's log lines (the client's `logger`): warnings and errors go to the one log as
    `kafka_log`, rate-limited per facility (`KafkaClientLog`); the last one of the facilities
    in REASONS is kept to say why partitions were lost."""

    def __init__(self, log: EventLog) -> None:
        super().__init__(level=logging.DEBUG)
        self.forward = KafkaClientLog(log).forward
        self.last: tuple[float, str, str] | None = None  # monotonic, facility, message

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) < 3:
            return
        facility, message = str(args[0]), str(args[2])
        if facility in REASONS:
            self.last = (time.monotonic(), facility, message)
        if record.levelno >= logging.WARNING:
            self.forward(record.levelno, facility, str(args[1]), message)

    def reason(self, within_s: float = 120.0) -> str | None:
        """Why, if librdkafka said so within the last `within_s` seconds."""
        if self.last is None or time.monotonic() - self.last[0] > within_s:
            return None
        _, facility, message = self.last
        return f"{REASONS[facility]}: {message[-300:]}"

    def logger(self, name: str) -> logging.Logger:
        """A logger of its own that feeds this handler (and nothing else)."""
        log = logging.getLogger(f"ot.rdkafka.{name}")
        log.handlers = [self]
        log.setLevel(logging.DEBUG)
        log.propagate = False
        return log
