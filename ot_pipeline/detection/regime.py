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
import polars as pl

from ot_pipeline.detection.blocks import BlockStatistics, row_median
from ot_pipeline.detection.config import DetectorSettings
from ot_pipeline.detection.series import SeriesRows

STOP_CONFIRM_READINGS = 3  # consecutive stopped readings before a stop counts for settling
STOP_NOISE_SIGMAS = 8.0  # a stop lies this many noise sigmas below the level it leaves
DAY_MS = 86_400_000
PROFILE_DAYS = 7  # the daily profile: the same time of day on up to this many earlier days
PROFILE_MIN_DAYS = 2  # a daily pattern is one seen on two days at least (not a coincidence)
PROFILE_BIN_MS = 300_000  # the profile's resolution: mean values of 5-minute bins
BIN_SPAN = 1 << 40  # bins of one series in a key: series * BIN_SPAN + bin


@dataclass
class Regimes:
    """Per row: which readings are judged at all, and which are stopped or on the way down."""

    ready: Any  # enough history (min_history_blocks blocks) and a value
    stopped: Any
    stopping: Any  # on the short way down to a stop: no downward level flag
    judge: Any  # ready and not stopped
    xr: Any  # the value of running readings (NaN when stopped or suppressed)


def profile_bins(series: SeriesRows, times: Any) -> pl.DataFrame:
    """Per series and PROFILE_BIN_MS bin of event time: the sum and count of its values (the
    rows a resumed batch has not seen before only, the others are in its state's bins)."""
    resume = series.resume
    new = ~np.isnan(series.xv)
    if resume is not None:
        new &= series.n >= resume.seen[series.sid]
    at = np.flatnonzero(new)
    key = series.sid[at].astype(np.int64) * BIN_SPAN + times[at].astype(np.int64) // PROFILE_BIN_MS
    values = series.xv[at]
    if not np.all(key[1:] >= key[:-1]):  # rows out of time order (a skewed clock): sort once
        order = np.argsort(key, kind="stable")
        key, values = key[order], values[order]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else key
    bins = pl.DataFrame(
        {
            "_sid": key[first] // BIN_SPAN,
            "_bin": key[first] % BIN_SPAN,
            "_sum": np.add.reduceat(values, first) if key.size else values,
            "_count": np.diff(np.r_[first, key.size]).astype(np.int64),
        }
    )
    if resume is not None:
        bins = (
            pl.concat([resume.prior_bins, bins], how="vertical_relaxed")
            .group_by("_sid", "_bin")
            .agg(pl.col("_sum").sum(), pl.col("_count").sum())
        )
        resume.record_bins(bins, PROFILE_DAYS * DAY_MS // PROFILE_BIN_MS + 1)
        bins = bins.sort("_sid", "_bin")
    return bins


def daily_profile(bins: pl.DataFrame, sid: Any, t: Any) -> Any:
    """The usual value at the time of day of rows (`sid`, `t`): the median, over up to
    PROFILE_DAYS earlier days, of the series' mean value in the PROFILE_BIN_MS bin at that time
    of day; NaN where fewer than PROFILE_MIN_DAYS earlier days have readings then. Earlier days
    only (causal); a binary search on (series, bin), so its cost is that of the rows asked
    about. Bins (sums and counts) are what a state carries from batch to batch."""
    key = bins["_sid"].to_numpy() * BIN_SPAN + bins["_bin"].to_numpy()
    mean = bins["_sum"].to_numpy() / bins["_count"].to_numpy()
    here = sid.astype(np.int64) * BIN_SPAN + t.astype(np.int64) // PROFILE_BIN_MS
    lagged = np.full((sid.size, PROFILE_DAYS), np.nan)
    if key.size:
        for day in range(1, PROFILE_DAYS + 1):
            target = here - day * (DAY_MS // PROFILE_BIN_MS)
            j = np.clip(np.searchsorted(key, target), 0, key.size - 1)
            found = key[j] == target
            lagged[found, day - 1] = mean[j[found]]
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
        # a resumed batch keeps its profile bins for the next one, stops or not
        wanted = times is not None and (series.resume is not None or stopped.any())
        t = times() if times is not None and wanted else None
        if t is not None:
            bins = profile_bins(series, t)
        if t is not None and stopped.any():
            # A low that is usual for the time of day (a count's nightly low, a daily cycle)
            # is not a stop: below stop_fraction of the daily profile as well, when known.
            at = np.flatnonzero(stopped)
            usual = daily_profile(bins, series.sid[at], t[at])
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
