"""What `ot api` adds for the dashboard, against the real process: the build's static files at `/`
with the app's page for its own paths, a page saying how to build when there is no build, the
limits per metric, and the data-health figures (dead letters counted from the real topic)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from ot_pipeline_tests.support.operator_stack import KEY_ENTRIES, READ_SECRET, running_api
from streaming.consumers.alerting import DEFAULT_RULES
from streaming.kafka.config import producer_config
from streaming.settings import Settings

pytestmark = pytest.mark.stack
READ = {"X-API-Key": READ_SECRET}


def _build(folder: Path) -> None:
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_text("<!doctype html><title>app</title>")
    (folder / "assets" / "index-abc.js").write_text("console.log('app')")


def test_the_build_is_served_with_the_app_page_for_its_own_paths(
    isolated: Settings, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    _build(dist)
    with running_api(isolated, tmp_path / "api.log", KEY_ENTRIES, OT_DASHBOARD_DIR=str(dist)) as (
        api,
        _,
    ):
        for path in ("/", "/alarms", "/machines/motor-0000"):
            page = api.get(path)
            assert page.status_code == 200 and "<title>app</title>" in page.text, path
            assert page.headers["cache-control"] == "no-cache"
        asset = api.get("/assets/index-abc.js")
        assert asset.text == "console.log('app')"
        assert "immutable" in asset.headers["cache-control"]
        assert api.get("/assets/missing.js").status_code == 404
        assert api.get("/assets/..%2Findex.html").status_code == 404  # never outside assets/
        for unknown in ("/api/v1/no-such-route", "/nope", "/machines/a/b"):
            answer = api.get(unknown, headers=READ)
            assert answer.status_code == 404, unknown
            assert answer.headers["content-type"] == "application/problem+json"
        assert api.get("/webhook/sensor-data").status_code == 405  # still the API's
        assert api.get("/api/v1/machines", headers=READ).status_code == 200


def test_without_a_build_the_root_says_how_to_make_one(isolated: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    with running_api(isolated, tmp_path / "api.log", KEY_ENTRIES, OT_DASHBOARD_DIR=str(empty)) as (
        api,
        _,
    ):
        page = api.get("/")
        assert page.status_code == 503
        assert "make setup" in page.text and str(empty) in page.text


def test_limits_are_the_contract_units_and_the_default_rules(
    isolated: Settings, tmp_path: Path
) -> None:
    with running_api(isolated, tmp_path / "api.log", KEY_ENTRIES) as (api, _):
        assert api.get("/api/v1/limits").status_code == 401
        metrics = api.get("/api/v1/limits", headers=READ).json()["metrics"]
    assert metrics["temperature"]["unit"] == "°C"
    got = {(m, x["rule"], x["low"], x["high"]) for m, v in metrics.items() for x in v["limits"]}
    want = {(r.metric, r.name, r.low, r.high) for r in DEFAULT_RULES if r.kind == "limit"}
    assert got == want


def test_data_health_counts_the_dead_letters_in_the_topic(
    isolated: Settings, tmp_path: Path
) -> None:
    producer = Producer(producer_config(isolated))
    with running_api(isolated, tmp_path / "api.log", KEY_ENTRIES, OT_DAGSTER_URL="http://d:3") as (
        api,
        _,
    ):
        before = api.get("/api/v1/health/data", headers=READ).json()
        assert before["dead_letters"] == 0
        assert before["last_materialization_ms"] is None  # nothing loaded in this schema
        assert before["dagster_url"] == "http://d:3"
        for i in range(7):
            producer.produce(isolated.topics.dlq, value=b"not a reading %d" % i)
        assert producer.flush(30) == 0
        after = api.get("/api/v1/health/data", headers=READ).json()
        assert after["dead_letters"] == 7
        assert after["at_ms"] >= before["at_ms"] and after["at_ms"] <= time.time() * 1000
