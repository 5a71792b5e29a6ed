"""Regimes: stops and idle periods are not anomalies, the way down to a stop and settling after.

A non-negative signal far below its running level (a planned stop, an idle machine) is stopped:
left out of the envelope and the trend, and no level, drift, rate-of-change or stuck verdict is
given on it. On the short way down to a stop, downward level flags are not given either. After a
stop or a suppressed stretch the process settles: no level, drift or ramp verdict for
`settle_blocks` blocks. Without a status column, the transition into a stop is flagged once, LOW
(detector `regime`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ot_pipeline.detection.blocks import BlockStatistics
from ot_pipeline.detection.config import DetectorSettings
from ot_pipeline.detection.series import SeriesRows

STOP_CONFIRM_READINGS = 3  # consecutive stopped readings before a stop counts for settling


@dataclass
class Regimes:
    """Per row: which readings are judged at all, and which are stopped or on the way down."""

    ready: Any  # enough history (min_history_blocks blocks) and a value
    stopped: Any
    stopping: Any  # on the short way down to a stop: no downward level flag
    judge: Any  # ready and not stopped
    xr: Any  # the value of running readings (NaN when stopped or suppressed)


def regimes(series: SeriesRows, stats: BlockStatistics, block: Any, s: DetectorSettings) -> Regimes:
    """Stopped and stopping readings, from the value against the series' running level."""
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
        stopped &= (run_level[block] - xv) > (8.0 * sigma_b)[block]
        stopped &= ready
        # On the way down to a stop (a machine cooling, spinning down) a reading is not yet
        # stopped but not a downward anomaly either: the transition is flagged once, as a stop.
        stopping = positive & (xv < ((1.0 + 3.0 * s.stop_fraction) / 4.0 * run_level)[block])
        # ... and the way down is short: counted from where the value left the upper half of
        # the band between running and stopped (noise around the band does not restart it).
        going_down = positive & (xv < ((1.0 + s.stop_fraction) / 2.0 * run_level)[block])
    judge = ready & ~stopped
    xr = np.where(stopped, np.nan, xv)
    # The way down to a stop is short; a value that stays in that band is not stopping.
    stopping &= series.runs(going_down) <= s.stop_transition_samples
    del going_down
    return Regimes(ready=ready, stopped=stopped, stopping=stopping, judge=judge, xr=xr)


def settled(series: SeriesRows, regime: Regimes, s: DetectorSettings) -> Any:
    """Judged rows that are not settling after a stop or a suppressed stretch (restart ramps,
    reheating, refilling): level, drift and ramp give no verdict until settle_blocks blocks have
    passed. A stop is a stop once STOP_CONFIRM_READINGS readings in a row are stopped: a noisy
    reading of a deep fault that dips below the stop threshold does not silence the level
    detector."""
    index = series.index
    quiet = series.runs(regime.stopped) >= STOP_CONFIRM_READINGS
    quiet |= series.suppressed
    last_quiet = np.maximum.accumulate(np.where(quiet, index, -1))
    never_quiet = last_quiet < series.start  # no stop or suppressed stretch in the series yet
    judge_settled = (index - last_quiet > s.settle_blocks * s.block_samples) | never_quiet
    judge_settled &= regime.judge
    return judge_settled


def scores(stopped: Any, first: Any) -> Any:
    """1.0 on the first stopped reading of each stop (detector `regime`, always LOW)."""
    stop_start = stopped.copy()
    stop_start[1:] &= ~stopped[:-1]
    stop_start[first] = stopped[first]
    return stop_start.astype(np.float64)
