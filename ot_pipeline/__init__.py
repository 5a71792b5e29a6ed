"""The Dagster code location: landed micro-batches -> trustworthy tables, checks and rollups.

`ot_pipeline.definitions` assembles the assets and checks of `assets/` with the jobs, sensors and
schedule of `jobs.py`, `sensors.py` and `schedules.py`; the pure transforms they call live in
`transforms/` (Polars, no Dagster, no I/O).
"""
