"""lake-disk-full: the lake on a small filesystem of the drill's own (tmpfs) that fills up under
load. The lander must stop landing and say why, corrupt and skip nothing, and resume exactly once
space returns; the drill supervises it as `make run` does (restart with backoff)."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from ot_tools.drill.harness import Drill, DrillError, DrillOptions, now


class SmallDisk:
    """A tmpfs of `size_mb` at `mount`, most of it taken by a filler file that `free()` removes."""

    def __init__(self, mount: Path, size_mb: int, leave_mb: int) -> None:
        self.mount, self.size_mb, self.leave_mb = mount, size_mb, leave_mb

    @property
    def filler(self) -> Path:
        return self.mount / "filler"

    def __enter__(self) -> SmallDisk:
        self.mount.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.mount)],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise DrillError(
                f"lake-disk-full mounts a small tmpfs and needs root: {done.stderr.strip()}"
            )
        with open(self.filler, "wb") as f:
            f.write(b"\0" * ((self.size_mb - self.leave_mb) * 2**20))
        return self

    def free_mb(self) -> float:
        st = os.statvfs(self.mount)
        return round(st.f_bavail * st.f_frsize / 2**20, 2)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", "-l", str(self.mount)], capture_output=True)


def run(options: DrillOptions) -> dict[str, Any]:
    """The lake's filesystem fills up under load: the lander stops and says why, corrupts and
    skips nothing, and resumes exactly when space returns."""
    quick = options.quick
    rate = options.rate or (3_000 if quick else 5_000)
    full_for = 15.0 if quick else 30.0
    with (
        Drill("lake-disk-full", options) as d,
        SmallDisk(d.work / "small-disk", size_mb=64, leave_mb=1) as disk,
    ):
        settings = replace(d.settings, lake_dir=disk.mount / "lake")
        args = ["--group", "lander", "--flush-age", "1", "--progress-every", "1"]
        lander = d.child("lander", "land", args, settings=settings)
        d.say(f"load: {rate:,.0f} readings/s; lake on a 64 MiB tmpfs with 1 MiB free")
        simulator = d.simulate(rate, 3600, machines=50)
        d.monitor_lag("lander")
        d.wait_assigned("lander")
        full_at = d.wait_for(
            "the lake's filesystem filled up",
            lambda: bool(lander.exits) or disk.free_mb() < 0.05,
            180,
        )
        d.say(f"full: {disk.free_mb()} MiB free; staying full for {full_for:.0f} s")
        d.sleep(full_for)
        exits_while_full = list(lander.exits)
        disk.free()
        healed = now()
        d.say(f"space returned: {disk.free_mb()} MiB free")
        d.phase(
            "disk-full",
            f"the lake's filesystem full for {full_for:.0f} s, then space returned",
            full_at,
            healed,
        )
        simulator.signal(signal.SIGTERM)
        d.wait_for_load(simulator, timeout=120)
        d.check("caught up", d.wait_caught_up(timeout=180) is not None)
        d.stop_consumers("lander")
        said = [e["last_error"] or "" for e in exits_while_full]
        d.figures["lander_exits_while_full"] = exits_while_full
        d.check("the lander stopped landing while full", bool(exits_while_full))
        d.check(
            "the lander said why (no space left)",
            bool(said) and all("No space left" in s or "ENOSPC" in s for s in said),
            said[:2],
        )
        temps = [p.name for p in (disk.mount / "lake").rglob("*") if ".tmp" in p.name]
        d.check("no temporary file left in the lake", not temps, temps[:5])
        reconciled = d.reconcile({"lake": settings.lake_dir}, settings=settings)
        return d.report(reconciled)
