"""What a benchmark measures of other processes, from /proc and wait4: CPU seconds and resident
memory of a process tree, and one command run to its end with its exact CPU time and peak RSS."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def children(pid: int) -> list[int]:
    """The direct children of a process (every thread's)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return found


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack += children(p)
    return out


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 on), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(")") + 2 :].split()


def own_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (its threads included), 0 if it is gone."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields else 0.0


def cpu_with_reaped(pid: int) -> float:
    """A process's CPU time plus what its exited children used once it reaped them (cutime,
    cstime): summed over a tree, this does not drop when a short-lived process ends."""
    fields = _stat_fields(pid)
    return sum(int(f) for f in fields[11:15]) / TICKS if fields else 0.0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its live descendants."""
    return sum(own_cpu_seconds(p) for p in tree(pid))


def rss_bytes(pid: int) -> int:
    """Resident memory of one process, 0 if it is gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0


def high_water_mark(pid: int) -> int:
    """The peak resident memory of one process so far (VmHWM), in bytes; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


@dataclass(frozen=True)
class Finished:
    """One command run to its end."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float  # user + system of the process and the children it waited for (wait4)
    peak_rss_mb: float  # the process's own high-water mark of resident memory (VmHWM)


def run_measured(
    cmd: Sequence[str], env: Mapping[str, str], timeout: float, cwd: Path | None = None
) -> Finished:
    """Run `cmd` to its end; its exact CPU time comes from wait4 and its peak RSS from the
    kernel's high-water mark, read until it exits (wait4's ru_maxrss would count the parent's
    pages the child had before its exec). Output goes through files so a chatty process never
    blocks on a full pipe."""
    out_path = Path(f"/tmp/ot-bench-{os.getpid()}-{time.monotonic_ns()}")
    err_path = out_path.with_suffix(".err")
    started = time.perf_counter()
    try:
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                list(cmd), env=dict(env), stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd
            )
            deadline = started + timeout
            peak = 0
            while True:
                peak = max(peak, high_water_mark(proc.pid))
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        return Finished(
            returncode=proc.returncode,
            stdout=out_path.read_text(errors="replace"),
            stderr=err_path.read_text(errors="replace"),
            wall_s=time.perf_counter() - started,
            cpu_s=usage.ru_utime + usage.ru_stime,
            peak_rss_mb=peak / 2**20,
        )
    finally:
        out_path.unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
