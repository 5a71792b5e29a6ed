"""The operator dashboard in a real Chromium (Debian's, driven by Playwright) against the real
stack: the simulator (`ot simulate`, real time), the lander (`ot land`), a state writer and
`ot api` serving the production build, all on this module's own topics and Redis prefix.

The operator types an `operate` key once (kept in sessionStorage); every check compares what the
browser shows with what Redis or the API holds. Screenshots go to $OT_SCREENSHOTS (default: the
test's temporary folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from ot_pipeline_tests.conftest import clean_up, isolated_settings
from ot_pipeline_tests.support.operator_stack import (
    KEY_ENTRIES,
    OPERATE_SECRET,
    OPERATOR,
    Devices,
    record,
    running_api,
    state_writer,
    wait_for,
)
from ot_pipeline_tests.support.paths import REPO_ROOT
from ot_tools import drills
from ot_tools.chromium import ARGS, ensure_chromium
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings

pytestmark = pytest.mark.stack

MACHINES = 10
DIST = REPO_ROOT / "dashboard" / "dist"
HOT = "motor-0900"  # not in the simulated fleet: its injected readings are the only ones it has
PAST = "pump-0901"  # a machine whose history the test writes, so it is fixed once landed


@dataclass
class Plant:
    settings: Settings
    url: str
    api: httpx.Client
    redis: redis.Redis
    keys: RedisKeys
    shots: Path
    console: list[str] = field(default_factory=list)


def _build_dashboard() -> None:
    """The production build `ot api` serves (`make setup` makes it; a test run may not have)."""
    if (DIST / "index.html").exists():
        return
    subprocess.run(["make", "setup"], cwd=REPO_ROOT, check=True, capture_output=True)


@pytest.fixture(scope="module")
def plant(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    _build_dashboard()
    tmp = tmp_path_factory.mktemp("dashboard")
    shots = Path(os.environ.get("OT_SCREENSHOTS", tmp / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    settings = replace(isolated_settings(stack, tmp / "lake"), dagster_home=tmp / "dagster")
    env = drills.child_env(settings)
    children: list[subprocess.Popen[bytes]] = []
    try:
        for name, args in (
            ("simulate", ["simulate", "--machines", str(MACHINES), "--interval", "1",
                          "--duration", "0", "--chaos", "none", "--seed", "11"]),
            ("land", ["land", "--flush-age", "1"]),
        ):  # fmt: skip
            with open(tmp / f"{name}.log", "ab") as log:
                children.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "streaming.cli", *args],
                        env=env,
                        stdout=log,
                        stderr=log,
                    )
                )
        with (
            state_writer(settings, tmp / "state.log"),
            running_api(settings, tmp / "api.log", KEY_ENTRIES) as (api, _),
        ):
            client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
            keys = RedisKeys(settings.redis_prefix)
            wait_for(lambda: client.zcard(keys.machines) >= MACHINES, 60, "the simulated fleet")
            yield Plant(settings, str(api.base_url), api, client, keys, shots)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(30)
        clean_up(settings)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = ensure_chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(plant: Plant, browser: Browser) -> Iterator[Page]:
    """One operator's tab for the whole module: the key is typed once."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    tab = context.new_page()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            plant.console.append(message.text)

    tab.on("console", console)
    tab.on("pageerror", lambda exc: plant.console.append(f"pageerror: {exc}"))
    tab.goto(plant.url)
    # Without anonymous reads the stream refuses the subscription and the app asks for a key.
    tab.get_by_test_id("key-input").fill(OPERATE_SECRET)
    tab.get_by_test_id("key-save").click()
    expect(tab.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=15_000)
    yield tab
    context.close()


def _shot(plant: Plant, page: Page, name: str) -> None:
    page.screenshot(path=str(plant.shots / f"{name}.png"), full_page=False)


def _statuses(plant: Plant) -> dict[str, str]:
    ids = plant.redis.zrange(plant.keys.machines, 0, -1)
    return {m: plant.redis.hget(plant.keys.machine(m), "status") or "" for m in ids}


def test_the_grid_shows_every_simulated_machine_with_the_status_redis_holds(
    plant: Plant, page: Page
) -> None:
    page.goto(plant.url + "/")
    tiles = page.get_by_test_id("machine-tile")
    expect(tiles).to_have_count(MACHINES, timeout=10_000)

    def agrees() -> bool:
        shown = {
            t.get_attribute("data-machine"): t.get_attribute("data-status") for t in tiles.all()
        }
        return shown == _statuses(plant)

    wait_for(agrees, 10, "the grid's statuses to be Redis's")
    assert len(_statuses(plant)) == MACHINES
    # The status is a word (and an icon), not a colour alone.
    first = tiles.first
    assert first.get_by_test_id("status-badge").inner_text().split()[-1] in {
        "ONLINE",
        "ANOMALY",
        "FAULT",
        "OFFLINE",
    }
    online = page.locator("[data-testid=status-counts] [data-status=ONLINE] .figure-value")
    expect(online).to_have_text(str(sum(s == "ONLINE" for s in _statuses(plant).values())))
    _shot(plant, page, "fleet-1440")


def test_a_machine_chart_gains_points_live(plant: Plant, page: Page) -> None:
    page.goto(plant.url + "/machines/motor-0000")
    chart = page.get_by_test_id("chart-temperature")
    expect(chart).to_have_attribute("data-state", "ready", timeout=15_000)
    before = int(chart.get_attribute("data-points") or 0)
    wait_for(
        lambda: int(chart.get_attribute("data-points") or 0) >= before + 2,
        10,
        "two more temperature points on the live chart",
    )
    _shot(plant, page, "machine-1440")


def test_an_injected_overheat_appears_in_the_alarm_panel_within_2_s(
    plant: Plant, page: Page
) -> None:
    page.goto(plant.url + "/alarms")
    expect(page.get_by_test_id("active-alarms")).to_be_visible()
    devices = Devices(plant.settings)
    sent = devices.send(record(HOT, 1, value=150.0, line="line-01"))  # > 120 °C: CRITICAL
    alarm = page.locator(f"[data-testid=alarm][data-alert*='|{HOT}|']")
    alarm.wait_for(timeout=5_000)
    elapsed = time.time() - sent
    assert elapsed < 2.0, f"the alarm showed {elapsed:.2f} s after the reading was sent"
    assert "CRITICAL" in alarm.inner_text()
    _shot(plant, page, "alarms-1440")


def test_acknowledging_in_the_ui_changes_the_alert_through_the_api(
    plant: Plant, page: Page
) -> None:
    alarm = page.locator(f"[data-testid=alarm][data-alert*='|{HOT}|']")
    alert_id = alarm.get_attribute("data-alert")
    assert alert_id
    alarm.get_by_test_id("ack-note").fill("coolant valve checked")
    alarm.get_by_test_id("ack").click()
    expect(alarm).to_have_attribute("data-status", "ACTIVE_ACK", timeout=5_000)

    def stored() -> dict[str, Any]:
        raw = plant.redis.hget(plant.keys.alerts_active, alert_id)
        return json.loads(raw) if raw else {}

    record_ = wait_for(lambda: stored().get("status") == "ACTIVE_ACK" and stored(), 5, "ack")
    assert record_["ack_by"] == OPERATOR.name
    assert record_["ack_note"] == "coolant valve checked"
    events = plant.api.get(
        f"/api/v1/alerts/{quote(alert_id, safe='')}/events", headers={"X-API-Key": OPERATE_SECRET}
    ).json()["items"]
    assert [e["event"] for e in events] == ["acknowledged", "opened"]


def test_a_history_chart_shows_exactly_the_api_points(plant: Plant, page: Page) -> None:
    devices = Devices(plant.settings)
    now = int(time.time() * 1000)
    readings = []
    for i in range(40):  # the last 20 minutes, one reading every 30 s
        r = record(PAST, i + 1, "pressure", "bar", 2.0 + (i % 7) * 0.1, line="line-02")
        readings.append({**r, "ts": now - (40 - i) * 30_000, "machine_type": "PUMP"})
    devices.send(*readings)
    headers = {"X-API-Key": OPERATE_SECRET}
    raw_url = f"/api/v1/machines/{PAST}/history"

    def landed() -> bool:
        answer = plant.api.get(
            raw_url, params={"metric": "pressure", "from": now - 3_600_000, "resolution": "raw"},
            headers=headers,
        )  # fmt: skip
        return answer.status_code == 200 and len(answer.json()["points"]) == len(readings)

    wait_for(landed, 20, "the written history in the lake")
    page.goto(plant.url + f"/machines/{PAST}")
    for range_, series in (("24h", ("1m", "5m")), ("15m", ("raw", "1m", "5m"))):
        page.get_by_test_id(f"range-{range_}").click()
        chart = page.get_by_test_id("chart-pressure")
        expect(chart).to_have_attribute("data-state", "ready", timeout=15_000)
        shown = chart.locator(".chart-box").evaluate("el => el.otData")
        for res in series:
            answer = plant.api.get(
                raw_url,
                params={"metric": "pressure", "resolution": res,
                        "from": shown["from"], "to": shown["to"]},
                headers=headers,
            ).json()  # fmt: skip
            points = answer["points"]
            assert points, f"{range_} {res}: the API has no points"
            assert shown["series"][res]["ts"] == [p["ts"] for p in points], (range_, res)
            values = [p["value"] if res == "raw" else p["mean"] for p in points]
            assert shown["series"][res]["values"] == pytest.approx(values), (range_, res)
    _shot(plant, page, "history-1440")


@pytest.mark.parametrize("width,height", [(390, 844), (1920, 1080)])
def test_layouts_fit_a_phone_and_a_wide_screen(
    plant: Plant, browser: Browser, width: int, height: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(f"sessionStorage.setItem('ot.apiKey', {json.dumps(OPERATE_SECRET)})")
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        for path, name, ready in (
            ("/", "fleet", "machine-tile"),
            ("/machines/motor-0000", "machine", "chart-temperature"),
            ("/alarms", "alarms", "active-alarms"),
        ):
            tab.goto(plant.url + path)
            tab.get_by_test_id(ready).first.wait_for(timeout=15_000)
            if name == "machine":
                expect(tab.get_by_test_id(ready)).to_have_attribute("data-state", "ready")
            overflow = tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} at {width} px scrolls sideways by {overflow} px"
            tab.screenshot(path=str(plant.shots / f"{name}-{width}.png"))
        assert not errors, errors
    finally:
        context.close()


def test_without_the_websocket_it_polls_and_says_so(plant: Plant, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.add_init_script(f"sessionStorage.setItem('ot.apiKey', {json.dumps(OPERATE_SECRET)})")
    context.route_web_socket("**/api/v1/stream", lambda ws: ws.close())  # no live stream
    tab = context.new_page()
    try:
        tab.goto(plant.url + "/")
        state = tab.get_by_test_id("connection")
        expect(state).to_have_attribute("data-state", "polling", timeout=15_000)
        expect(state).to_contain_text("Polling")
        tiles = tab.get_by_test_id("machine-tile")
        expect(tiles).to_have_count(plant.redis.zcard(plant.keys.machines), timeout=10_000)
        seen = tab.locator("[data-machine=motor-0000] dd").first
        before = seen.inner_text()
        wait_for(lambda: seen.inner_text() != before, 15, "a value to change by polling")
    finally:
        context.close()


def test_the_keyboard_reaches_a_machine_and_opens_it(plant: Plant, page: Page) -> None:
    page.goto(plant.url + "/")
    page.get_by_test_id("machine-tile").first.wait_for()
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement?.dataset?.testid") == "machine-tile":
            break
    else:
        raise AssertionError("20 Tab presses never reached a machine tile")
    machine = page.evaluate("document.activeElement.dataset.machine")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("machine-view")).to_be_visible()
    assert page.url.endswith(f"/machines/{machine}")


def test_no_console_errors(plant: Plant, page: Page) -> None:
    page.goto(plant.url + "/")
    page.get_by_test_id("machine-tile").first.wait_for()
    assert not plant.console, plant.console
