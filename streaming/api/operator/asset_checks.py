"""The pipeline's asset checks as the dashboard's data-health strip shows them: which checks the
Dagster instance holds and which of them failed on their asset's latest materialization.

Asked of the Dagster webserver's GraphQL endpoint (`OT_DAGSTER_URL`/graphql), its public
interface, rather than of Dagster's storage: the API stays free of the pipeline's code and of
Dagster itself. The answer is cached for `CACHE_S`, so a wall of dashboards polling every few
seconds costs the webserver one query per period; with Dagster down the strip says "unknown"
(`error`), never an error of the route.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

CACHE_S = 15.0
TIMEOUT_S = 3.0

QUERY = """
{ assetNodes { assetKey { path }
    assetChecksOrError { ... on AssetChecks { checks { name
      executionForLatestMaterialization { status timestamp partition
        evaluation { severity description } } } } } } }
"""

# AssetCheckExecutionResolvedStatus values that mean "this check did not pass".
FAILED_STATUSES = frozenset({"FAILED", "EXECUTION_FAILED"})


def summarize(answer: dict[str, Any]) -> dict[str, Any]:
    """`{"total", "executed", "failing": [...]}` from a GraphQL answer to `QUERY`. A failed check
    of WARN severity counts as failing too: the strip is where an operator notices either."""
    if answer.get("errors"):
        raise ValueError(str(answer["errors"][0].get("message", answer["errors"][0]))[:200])
    total = executed = 0
    failing: list[dict[str, Any]] = []
    for node in (answer.get("data") or {}).get("assetNodes") or []:
        checks = (node.get("assetChecksOrError") or {}).get("checks") or []
        asset = "/".join(node["assetKey"]["path"])
        for check in checks:
            total += 1
            latest = check.get("executionForLatestMaterialization")
            if latest is None:
                continue
            executed += 1
            if latest["status"] in FAILED_STATUSES:
                evaluation = latest.get("evaluation") or {}
                failing.append(
                    {
                        "asset": asset,
                        "check": check["name"],
                        "status": latest["status"],
                        "severity": evaluation.get("severity"),
                        "partition": latest.get("partition"),
                        "description": evaluation.get("description"),
                        "at_ms": int(latest["timestamp"] * 1000)
                        if latest.get("timestamp")
                        else None,
                    }
                )
    failing.sort(key=lambda f: (f["asset"], f["check"]))
    return {"total": total, "executed": executed, "failing": failing}


def fetch(dagster_url: str, timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """One GraphQL round trip to the webserver (blocking; run it in a thread)."""
    request = urllib.request.Request(
        dagster_url.rstrip("/") + "/graphql",
        data=json.dumps({"query": QUERY}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return summarize(json.load(response))


@dataclass
class AssetChecks:
    """The cached summary; one fetch at a time, however many requests ask at once."""

    dagster_url: str
    _value: dict[str, Any] | None = None
    _at: float = -1e9
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self) -> dict[str, Any]:
        async with self._lock:
            if self._value is None or time.monotonic() - self._at > CACHE_S:
                try:
                    self._value = await asyncio.to_thread(fetch, self.dagster_url)
                except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError) as exc:
                    reason = getattr(exc, "reason", None) or exc
                    self._value = {"error": f"Dagster at {self.dagster_url}: {reason}"[:200]}
                self._at = time.monotonic()
            return self._value
