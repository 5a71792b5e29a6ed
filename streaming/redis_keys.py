"""The Redis key layout of the live state: the one place its key strings are built.

Every key lives under a configurable prefix (`settings.redis_prefix`, default `ot:`), so several
platforms (or tests) can share one Redis. The state writer writes these keys; `make run`, the
healthcheck and the operator tools read them. docs/consumers.md describes what each one holds.
"""

from __future__ import annotations

# The state writer's consumer group (`ot state --group`): its offsets and metrics hashes are
# named after it.
STATE_WRITER_GROUP = "state-writer"


class RedisKeys:
    """The keys under `prefix` of one state-writer group."""

    def __init__(self, prefix: str, group: str = STATE_WRITER_GROUP) -> None:
        self.p = prefix
        self.group = group
        self.machines = f"{prefix}machines"  # sorted set: machine id by last seen (ms)
        self.offsets = f"{prefix}offsets:{group}"  # hash: partition -> last applied offset
        self.alerts_active = f"{prefix}alerts:active"  # hash: alert id -> record (open alerts)
        self.alerts_cleared = f"{prefix}alerts:cleared"  # hash: alert id -> record (cleared)
        self.alerts_cleared_index = f"{prefix}alerts:cleared:index"  # zset: id by cleared (ms)
        self.alerts_log = f"{prefix}alerts:log"
        self.alerts_state = f"{prefix}alerts:state"
        self.outbox_prefix = f"{prefix}alerts:outbox:"  # + Kafka partition (the Lua scripts)
        # + Kafka partition: sorted set of the unacknowledged open alerts by the time (ms) they
        # started waiting (opened or last escalated): escalation reads only the due ones.
        self.escalation_prefix = f"{prefix}alerts:escalation:"
        # Set once the escalation index holds every open alert (built from alerts:active once,
        # for alerts opened before the index existed).
        self.escalation_indexed = f"{prefix}alerts:escalation:indexed"
        # Stream: the change feed (machine state changes and alert events) for `ot api`'s
        # WebSocket, appended in the same transaction as the state it reports.
        self.changes = f"{prefix}changes"
        self.metrics = f"{prefix}metrics:{group}"
        # Every machine hash is this + the machine id (the operator API's Lua read builds them).
        self.machine_prefix = f"{prefix}machine:"
        # SCAN patterns
        self.scan_all = f"{prefix}*"
        self.scan_machines = f"{prefix}machine:*"
        self.scan_days = f"{prefix}count:*"  # the per-day counters and their per-machine hashes
        self.scan_offsets = f"{prefix}offsets:*"  # the offsets hashes of every group

    def machine(self, machine_id: str) -> str:
        return f"{self.machine_prefix}{machine_id}"

    def day(self, day: str) -> str:
        return f"{self.p}count:{day}"

    def day_machines(self, day: str) -> str:
        return f"{self.p}count:{day}:machines"

    def outbox(self, partition: int) -> str:
        return f"{self.outbox_prefix}{partition}"

    def ratelimit(self, key_name: str) -> str:
        """Hash of one API key's token buckets (requests, readings), shared by every gateway."""
        return f"{self.p}ratelimit:{key_name}"
