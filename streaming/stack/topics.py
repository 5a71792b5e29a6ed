"""Create the platform's topics (idempotent): readings with N partitions, the others with one."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streaming.kafka.config import admin_config
from streaming.settings import Topics


def topic_layout(topics: Topics, readings_partitions: int) -> dict[str, int]:
    """Topic name -> partition count. Only readings are spread for parallel consumers; dead
    letters, alerts and ground truth are small and keep one global order."""
    return {topics.readings: readings_partitions, topics.dlq: 1, topics.alerts: 1, topics.faults: 1}


def create_topics(
    bootstrap: str,
    topics: Topics,
    *,
    readings_partitions: int = 6,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> list[str]:
    """Create the missing topics; return the names created now. Existing topics are left alone."""
    admin = AdminClient(admin_config(bootstrap, log_level=3))
    existing = set(admin.list_topics(timeout=timeout).topics)
    config = {"min.insync.replicas": "2"} if replication_factor >= 3 else {}
    wanted = [
        NewTopic(name, num_partitions=parts, replication_factor=replication_factor, config=config)
        for name, parts in topic_layout(topics, readings_partitions).items()
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    return created


def delete_topics(bootstrap: str, names: list[str], timeout: float = 30.0) -> None:
    admin = AdminClient(admin_config(bootstrap, log_level=3))
    for future in admin.delete_topics(names, operation_timeout=timeout).values():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "UNKNOWN_TOPIC_OR_PART":
                raise
