"""Resources: every external system the assets touch, built from the one settings object."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ot_pipeline.warehouse import Warehouse
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


class PipelineConfig(dg.ConfigurableResource):
    """Knobs of the pipeline's semantics (documented in docs/pipeline.md)."""

    # A row landed more than this after its hour closed counts as late (metadata only).
    late_grace_seconds: float = 300.0
    # Readings of earlier hours handed to the detectors to warm their baselines.
    detection_history_minutes: int = 30
    # Landing files older than this are removed once their days are archived and checked.
    landing_retention_days: int = 7
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
