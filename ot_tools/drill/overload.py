"""overload: first measure what the consumers sustain here (a backlog drained by a lander and a
state writer together), then produce at twice that rate for a while: the consumers fall behind
with bounded memory (measured) and catch up afterwards, nothing lost or twice."""

from __future__ import annotations

from typing import Any

from ot_tools import drills
from ot_tools.drill.harness import Drill, DrillOptions, now


def run(options: DrillOptions) -> dict[str, Any]:
    """Twice the sustainable rate: consumers fall behind with bounded memory and catch up
    afterwards without loss."""
    quick = options.quick
    # A backlog large enough that joining the group and the first fetches weigh little: 300,000
    # drained at 23,066/s measured 13 s with its start-up, and the overload at twice that did
    # not leave the consumers behind (they drained about 42,000/s).
    backlog = 60_000 if quick else 1_200_000
    seconds = 15.0 if quick else 60.0
    with Drill("overload", options) as d:
        calibration = d.isolate("calibration")
        drills.produce(calibration, calibration.topics.readings, drills.readings(backlog))
        common = ["--progress-every", "1"]
        # Quick: --flush-age 1, as in the overload. With the default 10 s a backlog smaller than
        # a file's row limit per partition is committed only when its files age out, and the
        # calibration measured the flush age (60,000 readings "drained" at 5,214/s: twice that
        # left nobody behind). Not in the full drill: its 1.2 M readings fill files by rows,
        # and calibrated with it (149,859/s) the overload asked for 300,000/s and built a
        # backlog of 10.4 M readings, where the state writer peaked at 1,187 MB.
        flush = ["--flush-age", "1"] if quick else []
        d.child("cal-lander", "land", ["--group", "lander", *flush, *common], settings=calibration)
        d.child("cal-state", "state", ["--group", "state", *common], settings=calibration)
        d.monitor_lag("lander", "state", settings=calibration)
        d.wait_assigned("cal-lander", "cal-state")
        started = now()  # from the assignment: process start-up is not consumer throughput
        done = d.wait_caught_up(timeout=600)
        d.check("calibration backlog drained", done is not None)
        drain_s = (done or now()) - started
        sustainable = backlog / max(drain_s, 1e-3)
        d.stop_consumers("cal-lander", "cal-state")
        rate = options.rate or 2 * sustainable
        d.figures["sustainable_per_s"] = round(sustainable)
        d.say(f"sustainable here: {sustainable:,.0f} readings/s (backlog of {backlog:,} drained)")

        d.child("lander", "land", ["--group", "lander", "--flush-age", "1", *common])
        d.child("state", "state", ["--group", "state", *common])
        d.monitor_lag("lander", "state")
        d.wait_assigned("lander", "state")
        d.say(f"overload: {rate:,.0f} readings/s for {seconds:.0f} s")
        at = now()
        simulator = d.simulate(rate, seconds, machines=200)
        summary = d.wait_for_load(simulator, timeout=seconds + 120)
        end = now()
        achieved = summary.get("readings_per_s") or 0
        d.figures["overload_achieved_per_s"] = achieved
        d.figures["overload_produced"] = summary.get("produced")
        record = d.phase(
            "overload",
            f"{rate:,.0f} readings/s asked for {seconds:.0f} s ({achieved:,.0f}/s achieved)",
            at,
            end,
        )
        # The simulator shares the CPU too and may spread the volume over a longer time: what
        # counts is that the consumers fell well behind (a quarter of the excess the overload
        # adds at their measured rate: the calibration under-measures them a little).
        peak = max(record["peak_lag"].values(), default=0)
        d.check(
            "the consumers fell behind",
            peak > 0.25 * seconds * sustainable,
            [peak, round(sustainable)],
        )
        d.check("caught up", d.wait_caught_up(timeout=600) is not None)
        d.check("producer: no delivery failures", summary.get("delivery_failures") == 0)
        for name in ("lander", "state"):
            child = d.children[name]
            d.check(f"{name}: memory bounded (< 1 GiB)", child.peak_rss_kb < 2**20)
            d.check(f"{name}: never crashed", not child.exits)
        d.stop_consumers("lander", "state")
        calibrated = d.reconcile(state_group="state", settings=calibration, label="calibration: ")
        loaded = d.reconcile(state_group="state")
        from ot_tools.drill.harness import combine

        return d.report(combine({"calibration": calibrated, "overload": loaded}))
