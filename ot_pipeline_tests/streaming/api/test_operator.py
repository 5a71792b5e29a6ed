"""The operator API's read side against the real stack. One plant is built per module: the
simulator's fast-forward history -> Kafka -> `ot land` and `ot state` -> `ot pipeline run` over
the first hours only, so the last hour exists only in the lake. `ot api` runs as a child process;
every answer is compared with what Redis, PostgreSQL and the lake hold."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import psycopg
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ot_pipeline_tests.conftest import clean_up, isolated_settings
from ot_pipeline_tests.streaming.api.test_gateway import (
    INGEST_SECRET,
    READ_SECRET,
    api_server,
    assert_problem,
)
from ot_tools import drills
from streaming.api.operator.params import MAX_LIMIT
from streaming.lake import Lake
from streaming.lake.hours import hour_key
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings

pytestmark = [pytest.mark.stack, pytest.mark.slow]
BIN = Path(sys.executable).parent
HOUR_MS = 3_600_000
H = {"X-API-Key": READ_SECRET}


def _ot(settings: Settings, *args: str, timeout: float = 300) -> dict[str, Any]:
    done = subprocess.run(
        [str(BIN / "ot"), *args],
        env=drills.child_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"ot {' '.join(args)}: {done.stderr[-3000:]}"
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


@dataclass(frozen=True)
class Plant:
    settings: Settings
    start: datetime  # first simulated hour
    hours: int  # simulated hours
    loaded: int  # hours `ot pipeline run` loaded (the first ones)

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    def landed(self) -> pl.DataFrame:
        """Every landed row (duplicates included)."""
        lake = Lake(self.settings.lake_dir)
        return pl.read_parquet([f.path for f in lake.landed_files()])


@pytest.fixture(scope="module")
def plant(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    tmp = tmp_path_factory.mktemp("plant")
    # Silence never turns a machine OFFLINE here (the setup outlasts the default 30 s on a busy
    # machine); the test of that limit starts its own server with a short one.
    settings = replace(
        isolated_settings(stack, tmp / "lake"),
        dagster_home=tmp / "dagster",
        offline_after_seconds=86_400,
    )
    hours, loaded = 3, 2
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)
    try:
        _ot(
            settings,
            "simulate",
            "--machines",
            "6",
            "--hours",
            str(hours),
            "--interval",
            "10",
            "--seed",
            "7",
            "--fault-rate",
            "duplicate=20",
            "--start",
            start.isoformat(),
        )
        _ot(settings, "land", "--until-idle", "3")
        _ot(settings, "state", "--until-idle", "3")
        _ot(
            settings,
            "pipeline",
            "run",
            "--from",
            hour_key(start),
            "--to",
            hour_key(start + timedelta(hours=loaded - 1)),
            "--no-daily",
            "--no-ground-truth",
        )
        yield Plant(settings, start, hours, loaded)
    finally:
        clean_up(settings)


@pytest.fixture(scope="module")
def api(plant: Plant, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    log = tmp_path_factory.mktemp("api") / "api.log"
    with api_server(plant.settings, log) as (client, _):
        yield client


def _redis(plant: Plant) -> tuple[redis.Redis, RedisKeys]:
    return redis.Redis.from_url(plant.settings.redis_url), RedisKeys(plant.settings.redis_prefix)


def _pg(plant: Plant, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(plant.settings.pg_dsn) as conn:
        return conn.execute(query.replace("{s}", plant.settings.pg_schema), params).fetchall()


# -- machines ---------------------------------------------------------------------------------


def test_the_machine_list_is_what_redis_holds(plant: Plant, api: httpx.Client) -> None:
    r = api.get("/api/v1/machines", headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_cursor"] is None
    items = body["items"]
    client, keys = _redis(plant)
    ids = sorted(m.decode() for m in client.zrange(keys.machines, 0, -1))
    assert [i["machine_id"] for i in items] == ids and len(ids) == 6
    for item in items:
        fields = {
            k.decode(): v.decode()
            for k, v in client.hgetall(keys.machine(item["machine_id"])).items()
        }
        assert item["type"] == fields["type"] and item["line"] == fields["line"]
        assert item["last_seen"] == int(fields["last_seen"])
        assert item["status"] == fields["status"]  # heard from seconds ago: the writer's status
        assert item["status_code"] == int(fields["status_code"])
        metrics = {k for k in fields if f"{k}_ts" in fields}
        assert set(item["values"]) == metrics and metrics
        for name, v in item["values"].items():
            assert v == {"value": float(fields[name]), "ts": int(fields[f"{name}_ts"])}


def test_pages_filters_and_sort(plant: Plant, api: httpx.Client) -> None:
    everything = api.get("/api/v1/machines", headers=H).json()["items"]
    # limit=2 pages through all of them, each once, in order
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, "sort": "-last_seen"}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/api/v1/machines", params=params, headers=H).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(everything)
    keys = [(i["last_seen"], i["machine_id"]) for i in seen]
    assert keys == sorted(keys, reverse=True)
    # filters
    a_type = everything[0]["type"]
    by_type = api.get("/api/v1/machines", params={"type": a_type}, headers=H).json()["items"]
    assert [i["machine_id"] for i in by_type] == [
        i["machine_id"] for i in everything if i["type"] == a_type
    ]
    a_line = everything[-1]["line"]
    by_line = api.get("/api/v1/machines", params={"line": a_line}, headers=H).json()["items"]
    assert {i["machine_id"] for i in by_line} == {
        i["machine_id"] for i in everything if i["line"] == a_line
    }
    statuses = {i["status"] for i in everything}
    for status in statuses:
        got = api.get("/api/v1/machines", params={"status": status}, headers=H).json()["items"]
        assert {i["machine_id"] for i in got} == {
            i["machine_id"] for i in everything if i["status"] == status
        }
    offline = api.get("/api/v1/machines", params={"status": "OFFLINE"}, headers=H).json()
    assert offline["items"] == [i for i in everything if i["status"] == "OFFLINE"]
    # a cursor made for another sort is refused
    first = api.get("/api/v1/machines", params={"limit": 1}, headers=H).json()
    bad = api.get(
        "/api/v1/machines",
        params={"limit": 1, "sort": "line", "cursor": first["next_cursor"]},
        headers=H,
    )
    assert_problem(bad, 400, "invalid-cursor")


def test_the_direct_path_answers_byte_for_byte_what_the_route_answers(
    plant: Plant, api: httpx.Client
) -> None:
    """fast.py answers the plain list requests itself; a repeated scalar parameter sends the same
    request through the FastAPI route instead (which takes the last value)."""
    for query in ["", "?limit=4", "?limit=2&sort=-last_seen", "?status=ONLINE&type=MOTOR"]:
        direct = api.get(f"/api/v1/machines{query}", headers=H)
        joiner = "&" if query else "?"
        routed = api.get(f"/api/v1/machines{query}{joiner}sort=id&sort=id", headers=H)
        if "sort=" in query:
            routed = api.get(f"/api/v1/machines{query}&{query.split('&')[-1]}", headers=H)
        assert direct.status_code == routed.status_code == 200, (direct.text, routed.text)
        assert direct.content == routed.content, query
        assert direct.headers["content-type"] == routed.headers["content-type"]
    # A key without the read role, or none, never gets an answer from the direct path.
    assert_problem(api.get("/api/v1/machines"), 401, "unauthorized")
    ingest = {"X-API-Key": INGEST_SECRET}
    one = api.get("/api/v1/machines", headers=H).json()["items"][0]["machine_id"]
    assert_problem(api.get(f"/api/v1/machines/{one}", headers=ingest), 403, "forbidden")


def test_machine_detail_has_every_metric_status_and_its_open_alerts(
    plant: Plant, api: httpx.Client
) -> None:
    client, keys = _redis(plant)
    active = [json.loads(v) for v in client.hgetall(keys.alerts_active).values()]
    ids = sorted(m.decode() for m in client.zrange(keys.machines, 0, -1))
    for machine in ids:
        r = api.get(f"/api/v1/machines/{machine}", headers=H)
        assert r.status_code == 200, r.text
        body = r.json()
        fields = {k.decode(): v.decode() for k, v in client.hgetall(keys.machine(machine)).items()}
        assert body["machine_id"] == machine and body["status"] == fields["status"]
        assert {k: v["value"] for k, v in body["values"].items()} == {
            k: float(fields[k]) for k in fields if f"{k}_ts" in fields
        }
        mine = sorted(
            (a for a in active if a["machine_id"] == machine),
            key=lambda a: (a["opened_ms"], a["alert_id"]),
        )
        assert body["alerts"] == mine
        assert body["silent_ms"] >= 0
    assert any(a["machine_id"] in ids for a in active) or not active
    assert_problem(api.get("/api/v1/machines/no-such-machine", headers=H), 404, "unknown-machine")


def test_a_machine_silent_longer_than_the_offline_limit_is_offline(
    plant: Plant, tmp_path: Path
) -> None:
    with api_server(
        plant.settings,
        tmp_path / "api.log",
        OT_OFFLINE_AFTER_SECONDS="1",
    ) as (client, _):
        import time

        time.sleep(1.5)
        items = client.get("/api/v1/machines", headers=H).json()["items"]
        assert items and {i["status"] for i in items} == {"OFFLINE"}
        one = client.get(f"/api/v1/machines/{items[0]['machine_id']}", headers=H).json()
        assert one["status"] == "OFFLINE"


# -- history ----------------------------------------------------------------------------------


def _series(plant: Plant) -> tuple[str, str, pl.DataFrame]:
    """The busiest (machine, metric) and its distinct landed readings."""
    landed = plant.landed()
    counts = landed.group_by("machine_id", "metric").len().sort("len", "machine_id", "metric")
    machine, metric, _ = counts.row(-1)
    rows = landed.filter((pl.col("machine_id") == machine) & (pl.col("metric") == metric))
    return machine, metric, rows


def test_history_across_the_boundary_counts_every_reading_once(
    plant: Plant, api: httpx.Client
) -> None:
    machine, metric, rows = _series(plant)
    assert rows.height > rows["event_id"].n_unique(), "the simulator sent no duplicates"
    distinct = rows.unique("event_id", keep="first")
    start, end = plant.start_ms, plant.start_ms + plant.hours * HOUR_MS
    boundary = plant.start_ms + plant.loaded * HOUR_MS
    for resolution, step in [("1m", 60_000), ("5m", 300_000), ("1h", HOUR_MS)]:
        r = api.get(
            f"/api/v1/machines/{machine}/history",
            params={"metric": metric, "from": start, "to": end, "resolution": resolution},
            headers=H,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["boundary"] == boundary, (resolution, body["sources"])
        assert body["sources"] == [
            {"source": "postgres", "from": start, "to": boundary},
            {"source": "lake", "from": boundary, "to": end},
        ]
        points = body["points"]
        assert sum(p["count"] for p in points) == distinct.height, resolution
        assert [p["ts"] for p in points] == sorted({p["ts"] for p in points})
        assert all(p["ts"] % step == 0 for p in points)
        # each side equals its source: PostgreSQL's rollup before the boundary ...
        table = {"1m": "readings_1m", "5m": "readings_5m", "1h": "readings_hourly"}[resolution]
        pg = _pg(
            plant,
            "SELECT (extract(epoch FROM bucket) * 1000)::bigint, count, min, max FROM {s}."
            + table
            + " WHERE machine_id = %s AND metric = %s ORDER BY bucket",
            machine,
            metric,
        )
        assert [
            (p["ts"], p["count"], p["min"], p["max"]) for p in points if p["ts"] < boundary
        ] == [(int(b), int(c), lo, hi) for b, c, lo, hi in pg]
        # ... and the lake's distinct readings after it
        tail = (
            distinct.with_columns(b=pl.col("ts").dt.epoch("ms") // step * step)
            .filter(pl.col("b") >= boundary)
            .group_by("b")
            .agg(pl.len(), pl.col("value").min().alias("lo"), pl.col("value").max().alias("hi"))
            .sort("b")
        )
        assert [
            (p["ts"], p["count"], p["min"], p["max"]) for p in points if p["ts"] >= boundary
        ] == [(int(b), int(n), lo, hi) for b, n, lo, hi in tail.iter_rows()]


def test_raw_and_auto_history(plant: Plant, api: httpx.Client) -> None:
    machine, metric, rows = _series(plant)
    distinct = rows.unique("event_id", keep="first").sort("ts", "event_id")
    # raw across the boundary: every distinct reading once, from the lake
    boundary = plant.start_ms + plant.loaded * HOUR_MS
    start, end = boundary - 600_000, boundary + 600_000
    r = api.get(
        f"/api/v1/machines/{machine}/history",
        params={"metric": metric, "from": start, "to": end, "resolution": "raw"},
        headers=H,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    want = distinct.filter(
        (pl.col("ts").dt.epoch("ms") >= start) & (pl.col("ts").dt.epoch("ms") < end)
    )
    assert [(p["ts"], p["value"]) for p in body["points"]] == [
        (int(t), v) for t, v in want.select(pl.col("ts").dt.epoch("ms"), "value").iter_rows()
    ]
    assert body["resolution"] == "raw" and not body["truncated"]
    # auto: 20 minutes -> raw; 3 hours -> 1m; 6 days -> 5m; 30 days -> 1h; 100 days -> 2 h steps
    spans = [(1_200_000, "raw"), (3 * HOUR_MS, "1m"), (144 * HOUR_MS, "5m"), (720 * HOUR_MS, "1h")]
    for span, want_res in spans:
        r = api.get(
            f"/api/v1/machines/{machine}/history",
            params={"metric": metric, "from": end - span, "to": end},
            headers=H,
        )
        assert r.status_code == 200 and r.json()["resolution"] == want_res, r.text
        assert len(r.json()["points"]) <= 2000
    r = api.get(
        f"/api/v1/machines/{machine}/history",
        params={"metric": metric, "from": end - 100 * 24 * HOUR_MS, "to": end},
        headers=H,
    )
    assert r.json()["resolution"] == "1h" and r.json()["step_ms"] == 2 * HOUR_MS
    assert sum(p["count"] for p in r.json()["points"]) == distinct.height


# -- anomalies and production -----------------------------------------------------------------


def test_anomalies_are_the_rollup_rows_with_filters_and_pages(
    plant: Plant, api: httpx.Client
) -> None:
    start, end = plant.start_ms, plant.start_ms + plant.hours * HOUR_MS
    rows = _pg(
        plant,
        "SELECT (extract(epoch FROM ts) * 1000)::bigint, machine_id, metric, event_id, severity,"
        " value, score FROM {s}.anomalies ORDER BY ts DESC, event_id DESC",
    )
    assert rows, "the pipeline flagged nothing to compare with"
    got, cursor = [], None
    while True:
        params: dict[str, Any] = {"from": start, "to": end, "limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/api/v1/anomalies", params=params, headers=H)
        assert page.status_code == 200, page.text
        got += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    assert [
        (
            a["ts"],
            a["machine_id"],
            a["metric"],
            a["event_id"],
            a["severity"],
            a["value"],
            a["score"],
        )
        for a in got
    ] == [tuple(r) for r in rows]
    machine, severity = rows[0][1], rows[0][4]
    filtered = api.get(
        "/api/v1/anomalies",
        params={
            "from": start,
            "to": end,
            "machine": machine,
            "severity": severity,
            "limit": MAX_LIMIT,
        },
        headers=H,
    ).json()["items"]
    assert len(filtered) < MAX_LIMIT, "more than one page: the comparison below would be partial"
    assert [a["event_id"] for a in filtered] == [
        r[3] for r in rows if r[1] == machine and r[4] == severity
    ]


def test_production_sums_machine_health_per_machine_and_line(
    plant: Plant, api: httpx.Client
) -> None:
    start, end = plant.start_ms, plant.start_ms + plant.hours * HOUR_MS
    r = api.get(
        "/api/v1/metrics/production",
        params={"from": start, "to": end, "group_by": "hour"},
        headers=H,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    pg = _pg(
        plant,
        "SELECT (extract(epoch FROM hour) * 1000)::bigint, machine_id, line_id, readings,"
        " anomalies, alerts, ok_s, fault_s, uptime_pct FROM {s}.machine_health_hourly"
        " ORDER BY hour, machine_id",
    )
    assert len(pg) == 6 * plant.loaded
    assert [
        (m["period"], m["machine_id"], m["readings"], m["anomalies"], m["alerts"])
        for m in body["machines"]
    ] == [(int(p), m, n, a, al) for p, m, _, n, a, al, *_ in pg]
    for m, row in zip(body["machines"], pg, strict=True):
        assert m["hours"] == 1
        assert m["seconds"]["ok"] == pytest.approx(row[6], abs=1e-3)
        assert m["uptime_pct"] == pytest.approx(row[8], abs=1e-3)
    # per line and day: the same readings, summed
    daily = api.get(
        "/api/v1/metrics/production",
        params={"from": start, "to": end, "group_by": "day"},
        headers=H,
    ).json()
    lines: dict[str, int] = {}
    for _, _, line, n, *_ in pg:
        lines[line] = lines.get(line, 0) + n
    got: dict[str, int] = {}
    for row in daily["lines"]:
        got[row["line_id"]] = got.get(row["line_id"], 0) + row["readings"]
    assert got == lines
    one_line = sorted(lines)[0]
    only = api.get(
        "/api/v1/metrics/production",
        params={"from": start, "to": end, "line": one_line},
        headers=H,
    ).json()
    assert {m["line_id"] for m in only["machines"]} == {one_line}


def test_production_today_is_the_live_counters(plant: Plant, api: httpx.Client) -> None:
    body = api.get("/api/v1/metrics/production", headers=H).json()  # default: the last 24 h
    today = body["today"]
    assert today is not None
    client, keys = _redis(plant)
    live = {k.decode(): int(v) for k, v in client.hgetall(keys.day_machines(today["day"])).items()}
    assert {m["machine_id"]: m["readings"] for m in today["machines"] if m["readings"]} == live
    assert today["readings"] == sum(live.values())
    day_start = int(datetime.fromisoformat(today["day"]).replace(tzinfo=UTC).timestamp() * 1000)
    (loaded,) = _pg(
        plant,
        "SELECT coalesce(sum(readings), 0) FROM {s}.machine_health_hourly"
        " WHERE hour >= to_timestamp(%s / 1000.0)",
        day_start,
    )[0]
    assert today["materialized"] == loaded


# -- readiness, auth, validation ----------------------------------------------------------------


def test_readiness_reports_every_dependency(plant: Plant, api: httpx.Client) -> None:
    r = api.get("/api/v1/health", headers=H)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["checks"]) == {"kafka", "redis", "postgres", "lake", "consumers"}
    for name in ("kafka", "redis", "postgres"):
        assert body["checks"][name]["status"] == "ok", body
    assert body["checks"]["lake"]["newest_age_s"] < 600
    consumers = body["checks"]["consumers"]
    assert consumers["lander"]["lag"] == 0
    assert consumers["state_writer"]["lag"] == 0


def test_readiness_is_503_when_a_dependency_is_down(plant: Plant, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    env = {"REDIS_URL": f"redis://127.0.0.1:{dead}/0"}
    env["OT_PG_DSN"] = f"postgresql://ot:ot@127.0.0.1:{dead}/ot"
    with api_server(plant.settings, tmp_path / "api.log", **env) as (client, _):
        r = client.get("/api/v1/health", headers=H)
        assert r.status_code == 503
        body = r.json()
        assert body["checks"]["redis"]["status"] == "down"
        assert body["checks"]["postgres"]["status"] == "down"
        assert body["checks"]["kafka"]["status"] == "ok"
        assert set(body["failing"]) == {"redis", "postgres"}
        only_kafka = client.get("/api/v1/health", params={"needs": "kafka"}, headers=H)
        assert only_kafka.status_code == 200
        assert_problem(client.get("/api/v1/machines", headers=H), 503, "redis-unavailable")
        assert_problem(client.get("/api/v1/anomalies", headers=H), 503, "postgres-unavailable")


def test_every_auth_and_validation_error_is_problem_json(plant: Plant, api: httpx.Client) -> None:
    m = "/api/v1/machines"
    assert_problem(api.get(m), 401, "unauthorized")
    assert_problem(api.get(m, headers={"X-API-Key": "ot_nope"}), 401, "unauthorized")
    assert_problem(api.get(m, headers={"X-API-Key": INGEST_SECRET}), 403, "forbidden")
    assert_problem(api.get(m, params={"limit": 0}, headers=H), 422, "invalid-request")
    assert_problem(api.get(m, params={"status": "ASLEEP"}, headers=H), 422, "invalid-request")
    assert_problem(api.get(m, params={"cursor": "garbage"}, headers=H), 400, "invalid-cursor")
    assert_problem(api.get(f"{m}/Not_A_Valid_Id", headers=H), 422, "invalid-request")
    hist = f"{m}/press-07/history"
    assert_problem(api.get(hist, headers=H), 422, "invalid-request")  # no metric
    assert_problem(api.get(hist, params={"metric": "smell"}, headers=H), 422, "invalid-request")
    for params, kind in [
        ({"from": "yesterday"}, "invalid-time"),
        ({"from": 2000, "to": 1000}, "invalid-range"),
        ({"from": 0, "to": 400 * 24 * HOUR_MS}, "invalid-range"),
        ({"from": 0, "to": 200 * HOUR_MS, "resolution": "raw"}, "too-many-points"),
        ({"resolution": "2m"}, "invalid-request"),
    ]:
        body = assert_problem(
            api.get(hist, params={"metric": "temperature", **params}, headers=H), 422, kind
        )
        assert body["detail"]
    assert_problem(
        api.get("/api/v1/anomalies", params={"severity": "HUGE"}, headers=H), 422, "invalid-request"
    )
    assert_problem(
        api.get("/api/v1/metrics/production", params={"group_by": "week"}, headers=H),
        422,
        "invalid-request",
    )
    assert_problem(api.get("/api/v1/health"), 401, "unauthorized")


def test_anonymous_read_and_cors(plant: Plant, tmp_path: Path) -> None:
    with api_server(
        plant.settings,
        tmp_path / "api.log",
        OT_API_ANONYMOUS_READ="true",
        OT_API_CORS_ORIGINS="http://wall.example:3000",
    ) as (client, _):
        assert client.get("/api/v1/machines").status_code == 200  # no key needed to read
        assert_problem(
            client.get("/api/v1/machines", headers={"X-API-Key": "ot_x"}), 401, "unauthorized"
        )
        # writing still needs a key
        assert_problem(client.post("/webhook/sensor-data", json={}), 401, "unauthorized")
        pre = client.options(
            "/api/v1/machines",
            headers={
                "Origin": "http://wall.example:3000",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "X-API-Key",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://wall.example:3000"
        other = client.get("/api/v1/machines", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        same = client.get("/api/v1/machines", headers={"Origin": "http://wall.example:3000"})
        assert same.headers["access-control-allow-origin"] == "http://wall.example:3000"


@functools.cache
def _operations() -> list[Any]:
    """The operator API's operations from the app's OpenAPI schema (no server needed)."""
    import schemathesis

    from streaming.api.app import create_app

    schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
    found = [result.ok() for result in schema.get_all_operations()]
    return [op for op in found if op.path.startswith("/api/v1")]


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
@given(data=st.data())
def test_nothing_generated_from_the_openapi_schema_makes_a_5xx(api: httpx.Client, data: Any):
    import schemathesis

    operation = data.draw(st.sampled_from(_operations()), label="operation")
    mode = data.draw(st.sampled_from(list(schemathesis.GenerationMode)), label="mode")
    case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
    response = case.call(base_url=str(api.base_url), headers=H)
    assert response.status_code < 500 or (
        response.status_code == 503 and case.path == "/api/v1/health"
    ), (case.method, case.path, case.query, response.text)


# -- last: changes the plant ----------------------------------------------------------------------


def test_history_follows_the_pipeline_when_it_loads_the_last_hour(
    plant: Plant, api: httpx.Client, tmp_path: Path
) -> None:
    """Runs last in this module: loads the lake-only hour, after which PostgreSQL serves it."""
    machine, metric, rows = _series(plant)
    start, end = plant.start_ms, plant.start_ms + plant.hours * HOUR_MS
    params = {"metric": metric, "from": start, "to": end, "resolution": "1m"}
    before = api.get(f"/api/v1/machines/{machine}/history", params=params, headers=H).json()
    last = plant.start + timedelta(hours=plant.hours - 1)
    _ot(
        plant.settings,
        "pipeline",
        "run",
        "--from",
        hour_key(last),
        "--to",
        hour_key(last),
        "--no-daily",
        "--no-ground-truth",
    )
    after = api.get(f"/api/v1/machines/{machine}/history", params=params, headers=H).json()
    assert after["boundary"] == end
    assert after["sources"] == [{"source": "postgres", "from": start, "to": end}]
    assert [(p["ts"], p["count"]) for p in after["points"]] == [
        (p["ts"], p["count"]) for p in before["points"]
    ]
    assert sum(p["count"] for p in after["points"]) == rows["event_id"].n_unique()
