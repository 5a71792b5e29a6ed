"""Pure transforms of the pipeline: Polars frames in, Polars frames out, no Dagster, no I/O."""
