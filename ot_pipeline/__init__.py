"""The Dagster code location: landed micro-batches -> trustworthy tables, checks and rollups.

`ot_pipeline.definitions` assembles the assets, checks, sensors and schedules of `assets/`; the
pure transforms they call live in `transforms/` (Polars, no Dagster, no I/O).
"""
