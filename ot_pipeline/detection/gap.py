"""`gap`: readings missing before a reading (a seq jump beyond the stride, or a long time step).

With seq on every reading, the series' stride is the smallest positive seq step of the recent
past (a machine's seq counts the readings of all its metrics; robust even while many packets are
lost), and a jump beyond 1.5 strides is a gap. Without seq, a time step beyond `gap_factor` x the
median step of the previous readings is. Flagged on the first reading after the gap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection.blocks import BlockLayout, padded, row_median
from ot_pipeline.detection.config import DetectorSettings
from ot_pipeline.detection.series import SeriesRows


def missing_readings(
    rows: pl.DataFrame, series: SeriesRows, layout: BlockLayout, s: DetectorSettings, use_seq: bool
) -> Any:
    """Readings missing before each row (0.0 for none), from seq when `use_seq`, else time."""
    window = s.block_samples * s.min_history_blocks
    if use_seq:
        seqs = pl.DataFrame({"seq": rows["seq"], "_n": series.n, "_sid": series.sid})
        seqs = seqs.with_columns(_seq_step=pl.when(pl.col("_n") >= 1).then(pl.col("seq").diff()))
        seqs = seqs.with_columns(_stride=_series_rolling_min(seqs, pl.col("_seq_step"), window))
        seq_step, stride = pl.col("_seq_step"), pl.col("_stride")
        return (
            seqs.select(
                pl.when(seq_step > 1.5 * stride)
                .then((seq_step / stride - 1.0).round())
                .fill_null(0.0)
            )
            .to_series()
            .to_numpy()
        )
    dt = np.empty(series.size)
    dt[0] = np.nan
    t = rows["_t"].to_numpy()
    np.subtract(t[1:], t[:-1], out=dt[1:])
    dt[series.first] = np.nan
    return _time_gap_missing(dt, series.start, layout, window, s.gap_factor)


def scores(missing: Any, n: Any) -> Any | None:
    """Gap score, 1 + log10(missing readings), on the first reading after a gap (None: no gap)."""
    gap_at = np.flatnonzero((missing >= 1) & (n >= 2))
    if not gap_at.size:
        return None
    gap_score = np.zeros(missing.size)
    gap_score[gap_at] = 1.0 + pl.Series(missing[gap_at]).log10().to_numpy()
    return gap_score


def _time_gap_missing(dt: Any, start: Any, layout: BlockLayout, window: int, factor: float) -> Any:
    """Readings missing before each row (0.0 for none): a time step (`dt`, NaN for none) beyond
    `factor` x the median step of the previous `window` readings of the series.

    The median is computed only where it matters: a step can exceed `factor` x the median only
    where it exceeds `factor` x the minimum of a stretch around the window (the smallest step
    of the blocks it touches), so that cheap minimum picks the few candidate rows and the
    median is taken exactly there.
    """
    block, block_sid = layout.block, layout.sid
    width = int(layout.pos.max()) + 1
    smallest = np.fmin.reduce(padded(dt, layout, width), axis=1)  # NaN: none
    floor = smallest.copy()
    for lag in range(1, -(-window // width) + 1):  # the blocks before, in the same series
        same = np.flatnonzero(block_sid[lag:] == block_sid[:-lag]) + lag
        floor[same] = np.fmin(floor[same], smallest[same - lag])
    with np.errstate(invalid="ignore"):
        if factor > 0:
            candidates = np.flatnonzero(dt > factor * floor[block])
        else:  # the minimum bounds nothing: every step is a candidate
            candidates = np.flatnonzero(~np.isnan(dt))
    typical = np.full(candidates.size, np.nan)
    for chunk in range(0, candidates.size, 20_000):  # bounded memory on irregular sampling
        at = candidates[chunk : chunk + 20_000]
        grid = np.full((at.size, window), np.nan)
        for k in range(window):
            source = at - 1 - k
            inside = source >= start[at]
            grid[inside, k] = dt[source[inside]]
        enough = np.count_nonzero(~np.isnan(grid), axis=1) >= 3
        typical[chunk : chunk + at.size] = np.where(enough, row_median(grid), np.nan)
    missing = np.zeros(dt.size)
    with np.errstate(invalid="ignore"):
        gap = dt[candidates] > factor * typical
    at = candidates[gap]
    # rounded as Polars rounds (the decision and the count stay what they were)
    missing[at] = pl.Series(dt[at] / typical[gap] - 1.0).round().to_numpy()
    return missing


def _series_rolling_min(rows: pl.DataFrame, values: pl.Expr, window: int) -> pl.Expr:
    """Minimum of the positive `values` over the previous `window` readings of the same series.

    One global rolling window instead of one per series: every value is offset by its series
    number times a large constant, so within a window the current series always wins the
    minimum, and a minimum that comes from an earlier series is recognised and discarded.
    """
    series = int(rows.select(pl.col("_sid").max().fill_null(0)).item()) + 1
    big = 2**62 // (series + 1)
    offset = pl.col("_sid").cast(pl.Int64) * big
    absent = 2**62  # larger than any keyed value; no nulls keeps the rolling window fast
    keyed = (
        pl.when(values > 0)
        .then(values.cast(pl.Int64).clip(upper_bound=big - 1) - offset)
        .otherwise(absent)
    )
    earlier = keyed.rolling_min(window, min_samples=1).shift(1) + offset
    return pl.when((earlier > 0) & (earlier < big)).then(earlier)
