"""Dashboard benchmark (`ot bench dashboard`), measured in Debian's Chromium (Playwright):

- **bundle**: the production build's JavaScript and CSS, gzipped (level 9), as a browser fetches
  them (`dashboard/dist`, made by `make setup`);
- **charts**: uPlot against ECharts (its `common` build) for the dashboard's case, many small live
  charts: 100 charts of 5 series (500 series) of 900 points (15 minutes at 1 Hz), each series
  gaining a point per round; the time of one round (every chart updated and drawn), median of
  the rounds, and each library's minified size gzipped;
- **first paint**: a fresh tab on localhost until the first machine tile is drawn (the first
  meaningful paint: the fleet with its states) and the first contentful paint, median of loads;
- **busy share**: the share of wall time the page's main thread is busy (CDP `TaskDuration`) with
  500 simulated machines sending every metric at 1 Hz through the real pipeline (`ot simulate`,
  `ot state`, `ot api`, the WebSocket), the fleet grid open; target under 30 %. The DOM updates
  per second are counted too, so a page that stopped updating cannot pass as idle.
"""

from __future__ import annotations

import gzip
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis

from ot_tools import drills
from ot_tools.bench.gateway import free_port
from ot_tools.chromium import ARGS, ensure_chromium
from streaming.redis_keys import RedisKeys
from streaming.settings import Settings, Topics
from streaming.stack.local import REPO_ROOT
from streaming.stack.topics import create_topics, delete_topics

DASHBOARD = REPO_ROOT / "dashboard"
DIST = DASHBOARD / "dist"
LIBS = {
    "uplot": DASHBOARD / "node_modules" / "uplot" / "dist" / "uPlot.iife.min.js",
    "echarts": DASHBOARD / "node_modules" / "echarts" / "dist" / "echarts.common.min.js",
}
MACHINES = 500
BUSY_TARGET = 0.30

# Both libraries get the same work: build the charts, then rounds of "append a point to every
# series and redraw"; each round is timed until the next macrotask (both draw synchronously or
# in a microtask before it).
CHART_PAGE = """
window.benchCharts = async (lib, charts, series, points, rounds) => {
  const root = document.createElement('div');
  document.body.appendChild(root);
  const t0 = Date.now() - points * 1000;
  const xs = Array.from({length: points}, (_, i) => t0 + i * 1000);
  const ys = Array.from({length: charts * series}, (_, s) =>
      Array.from({length: points}, (_, i) => Math.sin(i / 20 + s) * 10 + s));
  const made = [];
  for (let c = 0; c < charts; c++) {
    const el = document.createElement('div');
    el.style.cssText = 'width:300px;height:120px;display:inline-block';
    root.appendChild(el);
    if (lib === 'uplot') {
      const opts = {width: 300, height: 120, ms: 1, legend: {show: false},
        series: [{}, ...Array.from({length: series},
                                   () => ({stroke: '#7fb3ff', points: {show: false}}))]};
      made.push(new uPlot(opts, [xs, ...ys.slice(c * series, c * series + series)], el));
    } else {
      const chart = echarts.init(el, null, {renderer: 'canvas'});
      chart.setOption({animation: false, xAxis: {type: 'time'}, yAxis: {type: 'value', scale: true},
        grid: {left: 30, right: 5, top: 5, bottom: 20},
        series: Array.from({length: series}, (_, s) => ({type: 'line', showSymbol: false,
          data: xs.map((x, i) => [x, ys[c * series + s][i]])}))});
      made.push(chart);
    }
  }
  await new Promise(r => setTimeout(r, 50));
  const times = [];
  for (let r = 0; r < rounds; r++) {
    const start = performance.now();
    const x = xs[xs.length - 1] + 1000;
    xs.push(x); xs.shift();
    for (const y of ys) { y.push(Math.random() * 10); y.shift(); }
    for (let c = 0; c < charts; c++) {
      const mine = ys.slice(c * series, c * series + series);
      if (lib === 'uplot') made[c].setData([xs, ...mine]);
      else made[c].setOption({series: mine.map(y => ({data: xs.map((x, i) => [x, y[i]])}))});
    }
    await new Promise(r => setTimeout(r, 0));
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
};
"""

# Counts DOM changes in the grid from page start (machine tiles re-rendered with new values).
MUTATIONS = """
window.__mutations = 0;
new MutationObserver((records) => { window.__mutations += records.length; })
  .observe(document, {subtree: true, childList: true, characterData: true});
window.__firstTile = null;
const seen = new MutationObserver(() => {
  if (window.__firstTile === null && document.querySelector('[data-testid=machine-tile]')) {
    window.__firstTile = performance.now();
    seen.disconnect();
  }
});
seen.observe(document, {subtree: true, childList: true});
"""


def _gzip_kb(path: Path) -> float:
    return round(len(gzip.compress(path.read_bytes(), 9)) / 1024, 1)


def bundle_figures() -> dict[str, Any]:
    if not (DIST / "index.html").exists():
        raise RuntimeError("dashboard/dist has no build: run `make setup` first")
    assets = list((DIST / "assets").iterdir())
    js = sum(_gzip_kb(p) for p in assets if p.suffix == ".js")
    css = sum(_gzip_kb(p) for p in assets if p.suffix == ".css")
    return {"bundle_js_gzip_kb": round(js, 1), "bundle_css_gzip_kb": round(css, 1)}


def chart_figures(browser: Any, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    charts, series, points, rounds = (20, 5, 900, 5) if quick else (100, 5, 900, 15)
    for lib, path in LIBS.items():
        if not path.exists():
            raise RuntimeError(f"{path} is missing: `npm ci` in dashboard/ first")
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_content("<!doctype html><body></body>")
        page.add_script_tag(path=str(path))
        page.add_script_tag(content=CHART_PAGE)
        out[f"charts_{lib}_round_ms"] = round(
            page.evaluate(
                "([l, c, s, p, r]) => window.benchCharts(l, c, s, p, r)",
                [lib, charts, series, points, rounds],
            ),
            1,
        )
        out[f"charts_{lib}_min_gzip_kb"] = _gzip_kb(path)
        page.close()
    out["charts_series"] = charts * series
    out["charts_points_per_series"] = points
    return out


class LivePlant:
    """500 machines through the real streaming side: `ot simulate` (real time, every metric at
    1 Hz), `ot state` and `ot api` (anonymous reads), on topics and a Redis prefix of its own."""

    def __init__(self, settings: Settings, machines: int, logs: Path, chaos: str = "none") -> None:
        suffix = uuid.uuid4().hex[:8]
        self.topics = Topics(
            readings=f"bench-dash-{suffix}",
            dlq=f"bench-dash-{suffix}.dlq",
            alerts=f"bench-dash-alerts-{suffix}",
            faults=f"bench-dash-faults-{suffix}",
        )
        self.settings = replace(settings, topics=self.topics, redis_prefix=f"bench-dash-{suffix}:")
        self.machines = machines
        self.chaos = chaos
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> LivePlant:
        create_topics(self.settings.kafka_bootstrap_servers, self.topics, readings_partitions=6)
        env = {**drills.child_env(self.settings), "OT_API_ANONYMOUS_READ": "true"}
        self.logs.mkdir(parents=True, exist_ok=True)
        for name, args in (
            ("simulate", ["simulate", "--machines", str(self.machines), "--interval", "1",
                          "--duration", "0", "--chaos", self.chaos]),
            ("state", ["state"]),
            ("api", ["api", "--port", str(self.port)]),
        ):  # fmt: skip
            with open(self.logs / f"bench-dashboard-{name}.log", "ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "streaming.cli", *args],
                        env=env,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                    )
                )
        client = redis.Redis.from_url(self.settings.redis_url)
        keys = RedisKeys(self.settings.redis_prefix)
        deadline = time.monotonic() + 120
        while client.zcard(keys.machines) < self.machines or not self._answers():
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"the live plant did not come up: see {self.logs}")
            time.sleep(0.5)
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        delete_topics(self.settings.kafka_bootstrap_servers, self.topics.all())
        client = redis.Redis.from_url(self.settings.redis_url)
        keys = list(client.scan_iter(RedisKeys(self.settings.redis_prefix).scan_all, count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


def paint_figures(browser: Any, url: str, loads: int) -> dict[str, Any]:
    first_tile, fcp = [], []
    for _ in range(loads):
        context = browser.new_context(viewport={"width": 1920, "height": 1080})
        page = context.new_page()
        page.add_init_script(MUTATIONS)
        page.goto(url + "/")
        page.wait_for_function("window.__firstTile !== null", timeout=30_000)
        first_tile.append(page.evaluate("window.__firstTile"))
        fcp.append(
            page.evaluate(
                "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1"
            )
        )
        context.close()
    return {
        "first_tile_paint_ms": round(statistics.median(first_tile)),
        "first_contentful_paint_ms": round(statistics.median(fcp)),
    }


def busy_figures(browser: Any, url: str, machines: int, seconds: float) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    page = context.new_page()
    page.add_init_script(MUTATIONS)
    page.goto(url + "/")
    page.wait_for_function(
        f"document.querySelectorAll('[data-testid=machine-tile]').length >= {machines}",
        timeout=60_000,
    )
    time.sleep(3)  # past the first snapshot's render
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable", {"timeDomain": "timeTicks"})

    def sample() -> tuple[float, float, int]:
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        return metrics["TaskDuration"], time.monotonic(), int(page.evaluate("window.__mutations"))

    busy0, t0, m0 = sample()
    time.sleep(seconds)
    busy1, t1, m1 = sample()
    context.close()
    share = (busy1 - busy0) / (t1 - t0)
    return {
        "busy_machines": machines,
        "busy_seconds": round(t1 - t0, 1),
        "busy_main_thread_share": round(share, 3),
        "busy_dom_updates_per_s": round((m1 - m0) / (t1 - t0)),
        "busy_under_target": share < BUSY_TARGET,
    }


def run(settings: Settings, quick: bool) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {"load_avg_1m": round(os.getloadavg()[0], 2), **bundle_figures()}
    machines = 100 if quick else MACHINES
    chromium = ensure_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=ARGS)
        try:
            out.update(chart_figures(browser, quick))
            with LivePlant(settings, machines, REPO_ROOT / ".stack" / "logs") as plant:
                out.update(paint_figures(browser, plant.url, 2 if quick else 5))
                out.update(busy_figures(browser, plant.url, machines, 8 if quick else 20))
        finally:
            browser.close()
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    return out
