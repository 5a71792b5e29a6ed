"""redis-outage: under load, Redis is paused (SIGSTOP: connections open, nothing answers), then
killed and restarted from its append-only file. The state writer backs off behind its circuit
breaker (no hot retry loop, no crash), resumes exactly; `ot api` answers its live endpoints with
503 and a reason meanwhile, while history (from the lake) keeps working."""

from __future__ import annotations

import signal
from typing import Any

import httpx

from ot_tools.drill.harness import Drill, DrillOptions, now


def _probe(client: httpx.Client, path: str) -> dict[str, Any]:
    started = now()
    try:
        r = client.get(path)
    except httpx.HTTPError as exc:
        return {"status": None, "error": type(exc).__name__, "seconds": round(now() - started, 2)}
    body = r.json() if r.headers.get("content-type", "").endswith("json") else {}
    reason = body.get("detail") or body.get("title") if isinstance(body, dict) else None
    return {"status": r.status_code, "reason": reason, "seconds": round(now() - started, 2)}


def run(options: DrillOptions) -> dict[str, Any]:
    """Redis paused, then killed and restarted, under load: the state writer backs off and
    resumes exactly; the API's live endpoints answer 503 while history keeps working."""
    quick = options.quick
    rate = options.rate or (1_000 if quick else 5_000)
    pause = 10.0 if quick else 30.0
    down = 4.0 if quick else 10.0
    with Drill("redis-outage", options) as d:
        common = ["--progress-every", "1"]
        d.child("lander", "land", ["--group", "lander", "--flush-age", "1", *common])
        d.child("state", "state", ["--group", "state", *common])
        port = options.port_base + 300
        d.child("api", "api", ["--port", str(port)], env={"OT_API_ANONYMOUS_READ": "1"})
        d.say(f"load: {rate:,.0f} readings/s until the faults are done")
        simulator = d.simulate(rate, 3600, machines=50)
        d.monitor_lag("lander", "state")
        d.wait_assigned("lander", "state")
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20)
        d.wait_for("ot api answers", lambda: _probe(client, "/health")["status"] == 200, 60)
        d.sleep(6)
        machines = client.get("/api/v1/machines").json()
        items = machines.get("items", machines) if isinstance(machines, dict) else machines
        machine = items[0]["machine_id"]
        history = f"/api/v1/machines/{machine}/history?metric=temperature"
        api: dict[str, Any] = {
            "before": {
                "live": _probe(client, "/api/v1/machines"),
                "history": _probe(client, history),
            }
        }

        at = now()
        d.stack.pause("redis")
        d.say(f"paused: Redis (SIGSTOP) for {pause:.0f} s")
        d.sleep(min(3.0, pause / 2))
        api["paused"] = {
            "live": _probe(client, "/api/v1/machines"),
            "history": _probe(client, history),
        }
        d.sleep(pause - (now() - at))
        d.stack.pause("redis", resume=True)
        d.phase("pause", f"Redis SIGSTOP for {pause:.0f} s, then SIGCONT", at, now())

        at = now()
        d.stack.kill("redis")
        d.say(f"killed: Redis; restarted after {down:.0f} s")
        d.sleep(min(2.0, down / 2))
        api["killed"] = {
            "live": _probe(client, "/api/v1/machines"),
            "history": _probe(client, history),
        }
        d.sleep(down - (now() - at))
        d.stack.start("redis")
        d.phase("restart", f"Redis SIGKILL, restarted after {down:.0f} s (AOF)", at, now())
        api["after"] = {"live": _probe(client, "/api/v1/machines")}
        client.close()
        d.figures["api"] = api

        for when in ("paused", "killed"):
            d.check(
                f"api while Redis {when}: live 503, history 200",
                api[when]["live"]["status"] == 503 and api[when]["history"]["status"] == 200,
                {k: v["status"] for k, v in api[when].items()},
            )
        d.check("api after: live 200", api["after"]["live"]["status"] == 200)
        simulator.signal(signal.SIGTERM)
        d.wait_for_load(simulator, timeout=120)
        d.check("caught up", d.wait_caught_up(timeout=180) is not None)
        state = d.children["state"]
        trips = state.events("sink_unavailable")
        probes = state.events("sink_still_unavailable")
        back = state.events("sink_recovered")
        d.figures["state_writer"] = {
            "breaker_trips": len(trips),
            "probes_while_open": len(probes),
            "recoveries": [e.get("down_s") for e in back],
        }
        d.check(
            "state writer: breaker opened and closed", len(trips) >= 2 and len(back) == len(trips)
        )
        limit = 2 * (pause + down)  # backoff with jitter: a few probes, never a hot loop
        d.check("state writer: no hot retry loop", len(probes) <= limit, len(probes))
        d.check("state writer: never crashed", not state.exits, state.exits)
        d.stop_consumers("lander", "state", "api")
        return d.report(d.reconcile(state_group="state"))
