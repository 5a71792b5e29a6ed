"""Resources: every external system the assets touch, built from the one settings object."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
from confluent_kafka import Consumer, KafkaException, TopicPartition

from ot_pipeline.warehouse import Warehouse
from streaming.events.faults import GroundTruth
from streaming.kafka.config import reader_config
from streaming.lake import Lake
from streaming.settings import Settings


class LakeResource(dg.ConfigurableResource):
    """The lake root (landing files in, asset partitions out)."""

    root: str

    def lake(self) -> Lake:
        return Lake(Path(self.root))


class PostgresResource(dg.ConfigurableResource):
    """The PostgreSQL database and schema that hold the rollups."""

    dsn: str
    schema_name: str = "ot"

    def warehouse(self) -> Warehouse:
        return Warehouse(self.dsn, self.schema_name)


class KafkaResource(dg.ConfigurableResource):
    """The Kafka cluster; the pipeline only reads the small ground-truth topic."""

    bootstrap_servers: str
    faults_topic: str = "sim.faults"

    def ground_truth(self, timeout_s: float = 30.0) -> GroundTruth:
        """The whole sim.faults topic, parsed by its contract."""
        return GroundTruth.parse(
            read_topic_whole(self.bootstrap_servers, self.faults_topic, timeout_s)
        )


class PipelineConfig(dg.ConfigurableResource):
    """Knobs of the pipeline's semantics (documented in docs/pipeline.md)."""

    # A row landed more than this after its hour closed counts as late (metadata only).
    late_grace_seconds: float = 300.0
    # Readings of earlier hours handed to the detectors to warm their baselines where the hour
    # before left no detector state: two hours give the fleet's baseline (240 blocks at 1 s) and
    # drift its usual trend by the partition's first reading.
    detection_history_minutes: int = 120
    # Landing files older than this are removed once their days are archived and checked.
    landing_retention_days: int = 7
    # The landing sensor refreshes the open hour at most this often while data lands (an hour
    # that closed is requested at once): fewer, larger runs.
    live_refresh_minutes: float = 5.0
    # Landing freshness check: the newest landing file must be younger than this.
    landing_fresh_minutes: float = 15.0
    # Silence longer than this inside an hour counts as no data in machine health.
    health_max_gap_seconds: float = 60.0
    # Detection scorecard: an alarm this close to a fault window counts as detecting it.
    scorecard_tolerance_seconds: float = 120.0


def resources_from_settings(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "lake": LakeResource(root=str(settings.lake_dir.absolute())),
        "postgres": PostgresResource(dsn=settings.pg_dsn, schema_name=settings.pg_schema),
        "kafka": KafkaResource(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            faults_topic=settings.topics.faults,
        ),
        "pipeline": PipelineConfig(landing_retention_days=settings.landing_retention_days),
    }


def read_topic_whole(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[bytes]:
    """Every message value of a (small) topic: fresh consumer, partitions assigned explicitly
    from the beginning, read up to each partition's high watermark. No group, no commits."""
    consumer = Consumer(reader_config(bootstrap, f"ground-truth-{time.time_ns()}"))
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            return []
        pending: dict[int, int] = {}
        assignment = []
        for p in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                pending[p] = high
                assignment.append(TopicPartition(topic, p, low))
        if not assignment:
            return []
        consumer.assign(assignment)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=1.0):
                if msg.error():
                    raise KafkaException(msg.error())
                value, partition, offset = msg.value(), msg.partition(), msg.offset()
                if value is not None:
                    values.append(value)
                if partition is None or offset is None:
                    continue
                if partition in pending and offset + 1 >= pending[partition]:
                    del pending[partition]
        if pending:
            raise TimeoutError(f"{topic}: did not reach the high watermark of {sorted(pending)}")
        return values
    finally:
        consumer.close()
