"""Regimes: stops and idle periods are not anomalies, the way down to a stop and settling after.

A non-negative signal far below its running level (a planned stop, an idle machine) is stopped:
left out of the envelope and the trend, and no level, drift, rate-of-change or stuck verdict is
given on it. On the short way down to a stop, downward level flags are not given either. After a
stop or a suppressed stretch the process settles: no level, drift or ramp verdict for
`settle_blocks` blocks. Without a status column, the transition into a stop is flagged once, LOW
(detector `regime`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ot_pipeline.detection.blocks import BlockStatistics, row_median
from ot_pipeline.detection.config import DetectorSettings
from ot_pipeline.detection.series import SeriesRows

STOP_CONFIRM_READINGS = 3  # consecutive stopped readings before a stop counts for settling
STOP_NOISE_SIGMAS = 8.0  # a stop lies this many noise sigmas below the level it leaves
DAY_MS = 86_400_000
PROFILE_DAYS = 7  # the daily profile: the same time of day on up to this many earlier days
PROFILE_MIN_DAYS = 2  # a daily pattern is one seen on two days at least (not a coincidence)
PROFILE_TOLERANCE_MS = 1_800_000  # readings around that time of day at most 2 x this apart


@dataclass
class Regimes:
    """Per row: which readings are judged at all, and which are stopped or on the way down."""

    ready: Any  # enough history (min_history_blocks blocks) and a value
    stopped: Any
    stopping: Any  # on the short way down to a stop: no downward level flag
    judge: Any  # ready and not stopped
    xr: Any  # the value of running readings (NaN when stopped or suppressed)


def daily_profile(series: SeriesRows, at: Any, times: Any) -> Any:
    """The usual value at the time of day of rows `at`: the median of the series' values at
    the same time of day (the closer of the readings around it) on up to PROFILE_DAYS earlier
    days; NaN where fewer than PROFILE_MIN_DAYS earlier days have readings then. Earlier
    readings only (causal); looked up by binary search on (series, time), so its cost is that
    of the rows asked about, not of the slice."""
    sid = series.sid.astype(np.int64)
    t = times.astype(np.int64)
    low = int(t.min())
    span = int(t.max()) - low + 2 * (PROFILE_DAYS + 1) * DAY_MS  # no lag reaches the series before
    key = sid * span + (t - low)  # series-major, time within
    order = np.argsort(key, kind="stable") if not np.all(key[1:] >= key[:-1]) else None
    sorted_key = key if order is None else key[order]
    value_at = series.xv if order is None else series.xv[order]
    lagged = np.full((at.size, PROFILE_DAYS), np.nan)
    for day in range(1, PROFILE_DAYS + 1):
        target = key[at] - day * DAY_MS
        j = np.clip(np.searchsorted(sorted_key, target), 1, sorted_key.size - 1)
        # readings on both sides of that time, close together (so of this series, and not
        # before its first reading); the closer one stands for it
        bracket = (sorted_key[j - 1] <= target) & (target <= sorted_key[j])
        bracket &= sorted_key[j] - sorted_key[j - 1] <= 2 * PROFILE_TOLERANCE_MS
        closer = target - sorted_key[j - 1] < sorted_key[j] - target
        j = np.where(closer, j - 1, j)
        near = bracket
        lagged[near, day - 1] = value_at[j[near]]
    known = np.count_nonzero(~np.isnan(lagged), axis=1) >= PROFILE_MIN_DAYS
    return np.where(known, row_median(lagged), np.nan)


def regimes(
    series: SeriesRows,
    stats: BlockStatistics,
    block: Any,
    s: DetectorSettings,
    times: Callable[[], Any] | None = None,
) -> Regimes:
    """Stopped and stopping readings, from the value against the series' running level and,
    where the series has earlier days, against its usual value at that time of day (`times`:
    the rows' epoch ms, asked for only when there are low readings to judge)."""
    size, xv, n = series.size, series.xv, series.n
    run_level, sigma_b = stats.run_level, stats.sigma_b
    ready = (n >= s.min_history_blocks * s.block_samples) & ~np.isnan(xv)
    if s.stop_fraction is None:
        stopped = np.zeros(size, dtype=bool)
        stopping = np.zeros(size, dtype=bool)
        going_down = np.zeros(size, dtype=bool)
    else:
        positive = (stats.frame["_run_floor"].to_numpy() >= 0.0)[block]
        stopped = positive & (xv < (s.stop_fraction * run_level)[block])
        stopped &= (run_level[block] - xv) > (STOP_NOISE_SIGMAS * sigma_b)[block]
        stopped &= ready
        if times is not None and stopped.any():
            # A low that is usual for the time of day (a count's nightly low, a daily cycle)
            # is not a stop: below stop_fraction of the daily profile as well, when known.
            at = np.flatnonzero(stopped)
            usual = daily_profile(series, at, times())
            with np.errstate(invalid="ignore"):
                seasonal = (xv[at] >= s.stop_fraction * usual) | (
                    usual - xv[at] <= STOP_NOISE_SIGMAS * sigma_b[block[at]]
                )
            stopped[at[seasonal]] = False
        # On the way down to a stop (a machine cooling, spinning down) a reading is not yet
        # stopped but not a downward anomaly either: the transition is flagged once, as a stop.
        stopping = positive & (xv < ((1.0 + 3.0 * s.stop_fraction) / 4.0 * run_level)[block])
        # ... and the way down is short: counted from where the value left the upper half of
        # the band between running and stopped (noise around the band does not restart it).
        going_down = positive & (xv < ((1.0 + s.stop_fraction) / 2.0 * run_level)[block])
    judge = ready & ~stopped
    xr = np.where(stopped, np.nan, xv)
    # The way down to a stop is short; a value that stays in that band is not stopping.
    stopping &= series.runs(going_down, "going_down") <= s.stop_transition_samples
    del going_down
    return Regimes(ready=ready, stopped=stopped, stopping=stopping, judge=judge, xr=xr)


def settled(series: SeriesRows, regime: Regimes, s: DetectorSettings) -> Any:
    """Judged rows that are not settling after a stop or a suppressed stretch (restart ramps,
    reheating, refilling): level, drift and ramp give no verdict until settle_blocks blocks have
    passed, nor in the series' first `baseline_blocks` blocks (its baseline is being learnt).
    A stop is a stop once STOP_CONFIRM_READINGS readings in a row are stopped: a noisy reading
    of a deep fault that dips below the stop threshold does not silence the level detector."""
    quiet = series.runs(regime.stopped, "stopped") >= STOP_CONFIRM_READINGS
    quiet |= series.suppressed
    # readings since the last stop or suppressed stretch (NONE: none in the series yet)
    judge_settled = series.runs.since(quiet, "quiet") > s.settle_blocks * s.block_samples
    judge_settled &= regime.judge
    # no verdict on a move before the envelope has seen the process move (baseline_blocks)
    judge_settled &= series.n >= s.baseline_blocks * s.block_samples
    return judge_settled


def scores(stopped: Any, first: Any) -> Any:
    """1.0 on the first stopped reading of each stop (detector `regime`, always LOW)."""
    stop_start = stopped.copy()
    stop_start[1:] &= ~stopped[:-1]
    stop_start[first] = stopped[first]
    return stop_start.astype(np.float64)
