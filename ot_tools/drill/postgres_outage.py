"""postgres-outage: PostgreSQL stops during `ot pipeline run`. Stopped for longer than the loads'
retry budget, the run fails with a clear message naming the failed assets (and exits 1); back
within it, the load assets retry (`PG_RETRY`) and the run succeeds with every check passed; a
rerun after a failed one succeeds too (the loads replace their hour range)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ot_tools import drills
from ot_tools.drill.harness import Child, Drill, DrillOptions, now
from streaming.lake.hours import hour_key


def _pipeline(d: Drill, name: str, hour: str) -> Child:
    args = ["run", "--from", hour, "--to", hour, "--no-daily", "--no-ground-truth"]
    return d.child(name, "pipeline", args, supervised=False)


def _result(d: Drill, child: Child, timeout: float) -> tuple[int | None, dict[str, Any]]:
    assert child.proc is not None
    child.proc.wait(timeout)
    return child.proc.returncode, child.summary() or {}


def _retrying(child: Child) -> bool:
    try:
        text = child.log.read_text(errors="replace")
    except FileNotFoundError:
        return False
    return "STEP_UP_FOR_RETRY" in text or "up for retry" in text.lower()


def run(options: DrillOptions) -> dict[str, Any]:
    """PostgreSQL stopped during a pipeline run: a clear failure when it stays down; retries and
    success (checks passed) when it is back in time."""
    quick = options.quick
    n = 30_000 if quick else 120_000
    with Drill("postgres-outage", options) as d:
        # One past hour of readings (10 ms apart), landed by the lander.
        hour_start = (datetime.now(UTC) - timedelta(hours=2)).replace(
            minute=0, second=0, microsecond=0
        )
        start_ms = int(hour_start.timestamp() * 1000) + 1000
        step_ms = max(1, 3_500_000 // n)
        messages = drills.readings(n, machines=40, start_ms=start_ms, step_ms=step_ms)
        drills.produce(d.settings, d.settings.topics.readings, messages)
        d.load = {"source": "ot_tools.drills.readings, one past hour", "readings": n}
        d.child("lander", "land", ["--group", "lander", "--flush-age", "1"])
        d.monitor_lag("lander")
        d.check("landed", d.wait_caught_up(timeout=300) is not None)
        d.stop_consumers("lander")
        hour = hour_key(hour_start)
        outcomes: dict[str, Any] = {}

        # 1. Down for good during the run: the run fails, says which assets and why.
        at = now()
        d.stack.stop("postgres")
        d.say("postgres stopped; pipeline run (stays down)")
        rc, summary = _result(d, _pipeline(d, "pipeline-down", hour), timeout=600)
        outcomes["stays_down"] = {
            "exit": rc,
            "success": summary.get("success"),
            "failed_assets": summary.get("failed_assets"),
            "retries": summary.get("retries"),
            "seconds": round(now() - at, 1),
        }
        d.check("stays down: the run fails (exit 1)", rc == 1 and summary.get("success") is False)
        d.check(
            "stays down: the failed assets are named with the reason",
            bool(summary.get("failed_assets")),
            summary.get("failed_assets"),
        )

        # 2. Back within the retry budget: the loads retry and the run succeeds.
        child = _pipeline(d, "pipeline-back", hour)
        d.wait_for("a load retries", lambda: _retrying(child) or not child.alive, 600)
        d.sleep(1)
        back = now()
        d.stack.start("postgres")
        d.say("postgres started again")
        rc, summary = _result(d, child, timeout=600)
        outcomes["back_in_time"] = {
            "exit": rc,
            "success": summary.get("success"),
            "retries": summary.get("retries"),
            "failed_checks": summary.get("failed_checks"),
            "assets": summary.get("assets"),
            "recovered_s_after_restart": round(now() - back, 1),
        }
        d.check("back in time: the loads retried", bool(summary.get("retries")))
        d.check(
            "back in time: the run succeeds, every check passed",
            rc == 0 and summary.get("success") is True and not summary.get("failed_checks"),
        )
        d.phases.append(
            {
                "phase": "postgres-down-during-run",
                "fault": "PostgreSQL stopped before the loads, started once a load retried",
                "injected_at_s": round(at - d.began, 1),
                "healed_at_s": round(back - d.began, 1),
                "recovery_s": outcomes["back_in_time"]["recovered_s_after_restart"],
            }
        )
        rows = (summary.get("assets") or {}).get("readings", {}).get("rows")
        d.check("the readings asset holds every landed reading", rows == n, [rows, n])
        d.figures["pipeline"] = outcomes
        return d.report(d.reconcile())
