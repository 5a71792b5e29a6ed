"""`ground_truth` (the simulator's sim.faults topic, read whole into the lake) and
`detection_scorecard` (the day's anomalies measured against it)."""

import dagster as dg
import polars as pl

from ot_pipeline.assets.anomalies import anomalies
from ot_pipeline.assets.metadata import preview
from ot_pipeline.partitions import DAILY
from ot_pipeline.resources import KafkaResource, LakeResource, PipelineConfig
from streaming.events.faults import FAULT_SCHEMA
from streaming.lake.files import read_hours, write_frame
from streaming.lake.hours import day_bounds, day_hours


@dg.asset(group_name="quality", kinds={"kafka", "parquet"})
def ground_truth(kafka: KafkaResource, lake: LakeResource) -> dg.MaterializeResult:
    """The simulator's injected faults and machine metadata (topic sim.faults), as Parquet."""
    truth = kafka.ground_truth()
    the_lake = lake.lake()
    write_frame(the_lake.ground_truth_faults, truth.faults)
    write_frame(the_lake.ground_truth_machines, truth.machines)
    faults = truth.faults
    by_type = faults.group_by("fault_type").len().sort("fault_type") if faults.height else faults
    return dg.MaterializeResult(
        metadata={
            "rows": faults.height,
            "messages": truth.messages,
            "machines": truth.machines.height,
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
    faults_path = the_lake.ground_truth_faults
    all_faults = (
        pl.read_parquet(faults_path) if faults_path.exists() else pl.DataFrame(schema=FAULT_SCHEMA)
    )
    cards: list[pl.DataFrame] = []
    for day in context.partition_keys:
        hours = day_hours(day)
        flagged = read_hours(the_lake, "anomalies", hours)
        readings_paths = the_lake.hour_paths("readings", hours)
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
        day_start, day_end = day_bounds(day)
        day_start_ms, day_end_ms = (int(t.timestamp() * 1000) for t in (day_start, day_end))
        faults = all_faults.filter(
            (pl.col("end_ms") >= day_start_ms) & (pl.col("start_ms") < day_end_ms)
        )
        card = score(
            flagged.with_columns(pl.lit(True).alias("is_anomaly")),
            faults,
            tolerance_s=pipeline.scorecard_tolerance_seconds,
            machine_days=machine_days,
        ).with_columns(pl.lit(day).alias("day"))
        write_frame(the_lake.day_path("detection_scorecard", day), card)
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
