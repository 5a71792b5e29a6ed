"""Cold start of the local stack: a fresh folder (jars cached), every service from nothing to
answering, on ports of its own so the running stack is not disturbed."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from streaming.settings import Settings
from streaming.stack.local import LocalStack


def run(settings: Settings, quick: bool) -> dict:
    shared = LocalStack.from_env()
    jars = shared.ensure_kafka_jars()
    figures: dict[str, float | int] = {}
    for brokers in (1,) if quick else (1, 3):
        with tempfile.TemporaryDirectory(prefix="ot-stack-bench-") as tmp:
            root = Path(tmp)
            (root / "kafka-libs").symlink_to(jars, target_is_directory=True)
            stack = LocalStack(
                root=root,
                brokers=brokers,
                kafka_port=39092,
                redis_port=36379,
                pg_port=35432,
                mqtt_port=31883,
            )
            started = time.perf_counter()
            try:
                stack.up()
                figures[f"cold_up_{brokers}_broker_s"] = round(time.perf_counter() - started, 1)
                again = time.perf_counter()
                stack.up()
                figures[f"warm_up_{brokers}_broker_s"] = round(time.perf_counter() - again, 2)
            finally:
                stack.down()
                pg = root / "postgres"
                if pg.is_symlink():  # PostgreSQL's data went to /var/tmp: remove it too
                    shutil.rmtree(pg.resolve(), ignore_errors=True)
    return figures
