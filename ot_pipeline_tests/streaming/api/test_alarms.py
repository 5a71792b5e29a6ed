"""The alarm lifecycle of the operator API against the real stack: readings produced to Kafka open
alerts through the state writer; `ot api` (a child process) lists, acknowledges, assigns and
clears them; every transition is in the alert log, on the change feed and on the `alerts` topic."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ot_pipeline_tests.conftest import clean_up, isolated_settings
from ot_pipeline_tests.support.operator_stack import (
    INGEST_SECRET,
    OPERATE_SECRET,
    OPERATOR,
    READ_SECRET,
    Devices,
    MovableClock,
    api_server,
    read_topic,
    record,
    state_writer,
    wait_for,
)
from streaming.alert_lifecycle import decode_record
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings

pytestmark = pytest.mark.stack

READ = {"X-API-Key": READ_SECRET}
OPERATE = {"X-API-Key": OPERATE_SECRET}


def alerts(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/alerts", params=params, headers=READ)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def act(client: httpx.Client, alert_id: str, action: str, body: Any = None, **kw: Any) -> Any:
    headers = kw.pop("headers", OPERATE)
    url = f"/api/v1/alerts/{quote(alert_id, safe='')}/{action}"
    return client.post(url, json=body, headers=headers, **kw)


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["type"] == f"urn:ot:problem:{kind}", body
    assert body["title"] and body["detail"]
    return body


def alert_topic_events(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in read_topic(settings, settings.topics.alerts)]


def test_ack_assign_and_clear_follow_the_alarm_model(isolated: Settings, tmp_path: Path) -> None:
    devices = Devices(isolated)
    with (
        state_writer(isolated, tmp_path / "state.log"),
        api_server(isolated, tmp_path / "api.log") as client,
    ):
        devices.send(
            record("press-07", 1, value=150.25),  # temperature_hard: CRITICAL, clears itself
            record("pump-02", 1, "vibration", "mm/s", 2.0, status=2, line="line-b"),  # fault
        )
        wait_for(lambda: len(alerts(client, state="active")) == 2, what="two alerts open")
        hot = alerts(client, machine="press-07")[0]
        fault = alerts(client, rule="device_fault")[0]
        assert (hot["status"], hot["severity"], hot["value"]) == (
            "ACTIVE_UNACK",
            "CRITICAL",
            150.25,
        )
        assert (hot["line_id"], hot["manual_clear"], hot["acknowledged"]) == (
            "line-a",
            False,
            False,
        )
        assert (fault["line_id"], fault["manual_clear"]) == ("line-b", True)

        # Acknowledge, with a note; again: 200, the same state, nothing new.
        first = act(client, hot["alert_id"], "ack", {"note": "valve swapped"})
        assert first.status_code == 200, first.text
        acked = first.json()
        assert acked["changed"] is True
        a = acked["alert"]
        assert (a["status"], a["ack_by"], a["ack_note"]) == (
            "ACTIVE_ACK",
            OPERATOR.name,
            "valve swapped",
        )
        again = act(client, hot["alert_id"], "ack", {"note": "twice"})
        assert again.status_code == 200 and again.json() == {**acked, "changed": False}

        # Assign, reassign the same (nothing new), unassign.
        assigned = act(client, hot["alert_id"], "assign", {"assignee": "maintenance-team"})
        assert assigned.json()["alert"]["assignee"] == "maintenance-team"
        same = act(client, hot["alert_id"], "assign", {"assignee": "maintenance-team"})
        assert same.json()["changed"] is False
        none = act(client, hot["alert_id"], "assign", {"assignee": None})
        assert none.json()["alert"]["assignee"] is None and none.json()["changed"] is True

        # Clear by hand: only where the rule allows it.
        assert_problem(act(client, hot["alert_id"], "clear"), 409, "manual-clear-not-allowed")
        cleared = act(client, fault["alert_id"], "clear")
        assert cleared.status_code == 200
        c = cleared.json()["alert"]
        assert (c["status"], c["cleared_by"], c["event"]) == (
            "CLEARED_UNACK",
            OPERATOR.name,
            "cleared",
        )
        assert act(client, fault["alert_id"], "clear").json()["changed"] is False
        late_ack = act(client, fault["alert_id"], "ack").json()["alert"]
        assert late_ack["status"] == "CLEARED_ACK"

        # The rule clears the acknowledged alert: the acknowledgement stays.
        devices.send(record("press-07", 2, value=71.0))
        wait_for(lambda: not alerts(client, state="active"), what="the rule clears press-07")
        done = client.get(f"/api/v1/alerts/{quote(hot['alert_id'], safe='')}", headers=READ).json()
        assert (done["status"], done["ack_by"], done["ack_note"], done["cleared_by"]) == (
            "CLEARED_ACK",
            OPERATOR.name,
            "valve swapped",
            None,
        )

        # Filters and cursor pagination.
        assert {a["alert_id"] for a in alerts(client, state="cleared_ack")} == {
            hot["alert_id"],
            fault["alert_id"],
        }
        assert [a["rule"] for a in alerts(client, severity="HIGH")] == ["device_fault"]
        assert [a["machine_id"] for a in alerts(client, line="line-b")] == ["pump-02"]
        assert alerts(client, state="unack") == []
        page = client.get("/api/v1/alerts", params={"limit": 1, "sort": "severity"}, headers=READ)
        body = page.json()
        assert [a["severity"] for a in body["items"]] == ["HIGH"] and body["next_cursor"]
        rest = client.get(
            "/api/v1/alerts",
            params={"limit": 1, "sort": "severity", "cursor": body["next_cursor"]},
            headers=READ,
        ).json()
        assert [a["severity"] for a in rest["items"]] == ["CRITICAL"]
        assert rest["next_cursor"] is None

        # Every transition is in the alert log, newest first.
        events = client.get(
            f"/api/v1/alerts/{quote(hot['alert_id'], safe='')}/events", headers=READ
        ).json()["items"]
        assert [e["event"] for e in events] == [
            "cleared",
            "unassigned",
            "assigned",
            "acknowledged",
            "opened",
        ]
        assert [e["by"] for e in events] == [None, *[OPERATOR.name] * 3, None]

        # ... and on the alerts topic, published by the state writer, each once.
        def published() -> list[dict[str, Any]]:
            return [
                e
                for e in alert_topic_events(isolated)
                if e["alert_id"] in (hot["alert_id"], fault["alert_id"])
            ]

        wait_for(lambda: len(published()) >= 8, what="8 events on the alerts topic")
        on_topic = published()
        assert sorted((e["alert_id"], e["event"]) for e in on_topic) == sorted(
            [(hot["alert_id"], e["event"]) for e in events]
            + [(fault["alert_id"], e) for e in ("opened", "cleared", "acknowledged")]
        )
        hot_order = [e["event"] for e in on_topic if e["alert_id"] == hot["alert_id"]]
        assert hot_order == [e["event"] for e in reversed(events)]

        # The change feed has them too, in the same order.
        rdb = redis.Redis.from_url(isolated.redis_url)
        keys = RedisKeys(isolated.redis_prefix)
        feed = rdb.xrange(keys.changes)
        fed = [json.loads(f[b"d"]) for _, f in feed if f[b"t"] == b"alert"]
        assert [e["event"] for e in fed if e["alert_id"] == hot["alert_id"]] == hot_order

        # The list is what Redis holds: every record, open and cleared, as stored.
        stored = [*rdb.hvals(keys.alerts_active), *rdb.hvals(keys.alerts_cleared)]
        assert {a["alert_id"]: a for a in alerts(client)} == {
            r["alert_id"]: r for r in map(decode_record, stored)
        }


def test_acks_racing_for_one_alert_make_one_transition(isolated: Settings, tmp_path: Path) -> None:
    devices = Devices(isolated)
    with (
        state_writer(isolated, tmp_path / "state.log"),
        api_server(isolated, tmp_path / "api.log") as client,
    ):
        devices.send(record("press-07", 1, value=130.0))
        alert_id = wait_for(lambda: alerts(client, state="active"), what="an alert")[0]["alert_id"]
        answers: list[httpx.Response] = []
        lock = threading.Lock()
        go = threading.Event()

        def ack(n: int) -> None:
            with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
                go.wait()
                answer = act(own, alert_id, "ack", {"note": f"ack {n}"})
            with lock:
                answers.append(answer)

        threads = [threading.Thread(target=ack, args=(n,)) for n in range(24)]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join(60)
    assert [a.status_code for a in answers] == [200] * 24
    changed = [a.json() for a in answers if a.json()["changed"]]
    assert len(changed) == 1
    winner = changed[0]["alert"]
    assert all(a.json()["alert"]["ack_ms"] == winner["ack_ms"] for a in answers)
    assert all(a.json()["alert"]["ack_note"] == winner["ack_note"] for a in answers)
    rdb = redis.Redis.from_url(isolated.redis_url)
    log = [json.loads(v) for v in rdb.lrange(RedisKeys(isolated.redis_prefix).alerts_log, 0, -1)]
    assert [e["event"] for e in log] == ["acknowledged", "opened"]


def test_replayed_readings_neither_reopen_an_alert_nor_undo_its_lifecycle(
    isolated: Settings, tmp_path: Path
) -> None:
    """A device resending its breaching reading (the same event_id) and more breaching readings,
    then a restarted state writer (resuming from the offsets committed with the state), leave the
    acknowledged alert as it is: one alert, its acknowledgement kept, no new event in the log, on
    the change feed or on the alerts topic."""
    devices = Devices(isolated)
    keys = RedisKeys(isolated.redis_prefix)
    rdb = redis.Redis.from_url(isolated.redis_url)
    hot = record("press-07", 1, "pressure", "bar", 45.0)  # pressure_hard: HIGH, opens at once
    with api_server(isolated, tmp_path / "api.log") as client:
        with state_writer(isolated, tmp_path / "state.log") as writer:
            devices.send(hot)
            alert = wait_for(lambda: alerts(client, state="active"), what="an alert")[0]
            assert act(client, alert["alert_id"], "ack", {"note": "seen"}).json()["changed"]
            devices.send(hot)  # the same reading again: a device's resend
            devices.send(record("press-07", 2, "pressure", "bar", 46.0))  # still breaching
            wait_for(lambda: writer.stats.applied >= 3, what="the resend applied")
        log_before = rdb.lrange(keys.alerts_log, 0, -1)
        with state_writer(isolated, tmp_path / "state.log") as again:
            devices.send(record("press-07", 3, "pressure", "bar", 47.0))
            wait_for(lambda: again.stats.applied >= 1, what="the restarted writer applied")
            time.sleep(0.6)  # timer ticks: nothing may come of them either
            assert again.stats.applied == 1  # nothing of before was applied twice
        assert [a["alert_id"] for a in alerts(client)] == [alert["alert_id"]]
        after = alerts(client)[0]
        assert (after["status"], after["ack_by"], after["ack_note"]) == (
            "ACTIVE_ACK",
            OPERATOR.name,
            "seen",
        )
        assert rdb.lrange(keys.alerts_log, 0, -1) == log_before
        assert [json.loads(v)["event"] for v in log_before] == ["acknowledged", "opened"]
        fed = [json.loads(f[b"d"]) for _, f in rdb.xrange(keys.changes) if f[b"t"] == b"alert"]
        assert [e["event"] for e in fed] == ["opened", "acknowledged"]

    def published() -> set[tuple[str, int]]:
        return {(e["event"], e["at_ms"]) for e in alert_topic_events(isolated)}

    wait_for(lambda: len(published()) >= 2, what="the two events on the alerts topic")
    assert {event for event, _ in published()} == {"opened", "acknowledged"}
    assert len(published()) == 2


def test_unacknowledged_alerts_escalate_on_a_controllable_clock(
    isolated: Settings, tmp_path: Path
) -> None:
    settings = replace(isolated, alert_escalate_after_seconds=600, offline_after_seconds=86_400)
    clock = MovableClock()
    devices = Devices(settings)
    with (
        state_writer(settings, tmp_path / "state.log", clock=clock) as writer,
        api_server(settings, tmp_path / "api.log") as client,
    ):
        devices.send(
            record("press-07", 1, "pressure", "bar", 45.0),  # pressure_hard: HIGH
            record("press-08", 1, "pressure", "bar", 46.0),
        )
        opened = wait_for(lambda: len(alerts(client)) == 2 and alerts(client), what="2 alerts")
        by_machine = {a["machine_id"]: a for a in opened}
        act(client, by_machine["press-08"]["alert_id"], "ack")

        clock.offset = 599.0  # not yet
        time.sleep(0.6)
        assert {a["severity"] for a in alerts(client)} == {"HIGH"}

        clock.offset = 601.0
        wait_for(
            lambda: alerts(client, machine="press-07")[0]["severity"] == "CRITICAL",
            what="press-07 escalated",
        )
        risen = alerts(client, machine="press-07")[0]
        assert (risen["original_severity"], risen["escalations"], risen["event"]) == (
            "HIGH",
            1,
            "escalated",
        )
        assert risen["escalated_ms"] >= int((time.time() + 600) * 1000)
        assert alerts(client, machine="press-08")[0]["severity"] == "HIGH"  # acknowledged

        clock.offset = 1300.0  # CRITICAL is the top: no further event
        time.sleep(0.8)
        assert alerts(client, machine="press-07")[0]["escalations"] == 1
        assert writer.stats.alerts == 3  # two opened, one escalated

        def escalations_published() -> list[dict[str, Any]]:
            return [e for e in alert_topic_events(settings) if e["event"] == "escalated"]

        topic = wait_for(escalations_published, what="escalated on the alerts topic")
    assert [(e["machine_id"], e["severity"]) for e in topic] == [("press-07", "CRITICAL")]


def test_alert_routes_answer_auth_and_validation_errors_as_problems(
    isolated: Settings, tmp_path: Path
) -> None:
    with api_server(isolated, tmp_path / "api.log") as client:
        assert_problem(client.get("/api/v1/alerts"), 401, "unauthorized")
        wrong = {"X-API-Key": INGEST_SECRET}
        assert_problem(client.get("/api/v1/alerts", headers=wrong), 403, "forbidden")
        assert_problem(act(client, "x|y", "ack", headers=READ), 403, "forbidden")
        assert_problem(act(client, "no|such|alert|0|1", "ack"), 404, "alert-not-found")
        assert_problem(act(client, "x", "assign", {"who": "me"}), 422, "invalid-request")
        bad = {"severity": "URGENT"}
        assert_problem(
            client.get("/api/v1/alerts", params=bad, headers=READ), 422, "invalid-severity"
        )
        bad = {"from": "yesterday"}
        assert_problem(client.get("/api/v1/alerts", params=bad, headers=READ), 422, "invalid-time")
        bad = {"cursor": "bm9wZQ"}
        assert_problem(
            client.get("/api/v1/alerts", params=bad, headers=READ), 422, "invalid-cursor"
        )
        bad = {"state": "open"}
        assert_problem(
            client.get("/api/v1/alerts", params=bad, headers=READ), 422, "invalid-request"
        )
    with api_server(isolated, tmp_path / "api.log", OT_API_ANONYMOUS_READ="true") as client:
        assert client.get("/api/v1/alerts").json() == {"items": [], "next_cursor": None}
        assert_problem(act(client, "x", "ack", headers={}), 401, "unauthorized")


@pytest.fixture(scope="module")
def operated(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """`ot api` with two alerts open (one whose rule allows a manual clear), for the
    property-based run."""
    tmp = tmp_path_factory.mktemp("operated")
    settings = isolated_settings(stack, tmp / "lake")
    try:
        devices = Devices(settings)
        with (
            state_writer(settings, tmp / "state.log"),
            api_server(settings, tmp / "api.log") as client,
        ):
            devices.send(
                record("press-07", 1, value=150.25),
                record("pump-02", 1, "vibration", "mm/s", 2.0, status=2, line="line-b"),
            )
            wait_for(lambda: len(alerts(client, state="active")) == 2, what="two alerts open")
            yield client
    finally:
        clean_up(settings)


@functools.cache
def _alert_operations() -> list[Any]:
    import schemathesis

    from streaming.api.app import create_app

    schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
    found = [result.ok() for result in schema.get_all_operations()]
    return [op for op in found if op.path.startswith("/api/v1/alerts")]


@hypothesis_settings(
    max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
@given(data=st.data())
def test_nothing_generated_for_the_alert_routes_makes_a_5xx(operated: httpx.Client, data: Any):
    """Reads and transitions with an `operate` key: generated ids, notes, assignees and filters
    answer 2xx, 404, 409 or 422, never a 5xx. Some draws use the open alerts' real ids, so the
    transitions themselves run too."""
    import schemathesis

    operation = data.draw(st.sampled_from(_alert_operations()), label="operation")
    mode = data.draw(st.sampled_from(list(schemathesis.GenerationMode)), label="mode")
    case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
    if case.path_parameters and data.draw(st.booleans(), label="a real alert"):
        real = [a["alert_id"] for a in alerts(operated)]
        case.path_parameters["alert_id"] = data.draw(st.sampled_from(real), label="alert id")
    response = case.call(base_url=str(operated.base_url), headers=OPERATE)
    assert response.status_code < 500, (case.method, case.path, case.query, response.text)
