"""What the server offers, detected at start-up and never assumed: the timescaledb extension (made
available by `CREATE EXTENSION` when installed but not yet created) and its licence. The DDL and
the hourly-rollup refresh adapt to the answer."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Capabilities:
    """What the server offers, detected: extension installed, and its licence."""

    timescaledb: bool
    license: str | None  # 'timescale' (community: compression, caggs, policies) or 'apache'

    @property
    def community(self) -> bool:
        return self.timescaledb and self.license == "timescale"


def detect(conn: psycopg.Connection) -> Capabilities:
    row = conn.execute(
        "SELECT installed_version FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if row is None:
        return Capabilities(False, None)
    if row[0] is None:
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error:
            return Capabilities(False, None)  # available but not loadable/permitted
    licence = conn.execute("SHOW timescaledb.license").fetchone()
    return Capabilities(True, str(licence[0]) if licence else None)
