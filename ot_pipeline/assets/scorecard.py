"""`ground_truth` (the simulator's sim.faults topic, read whole into the lake) and
`detection_scorecard` (the day's anomalies measured against it)."""

import json
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from confluent_kafka import Consumer, KafkaException, TopicPartition

from ot_pipeline.assets.anomalies import anomalies
from ot_pipeline.assets.common import day_hours, preview
from ot_pipeline.lake_tables import read_hours, write_frame
from ot_pipeline.partitions import DAILY
from ot_pipeline.resources import KafkaResource, LakeResource, PipelineConfig
from streaming.lake import Lake

FAULT_SCHEMA: dict[str, pl.DataType] = {
    "fault_id": pl.String(),
    "fault_type": pl.String(),
    "machine_id": pl.String(),
    "metric": pl.String(),
    "start_ms": pl.Int64(),
    "end_ms": pl.Int64(),
    "params": pl.String(),
    "detectable": pl.Boolean(),
}
MACHINE_SCHEMA: dict[str, pl.DataType] = {
    "machine_id": pl.String(),
    "machine_type": pl.String(),
    "line_id": pl.String(),
    "metrics": pl.String(),
}


def read_topic_whole(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[bytes]:
    """Every message value of a (small) topic: fresh consumer, partitions assigned explicitly
    from the beginning, read up to each partition's high watermark. No group, no commits."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ot-ground-truth-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
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


def parse_ground_truth(values: list[bytes]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split sim.faults records into faults and machines (params/metrics kept as JSON text)."""
    faults: list[dict[str, object]] = []
    machines: list[dict[str, object]] = []
    for raw in values:
        record = json.loads(raw)
        if record.get("kind") == "fault":
            faults.append(
                {k: record.get(k) for k in FAULT_SCHEMA if k != "params"}
                | {"params": json.dumps(record.get("params") or {})}
            )
        elif record.get("kind") == "machine":
            machines.append(
                {k: record.get(k) for k in MACHINE_SCHEMA if k != "metrics"}
                | {"metrics": json.dumps(record.get("metrics") or {})}
            )
    fault_frame = pl.DataFrame(faults, schema=FAULT_SCHEMA).unique(
        "fault_id", keep="last", maintain_order=True
    )
    machine_frame = pl.DataFrame(machines, schema=MACHINE_SCHEMA).unique(
        "machine_id", keep="last", maintain_order=True
    )
    return fault_frame, machine_frame


def ground_truth_paths(lake: Lake) -> tuple[str, str]:
    base = lake.root / "ground_truth"
    return str(base / "faults.parquet"), str(base / "machines.parquet")


@dg.asset(group_name="quality", kinds={"kafka", "parquet"})
def ground_truth(kafka: KafkaResource, lake: LakeResource) -> dg.MaterializeResult:
    """The simulator's injected faults and machine metadata (topic sim.faults), as Parquet."""
    values = read_topic_whole(kafka.bootstrap_servers, kafka.faults_topic)
    faults, machines = parse_ground_truth(values)
    faults_path, machines_path = ground_truth_paths(lake.lake())
    write_frame(Path(faults_path), faults)
    write_frame(Path(machines_path), machines)
    by_type = faults.group_by("fault_type").len().sort("fault_type") if faults.height else faults
    return dg.MaterializeResult(
        metadata={
            "rows": faults.height,
            "messages": len(values),
            "machines": machines.height,
            "topic": kafka.faults_topic,
            "by_fault_type": preview(by_type, 20),
        }
    )


@dg.asset(
    deps=[anomalies, ground_truth],
    **DAILY,
    group_name="quality",
    kinds={"parquet", "polars"},
)
def detection_scorecard(
    context: dg.AssetExecutionContext, lake: LakeResource, pipeline: PipelineConfig
) -> dg.MaterializeResult:
    """Precision, recall, F1, false alarms and delay per fault type for the day's anomalies."""
    from ot_pipeline.detection.scorecard import score

    the_lake = lake.lake()
    faults_path, _ = ground_truth_paths(the_lake)
    all_faults = (
        pl.read_parquet(faults_path)
        if Path(faults_path).exists()
        else pl.DataFrame(schema=FAULT_SCHEMA)
    )
    cards: list[pl.DataFrame] = []
    for day in context.partition_keys:
        hours = day_hours(day)
        flagged = read_hours(the_lake, "anomalies", hours)
        readings_paths = [
            p for p in (the_lake.hour_path("readings", h) for h in hours) if p.exists()
        ]
        if flagged is None or not readings_paths:
            context.log.warning(f"{day}: no anomalies/readings partitions; scorecard skipped")
            continue
        # Exposure for the false-alarm rate: machine-hours that reported, in days.
        machine_days = (
            pl.scan_parquet(readings_paths)
            .select("machine_id", pl.col("ts").dt.truncate("1h"))
            .unique()
            .select(pl.len())
            .collect()
            .item()
            / 24.0
        )
        day_start_ms = int(
            pl.Series([day]).str.to_datetime("%Y-%m-%d", time_zone="UTC").dt.epoch("ms")[0]
        )
        day_end_ms = day_start_ms + int(timedelta(days=1).total_seconds() * 1000)
        faults = all_faults.filter(
            (pl.col("end_ms") >= day_start_ms) & (pl.col("start_ms") < day_end_ms)
        )
        card = score(
            flagged.with_columns(pl.lit(True).alias("is_anomaly")),
            faults,
            tolerance_s=pipeline.scorecard_tolerance_seconds,
            machine_days=machine_days,
        ).with_columns(pl.lit(day).alias("day"))
        write_frame(the_lake.root / "detection_scorecard" / f"{day}.parquet", card)
        cards.append(card)
    everything = pl.concat(cards, how="diagonal_relaxed") if cards else pl.DataFrame()
    overall = everything.filter(pl.col("fault_type") == "ALL") if everything.height else everything
    metadata: dict[str, object] = {
        "rows": everything.height,
        "days": len(cards),
        "scorecard": preview(everything, 30),
    }
    if overall.height:
        for column in ("precision", "recall", "f1"):
            if column in overall.columns:
                metadata[column] = float(overall[column].cast(pl.Float64).mean() or 0.0)  # type: ignore[arg-type]
    return dg.MaterializeResult(metadata=metadata)  # type: ignore[arg-type]
