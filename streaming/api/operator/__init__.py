"""The read side of the operator API under `/api/v1`: live machine state (Redis), history (the
PostgreSQL rollups stitched to the lake's recent tail), anomalies and production figures
(PostgreSQL, with today's live counters), and readiness.

- `resources`: `Operator`, the clients the routes share (Redis, a PostgreSQL pool, the lake,
  a Kafka probe), opened and closed by the app's lifespan.
- `params`: times, cursors, read access and the problem answers every route shares.
- `models`: the answers' schemas for `/docs`.
- `machines`, `history` (+ `lake_reads`: the lake tail with DuckDB), `anomalies`, `production`,
  `health`, `data_health` (the dashboard's strip), `limits` (units and alert limits per metric):
  one router each.
"""

from fastapi import APIRouter

from streaming.api.operator import (
    anomalies,
    data_health,
    health,
    history,
    limits,
    machines,
    production,
)
from streaming.api.operator.resources import Operator

PREFIX = "/api/v1"

router = APIRouter(prefix=PREFIX)
router.include_router(health.router)
router.include_router(data_health.router)
router.include_router(limits.router)
router.include_router(machines.router)
router.include_router(history.router)
router.include_router(anomalies.router)
router.include_router(production.router)

__all__ = ["PREFIX", "Operator", "router"]
