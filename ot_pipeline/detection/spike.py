"""`spike`: 1..`spike_max_readings` readings all on one side of the level before them, then back.

An excursion of j readings must clear `spike_threshold` / sqrt(j) noise sigmas (at least 0.6 x
the threshold) on every one of them, and the next reading must be back within
`spike_return_share` of the excursion; flagged on that reading. The level before is the median of
the SPIKE_BASE_READINGS readings before the excursion (a min/max network). Judged in every
regime, only not on suppressed readings.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection.blocks import (
    BlockLayout,
    block_history,
    padded,
    resumed_history,
    row_median,
)
from ot_pipeline.detection.config import DetectorSettings
from ot_pipeline.detection.resume import Resume

SPIKE_BASE_READINGS = 5  # the level before an excursion is the median of this many readings
SPIKE_USUAL_QUANTILE = 0.9  # spikes in more than 10 % of blocks are the series' normal
SPIKE_USUAL_MIN_BLOCKS = 10
NUMPY_CHUNK = 1 << 19  # rows per slice of elementwise numpy work (4 MiB per float column)


def scores(
    s: DetectorSettings,
    xv: Any,
    sigma: Any,
    ready: Any,
    n: Any,
    layout: BlockLayout,
    resume: Resume | None = None,
) -> Any:
    """Spike score per row (0 where none or not yet judged: too early in the series).

    On a series whose short excursions are frequent (a utilisation jumping between levels),
    a spike must also exceed `spike_usual_threshold` x the usual largest spike score of a
    block (its SPIKE_USUAL_QUANTILE over the earlier blocks, known after SPIKE_USUAL_MIN_BLOCKS):
    0 where fewer than 10 % of blocks hold a spike (a normal series: nothing changes), the
    series' own behaviour where excursions are common.
    """
    spike = _spike_scores(s, xv, sigma, _rolling_median(xv, SPIKE_BASE_READINGS))
    spike[~(ready & (n > s.spike_max_readings + SPIKE_BASE_READINGS))] = 0.0
    if s.spike_usual_threshold > 0 and layout.count:
        largest = np.fmax.reduce(padded(spike, layout, s.block_samples), axis=1)
        usual = resumed_history(
            pl.DataFrame({"_sid": layout.sid, "_spike": largest}, nan_to_null=True),
            layout,
            resume,
            lambda blocks: block_history(
                blocks,
                {
                    "_usual": pl.col("_spike")
                    .rolling_quantile(
                        SPIKE_USUAL_QUANTILE,
                        window_size=s.history_blocks,
                        min_samples=SPIKE_USUAL_MIN_BLOCKS,
                    )
                    .shift(1)
                },
            ),
        )["_usual"].to_numpy()
        scale = np.fmax(s.spike_usual_threshold * usual, 1.0)  # NaN (not known yet): 1
        if (scale > 1.0).any():
            spike /= scale[layout.block]
    return spike


def _spike_threshold(s: DetectorSettings, readings: int) -> float:
    return max(s.spike_threshold / math.sqrt(readings), 0.6 * s.spike_threshold)


def _spike_scores(s: DetectorSettings, xv: Any, sigma: Any, med: Any) -> Any:
    """`_spike_chunk` over slices of rows: small temporaries are reused by the allocator, large
    ones would be fresh (page-faulted) memory every time."""
    out = np.empty_like(xv)
    context = s.spike_max_readings + 1  # rows before: the excursion and the level before it
    for begin in range(0, xv.size, NUMPY_CHUNK):
        end = min(begin + NUMPY_CHUNK, xv.size)
        if begin >= context:
            xs, ms = xv[begin - context : end], med[begin - context : end]
        else:  # nothing before the first row
            pad = np.full(context - begin, np.nan)
            xs, ms = np.concatenate([pad, xv[:end]]), np.concatenate([pad, med[:end]])
        out[begin:end] = _spike_chunk(s, xs, ms, sigma[begin:end])
    return out


def _spike_chunk(s: DetectorSettings, xs: Any, ms: Any, sigma: Any) -> Any:
    """Spike score (0 where none) of the rows after the first spike_max_readings + 1 of `xs`:
    readings t-j .. t-1 all far, on one side, from the level before them (`ms`, the rolling
    median of the last few readings, j + 1 rows back), and reading t back near that level. NaN
    (a null) never passes a comparison.

    Deviations are measured from the midpoint of the level before and the level after, so a
    ramp (where the two differ) does not look like an excursion. An excursion of j readings must
    clear threshold / sqrt(j) on every one of them: as unlikely by chance as one reading clearing
    the full threshold. Rows earlier are views of `xs`; a few buffers are reused throughout.
    """
    rows = sigma.size
    c = xs.size - rows

    def back(values: Any, k: int) -> Any:  # `values` k rows earlier
        return values[c - k : c - k + rows]

    x = back(xs, 0)
    best = np.zeros(rows)
    mid, low, high, work, threshold = (np.empty(rows) for _ in range(5))
    hit, above = np.empty(rows, dtype=bool), np.empty(rows, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(1, s.spike_max_readings + 1):
            base = back(ms, j + 1)
            np.add(base, x, out=mid)
            mid /= 2.0
            np.subtract(back(xs, 1), mid, out=low)
            np.copyto(high, low)
            for k in range(2, j + 1):
                np.subtract(back(xs, k), mid, out=work)
                np.fmin(low, work, out=low)
                np.fmax(high, work, out=high)
            # size: low where all are above, -high where all are below, else 0 (one term is 0)
            np.fmax(low, 0.0, out=low)
            np.negative(high, out=high)
            np.fmax(high, 0.0, out=high)
            size = np.add(low, high, out=low)
            np.multiply(_spike_threshold(s, j), sigma, out=threshold)
            np.subtract(x, base, out=work)
            np.abs(work, out=work)
            np.less(work, np.multiply(s.spike_return_share, size, out=high), out=hit)
            np.greater(size, threshold, out=above)
            hit &= above
            at = np.flatnonzero(hit)
            best[at] = np.fmax(best[at], size[at] / threshold[at])
    return best


def median_of_5(values: Any) -> Any:
    """Median of each value and the 4 before it (the first 4 rows are not meaningful): a
    selection network of minima and maxima, always one of the 5 values, as a sort would pick.
    Over slices of rows, in four reused buffers (fresh large temporaries are page-faulted in)."""
    out = np.empty_like(values)
    a, b, c, d = (np.empty(min(NUMPY_CHUNK, values.size)) for _ in range(4))
    for begin in range(0, values.size, NUMPY_CHUNK):
        first = max(begin - 4, 0)
        part = values[first : begin + NUMPY_CHUNK]
        if part.size < 5:
            break
        rows = part.size - 4
        lag = [part[4 - k : part.size - k] for k in range(5)]  # lag[k]: k rows earlier
        low_ab, high_ab, low_cd, high_cd = a[:rows], b[:rows], c[:rows], d[:rows]
        np.minimum(lag[0], lag[1], out=low_ab)
        np.maximum(lag[0], lag[1], out=high_ab)
        np.minimum(lag[2], lag[3], out=low_cd)
        np.maximum(lag[2], lag[3], out=high_cd)
        # the smallest and the largest of the first four are not the median: drop them
        low = np.maximum(low_ab, low_cd, out=low_ab)
        high = np.minimum(high_ab, high_cd, out=high_ab)
        lower = np.minimum(low, high, out=low_cd)
        upper = np.maximum(low, high, out=high_cd)
        np.minimum(upper, lag[4], out=upper)
        np.maximum(lower, upper, out=out[first + 4 : first + part.size])
    out[: min(4, values.size)] = np.nan  # windows cut short: recomputed by the caller
    return out


def _rolling_median(values: Any, window: int) -> Any:
    """Median of the non-missing values among the last `window` (NaN when none), per row.

    Polars' rolling median is fast on data without nulls; the few windows that hold a missing
    value (a suppressed reading) or reach before the first row are recomputed on their own.
    """
    missing = np.isnan(values)
    filled = np.where(missing, 0.0, values)
    if window == 5:
        med = median_of_5(filled)
    else:
        med = pl.Series(filled).rolling_median(window, min_samples=1).to_numpy().copy()
    # rows whose window holds a missing value, and the first rows (their window is cut short)
    gaps = np.flatnonzero(missing)
    rows = np.unique(
        np.concatenate(
            [np.arange(min(window - 1, values.size)), *(gaps + k for k in range(window))]
        )
    )
    rows = rows[rows < values.size]
    if rows.size:
        grid = np.full((rows.size, window), np.nan)
        for k in range(window):
            ok = rows >= k
            grid[ok, k] = values[rows[ok] - k]
        med[rows] = row_median(grid)
    return med
