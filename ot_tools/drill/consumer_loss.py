"""consumer-loss: three landers and two state writers in their groups under load; one of each is
SIGKILLed (and restarted), then another is stopped with SIGTERM; the survivors take over. Run
twice: with dynamic membership and with static membership (`--instance-id`)."""

from __future__ import annotations

import signal
from typing import Any

from ot_tools.drill.harness import Child, Drill, DrillOptions, combine, now
from streaming.settings import Settings

PARTITIONS = 6


def takeover_s(survivors: list[Child], since: float, timeout_at: float) -> float | None:
    """Seconds from `since` until the survivors' assignments (their `assigned`/`revoked`/`lost`
    log lines after `since`) cover every partition again."""
    events = sorted(
        ((e["ts"], c.name, e) for c in survivors for e in c.events(since=since)),
        key=lambda x: x[0],
    )
    held: dict[str, set[int]] = {}
    for ts, name, e in events:
        if ts > timeout_at:
            break
        if e["event"] == "assigned":
            held[name] = {int(p) for p in e["partitions"]}
        elif e["event"] in {"revoked", "lost"}:
            held[name] = set()
        else:
            continue
        if set().union(*held.values()) >= set(range(PARTITIONS)):
            return round(ts - since, 2)
    return None


def run(options: DrillOptions) -> dict[str, Any]:
    """Three landers and two state writers; SIGKILL one of each, then SIGTERM one: the survivors
    take over (dynamic and static membership), nothing lost or twice."""
    quick = options.quick
    rate = options.rate or (2_000 if quick else 5_000)
    seconds = 30 if quick else 75
    with Drill("consumer-loss", options) as d:
        parts = {}
        takeovers: dict[str, dict[str, float | None]] = {}
        for mode in ("dynamic", "static"):
            settings = d.settings if mode == "dynamic" else d.isolate(mode)
            parts[mode] = _one_mode(d, mode, settings, rate, seconds, takeovers)
        d.figures["takeover_s"] = takeovers
        return d.report(combine(parts))


def _one_mode(
    d: Drill,
    mode: str,
    settings: Settings,
    rate: float,
    seconds: float,
    takeovers: dict[str, dict[str, float | None]],
) -> dict[str, Any]:
    static = mode == "static"
    lgroup, sgroup = d.group(f"lander-{mode}", settings), d.group(f"state-{mode}", settings)
    common = ["--progress-every", "1", "--session-timeout-ms", "10000"]
    landing = ["--flush-age", "1", "--flush-rows", "20000"]

    def consumer(kind: str, i: int) -> Child:
        name = f"{mode}-{kind}-{i}"
        group = lgroup if kind == "lander" else sgroup
        args = ["--group", group, *common, *(landing if kind == "lander" else [])]
        if static:
            args += ["--instance-id", f"{kind}-{i}"]
        command = "land" if kind == "lander" else "state"
        return d.child(name, command, args, settings=settings, supervised=False)

    d.say(f"{mode}: {rate:,.0f} readings/s for {seconds} s, 3 landers, 2 state writers")
    simulator = d.simulate(rate, seconds, name=f"{mode}-simulator", settings=settings)
    landers = [consumer("lander", i) for i in range(3)]
    writers = [consumer("state", i) for i in range(2)]
    d.monitor_lag(lgroup, sgroup, settings=settings)
    d.wait_assigned(*(c.name for c in [*landers, *writers]))
    d.sleep(6)

    for sig, victims in ((signal.SIGKILL, (0, 0)), (signal.SIGTERM, (1, 1))):
        lander, writer = landers[victims[0]], writers[victims[1]]
        at = lander.signal(sig)
        writer.signal(sig)
        d.say(f"{mode}: {sig.name} {lander.name} and {writer.name}")
        survivors_l = [c for c in landers if c.alive and c is not lander]
        survivors_s = [c for c in writers if c.alive and c is not writer]
        d.sleep(1)
        deadline = at + 60
        took_l = took_s = None
        while now() < deadline and (took_l is None or took_s is None):
            took_l = takeover_s(survivors_l, at, deadline)
            took_s = takeover_s(survivors_s, at, deadline)
            d.sleep(0.5)
        takeovers[f"{mode} {sig.name}"] = {"landers": took_l, "state_writers": took_s}
        d.check(
            f"{mode} {sig.name}: survivors took over", took_l is not None and took_s is not None
        )
        d.phase(
            f"{mode} {sig.name}",
            f"{sig.name} one lander (of 3) and one state writer (of 2), {mode} membership",
            at,
            None,
            takeover_s=max(took_l or 0, took_s or 0),
            takeover_by_group={"landers": took_l, "state_writers": took_s},
        )
        if sig is signal.SIGKILL:  # back to full strength for the next fault
            lander.start()
            writer.start()
            d.sleep(6)

    d.wait_for_load(simulator, timeout=seconds + 60)
    d.wait_caught_up(timeout=120)
    live = [c.name for c in [*landers, *writers] if c.alive]
    d.stop_consumers(*live)
    return d.reconcile(state_group=sgroup, settings=settings, label=f"{mode}: ")
