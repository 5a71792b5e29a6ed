"""PostgreSQL / TimescaleDB rollups in schema `settings.pg_schema` (default `ot`).

- the table specs (columns, key, time column, hourly partitioning) and the hourly view are the
  contract module `streaming.warehouse_schema` (the operator API reads the same tables).
- `capabilities`: what the server offers (TimescaleDB and its licence), detected, never assumed.
- `ddl`: the schema created to fit those capabilities: hypertables, partitions, the hourly rollup.
- `loads`: the load strategies that replace a time range (hourly partition swap, delete + COPY).
- `copy_encoding`: a frame as COPY payload (binary from Arrow; CSV for the benchmark).
- `client`: `Warehouse`, the object the Postgres resource gives the assets.
"""

from ot_pipeline.warehouse.capabilities import Capabilities
from ot_pipeline.warehouse.client import Warehouse
from ot_pipeline.warehouse.copy_encoding import binary_copy_chunks, csv_chunks
from ot_pipeline.warehouse.loads import LoadResult
from streaming.warehouse_schema import HOURLY_VIEW, TABLES, TableSpec

__all__ = [
    "HOURLY_VIEW",
    "TABLES",
    "Capabilities",
    "LoadResult",
    "TableSpec",
    "Warehouse",
    "binary_copy_chunks",
    "csv_chunks",
]
