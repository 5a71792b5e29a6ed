"""The detectors and the combiner over one frame of readings: numpy row by row, Polars over blocks.

Every statistic a decision uses comes from the series' *earlier* readings: short rolling windows
ending at the reading, and long-term statistics of *completed* blocks of readings (block medians
rolled over many blocks, then shifted by one block). A flag at a reading therefore depends only
on that reading and the ones before it, so the batch pipeline, a replay and a live stream agree.

Series are (machine_id, metric), in device order (seq when every reading has one, else event
time). Rows sharing one `DetectorSettings` are processed together (windows are constants of the
pass): one vectorised pass per distinct settings, never a loop per row.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection.config import DetectionConfig, DetectorSettings

KEY = ["machine_id", "metric"]
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
# Order matters only for ties: the first detector with the highest score is named.
DETECTORS = (
    "stuck",
    "gap",
    "limits",
    "level",
    "spike",
    "rate_of_change",
    "drift",
    "ramp",
    "regime",
)
MEDIAN_ABS_STEP_TO_SIGMA = 1.0 / 0.954  # white noise: median |x_t - x_t-1| = 0.954 sigma
SPIKE_BASE_READINGS = 5  # the level before an excursion is the median of this many readings
NOISE_QUANTILE = 0.7  # of the per-block median absolute steps, over noise_blocks blocks
DRIFT_LAG_BLOCKS = 6  # a drift's direction is read from changes over this many blocks
STOP_CONFIRM_READINGS = 3  # consecutive stopped readings before a stop counts for settling
NUMPY_CHUNK = 1 << 19  # rows per slice of elementwise numpy work (4 MiB per float column)
# What score_codes returns (and _detect_group per slice).
CODED_SCHEMA = {
    "score": pl.Float64,
    "is_anomaly": pl.Boolean,
    "_severity": pl.Int8,
    "_detector": pl.Int8,
}
SLICE_ROWS = 1 << 20  # rows (whole series) scored together: Polars' temporaries stay reusable


class _Runs:
    """Run lengths within the series of one set of rows (the row index and the rows before
    each series are prepared once for the many conditions of a slice)."""

    def __init__(self, start: Any) -> None:
        dtype = np.int32 if start.size < 2**31 - 1 else np.int64
        self.start = start
        self.index = np.arange(start.size, dtype=dtype)
        self.before = (start - 1).astype(dtype)  # the row before the series' first one

    def __call__(self, condition: Any) -> Any:
        """Consecutive rows (ending at this one) of the same series for which `condition`
        holds: the distance to the last row where it fails (the row itself when it fails, so
        0), in place on one array."""
        last = np.where(condition, self.index.dtype.type(-1), self.index)
        np.maximum.accumulate(last, out=last)
        np.maximum(last, self.before, out=last)
        return np.subtract(self.index, last, out=last)


def _spike_threshold(s: DetectorSettings, readings: int) -> float:
    return max(s.spike_threshold / math.sqrt(readings), 0.6 * s.spike_threshold)


def _block_layout(n: np.ndarray, block_samples: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Global block number and position in the block of every row (rows sorted by series).

    Blocks are dense per series (reading n of a series lies in its block n // block_samples), so
    a block starts wherever n % block_samples == 0 and the blocks of all series are one sequence.
    """
    pos = n % block_samples
    block = np.cumsum(pos == 0, dtype=np.int32 if n.size < 2**31 - 1 else np.int64) - 1
    return block, pos, int(block[-1]) + 1 if block.size else 0


def _padded(values: Any, block: np.ndarray, pos: np.ndarray, blocks: int, width: int) -> Any:
    """Rows laid out as a (blocks, width) array, NaN where a block has no (or a null) reading."""
    grid = np.full((blocks, width), np.nan)
    grid[block, pos] = values
    return grid


def _row_median(grid: Any) -> Any:
    """Median of each row ignoring NaN (NaN when a row has none): one sort of small rows."""
    ordered = np.sort(grid, axis=1)
    count = np.count_nonzero(~np.isnan(grid), axis=1)
    last = grid.shape[1] - 1
    low = np.take_along_axis(ordered, np.clip((count - 1) // 2, 0, last)[:, None], 1)[:, 0]
    high = np.take_along_axis(ordered, np.clip(count // 2, 0, last)[:, None], 1)[:, 0]
    return np.where(count > 0, (low + high) / 2.0, np.nan)


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


def _median_of_5(values: Any) -> Any:
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
        med = _median_of_5(filled)
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
        med[rows] = _row_median(grid)
    return med


def _gap_missing(
    dt: Any, start: Any, layout: tuple[Any, Any, Any, int], window: int, factor: float
) -> Any:
    """Readings missing before each row (0.0 for none): a time step (`dt`, NaN for none) beyond
    `factor` x the median step of the previous `window` readings of the series.

    The median is computed only where it matters: a step can exceed `factor` x the median only
    where it exceeds `factor` x the minimum of a stretch around the window (the smallest step
    of the blocks it touches), so that cheap minimum picks the few candidate rows and the
    median is taken exactly there.
    """
    block, pos, block_sid, nblocks = layout
    width = int(pos.max()) + 1
    smallest = np.fmin.reduce(_padded(dt, block, pos, nblocks, width), axis=1)  # NaN: none
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
        typical[chunk : chunk + at.size] = np.where(enough, _row_median(grid), np.nan)
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


def _block_sigma(blocks: pl.DataFrame, s: DetectorSettings) -> pl.Expr:
    """The noise sigma of the rows of each block (it is a per-block statistic)."""
    floor = pl.max_horizontal(
        pl.lit(max(s.abs_noise_floor, 1e-9)), s.rel_noise_floor * blocks["_run_level"].abs()
    )
    return pl.max_horizontal(pl.lit(blocks["_noise"]), floor)


def _frozen_envelope(
    blocks2: pl.DataFrame, blocks: pl.DataFrame, s: DetectorSettings
) -> pl.DataFrame:
    """Envelope quantiles re-learnt without the blocks that lie outside the envelope.

    A block is outside when its median is beyond the level detector's fence in a watched
    direction. Pass k leaves out the blocks pass k-1 found outside; every pass uses earlier
    blocks only (the quantiles are shifted by one block), so the result stays causal. A fault
    that lasts is then absorbed only after (passes + 1) times as long as without the freeze.
    """
    q, N, mb = s.envelope_quantile, s.history_blocks, s.min_history_blocks
    sigma = blocks2.select(_block_sigma(blocks, s).alias("_sigma_b")).to_series()
    # a block left out once stays out: each pass extends the freeze over a lasting fault
    blocks2 = blocks2.with_columns(sigma, _kept=pl.col("_bmed_r"))
    median = pl.col("_bmed_r")
    for _ in range(s.envelope_freeze_passes):
        fence = s.envelope_freeze_margin * (
            s.envelope_margin * (pl.col("_q_hi") - pl.col("_q_lo"))
            + s.envelope_noise_margin * pl.col("_sigma_b")
        )
        outside = pl.lit(False)
        if s.direction != "down":
            outside = outside | (median > pl.col("_q_hi") + fence)
        if s.direction != "up":
            outside = outside | (median < pl.col("_q_lo") - fence)
        outside = outside.fill_null(False)
        newly_out = blocks2.select(outside & pl.col("_kept").is_not_null()).to_series()
        changed = blocks2["_sid"].filter(newly_out).unique()
        if changed.len() == 0:  # nothing new left out: the envelope stays as it is
            break
        blocks2 = blocks2.with_columns(_kept=pl.when(outside).then(None).otherwise(pl.col("_kept")))
        # re-learn only the series that lost blocks
        index = pl.int_range(pl.len(), dtype=pl.Int64).alias("_b")
        part = (
            blocks2.with_columns(index)
            .filter(pl.col("_sid").is_in(changed.implode()))
            .with_columns(
                _q_lo=pl.col("_kept")
                .rolling_quantile(q, window_size=N, min_samples=mb)
                .shift(1)
                .over("_sid"),
                _q_hi=pl.col("_kept")
                .rolling_quantile(1 - q, window_size=N, min_samples=mb)
                .shift(1)
                .over("_sid"),
            )
        )
        blocks2 = blocks2.with_columns(
            blocks2["_q_lo"].scatter(part["_b"], part["_q_lo"]),
            blocks2["_q_hi"].scatter(part["_b"], part["_q_hi"]),
        )
    return blocks2


def _block_history(blocks: pl.DataFrame, exprs: dict[str, pl.Expr]) -> pl.DataFrame:
    return blocks.with_columns(**{name: e.over("_sid") for name, e in exprs.items()})


def _series_slices(rows: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    """Rows (sorted by series) cut into slices of whole series, about `size` rows each.

    Every detector works within a series, so slices are scored alone with the same result;
    each Polars temporary of a small slice is memory the allocator hands out again, where one
    of a huge frame is fresh memory, page-faulted in 4 KiB pages, every time.
    """
    if rows.height <= size:
        return [rows]
    codes = rows["_code"].to_numpy()
    firsts = np.flatnonzero(codes[1:] != codes[:-1]) + 1  # where a series begins (not the 1st)
    at = np.searchsorted(firsts, np.arange(size, rows.height, size))  # next one past each size
    cuts = np.unique(firsts[at[at < firsts.size]])
    bounds = [0, *cuts.tolist(), rows.height]
    return [rows.slice(a, b - a) for a, b in itertools.pairwise(bounds) if b > a]


def _held_alarm(excess: Any, breach_run: Any, s: DetectorSettings, runs: _Runs) -> Any:
    """Rows on which the level alarm is up: raised after `level_consecutive` breaches, held
    (deadband + off-delay) until `level_clear_samples` readings in a row are back inside the
    fence by `level_deadband` fences; not judged readings (stopped, unsettled) count as back.

    Up at t when the last raise of the series is later than the last release, and t is not a
    release itself: two running maxima, no loop.
    """
    raised = breach_run >= s.level_consecutive
    released = runs(excess <= -s.level_deadband) >= s.level_clear_samples
    last_raise = np.maximum.accumulate(np.where(raised, runs.index, -1))
    last_release = np.maximum.accumulate(np.where(released, runs.index, -1))
    return (last_raise >= runs.start) & (last_raise > last_release) & ~released


def _detect_group(
    rows: pl.DataFrame, s: DetectorSettings, use_seq: bool, flag_stops: bool
) -> pl.DataFrame:
    """All detectors for the series of one settings group; rows sorted by series and order."""
    B = s.block_samples
    N = s.history_blocks
    mb = s.min_history_blocks
    size = rows.height
    # Row-level work is numpy on whole-slice arrays (nulls travel as NaN, which no comparison
    # passes, as no null does); per-block statistics are Polars over the (small) block frames.
    codes = rows["_code"].to_numpy()
    first = np.ones(size, dtype=bool)
    np.not_equal(codes[1:], codes[:-1], out=first[1:])
    sid = (np.cumsum(first, dtype=np.uint32) - 1).astype(np.uint32, copy=False)
    index = np.arange(size, dtype=np.int64)
    start = np.maximum.accumulate(np.where(first, index, 0))  # the series' first row
    n = index - start  # position in the series
    runs = _Runs(start)
    x = rows["_x"].to_numpy()  # float, NaN for null
    suppressed = rows["_suppressed"].to_numpy()
    step = np.empty(size)
    step[0] = np.nan
    np.subtract(x[1:], x[:-1], out=step[1:])
    step[first] = np.nan
    xv = np.where(suppressed, np.nan, x)
    flat = np.abs(step) <= s.stuck_tolerance
    # Blocks are computed on a (blocks, block_samples) array: no hashing, one sort of small rows.
    block, pos, nblocks = _block_layout(n, B)
    block_first = pos == 0
    if use_seq:
        # Smallest positive step of the recent past = the series' stride (a machine's seq counts
        # the readings of all its metrics); robust even while many packets are lost.
        seqs = pl.DataFrame({"seq": rows["seq"], "_n": n, "_sid": sid})
        seqs = seqs.with_columns(_seq_step=pl.when(pl.col("_n") >= 1).then(pl.col("seq").diff()))
        seqs = seqs.with_columns(_stride=_series_rolling_min(seqs, pl.col("_seq_step"), B * mb))
        seq_step, stride = pl.col("_seq_step"), pl.col("_stride")
        gap_missing = (
            seqs.select(
                pl.when(seq_step > 1.5 * stride)
                .then((seq_step / stride - 1.0).round())
                .fill_null(0.0)
            )
            .to_series()
            .to_numpy()
        )
    else:
        dt = np.empty(size)
        dt[0] = np.nan
        t = rows["_t"].to_numpy()
        np.subtract(t[1:], t[:-1], out=dt[1:])
        dt[first] = np.nan
        gap_missing = _gap_missing(
            dt, start, (block, pos, sid[block_first], nblocks), B * mb, s.gap_factor
        )

    # Long-term statistics, stage 1 (raw block medians): running level, noise, flat share.
    grid = _padded(xv, block, pos, nblocks, B)
    blocks = pl.DataFrame(
        {
            "_sid": sid[block_first],
            "_bmed": _row_median(grid),
            "_bstep": _row_median(np.abs(np.diff(grid, axis=1))),
            "_bflat": np.bincount(block, weights=flat) / np.bincount(block),
        },
        nan_to_null=True,
    )
    del grid
    blocks = _block_history(
        blocks,
        {
            "_run_level": pl.col("_bmed").rolling_median(N, min_samples=mb),
            "_run_floor": pl.col("_bmed").rolling_min(N, min_samples=mb),
            # A high quantile, so stretches of a quiet (stopped, stuck) signal do not make the
            # noise look smaller than it is when the signal runs.
            "_noise": pl.col("_bstep").rolling_quantile(
                NOISE_QUANTILE, window_size=s.noise_blocks, min_samples=1
            )
            * MEDIAN_ABS_STEP_TO_SIGMA,
            "_flat_share": pl.col("_bflat").rolling_mean(N, min_samples=mb),
        },
    )
    blocks = _block_history(
        blocks,
        {c: pl.col(c).shift(1) for c in ("_run_level", "_run_floor", "_noise", "_flat_share")},
    )
    run_level = blocks["_run_level"].to_numpy()
    # the noise sigma of the rows of each block (it is a per-block statistic)
    sigma_b = np.fmax(
        blocks["_noise"].to_numpy(),
        np.fmax(max(s.abs_noise_floor, 1e-9), s.rel_noise_floor * np.abs(run_level)),
    )
    sigma = sigma_b[block]

    # Regimes: a non-negative signal far below its running level (a planned stop, an idle
    # machine) is not an anomaly; the first stopped reading is flagged once, LOW.
    ready = (n >= mb * B) & ~np.isnan(xv)
    if s.stop_fraction is None:
        stopped = np.zeros(size, dtype=bool)
        stopping = np.zeros(size, dtype=bool)
        going_down = np.zeros(size, dtype=bool)
    else:
        positive = (blocks["_run_floor"].to_numpy() >= 0.0)[block]
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
    stopping &= runs(going_down) <= s.stop_transition_samples
    del going_down

    # Stage 2 (block medians of running readings only): envelope of normal operation, trend.
    blocks2 = pl.DataFrame(
        {
            "_sid": blocks["_sid"],
            "_bmed_r": _row_median(_padded(xr, block, pos, nblocks, B)),
        },
        nan_to_null=True,
    )
    q = s.envelope_quantile
    blocks2 = _block_history(
        blocks2,
        {
            "_q_lo": pl.col("_bmed_r").rolling_quantile(q, window_size=N, min_samples=mb),
            "_q_hi": pl.col("_bmed_r").rolling_quantile(1 - q, window_size=N, min_samples=mb),
            # A drift is a *consistent* trend: all but a `drift_consistency` share of the last
            # drift_blocks block-to-block changes go the same way. Normal ramps (setpoint
            # changes, restarts) are shorter than the window and do not qualify.
            "_rise": pl.col("_bmed_r")
            .diff()
            .rolling_quantile(
                s.drift_consistency, window_size=s.drift_blocks, min_samples=s.drift_blocks // 2
            ),
            "_fall": pl.col("_bmed_r")
            .diff()
            .rolling_quantile(
                1.0 - s.drift_consistency,
                window_size=s.drift_blocks,
                min_samples=s.drift_blocks // 2,
            ),
        },
    )
    # A slow drift under noise: most block-to-block changes (drift_direction_share) go one way
    # and the net change over the window is far beyond what noise explains.
    D = s.drift_blocks
    # Direction over a few blocks (a slow drift is buried in the noise of consecutive blocks).
    rising = (pl.col("_bmed_r").diff(DRIFT_LAG_BLOCKS) > 0).cast(pl.Float64)
    blocks2 = (
        blocks2.with_columns(
            _trend=pl.when(pl.col("_rise") > 0)
            .then(pl.col("_rise"))
            .when(pl.col("_fall") < 0)
            .then(pl.col("_fall"))
            .otherwise(0.0),
            _up_share=rising.rolling_mean(D, min_samples=D // 2).over("_sid"),
            # ramp: how far the block median moved over the last ramp_blocks blocks
            _ramp=(pl.col("_bmed_r") - pl.col("_bmed_r").shift(s.ramp_blocks)).over("_sid"),
            _net=(pl.col("_bmed_r") - pl.col("_bmed_r").shift(D)).over("_sid"),
            # evenly spread: the typical block change accounts for most of the net change (a few
            # steps or one ramp inside the window do not)
            _spread=(pl.col("_bmed_r").diff().rolling_median(D, min_samples=D // 2) * D).over(
                "_sid"
            ),
        )
        .with_columns(
            _even=(pl.col("_spread") / pl.col("_net")) >= 0.5,
        )
        .with_columns(
            _change=pl.when(
                (pl.col("_up_share") >= s.drift_direction_share)
                & (pl.col("_net") > 0)
                & pl.col("_even")
            )
            .then(pl.col("_net"))
            .when(
                (pl.col("_up_share") <= 1.0 - s.drift_direction_share)
                & (pl.col("_net") < 0)
                & pl.col("_even")
            )
            .then(pl.col("_net"))
            .otherwise(0.0)
        )
    )

    def usual_size(column: str) -> pl.Expr:
        """The usual size of a block statistic: a high quantile of it over earlier blocks."""
        return (
            pl.col(column)
            .abs()
            .rolling_quantile(
                s.drift_usual_quantile,
                window_size=N,
                min_samples=max(mb, s.drift_min_history_blocks),
            )
            .shift(1)
        )

    blocks2 = _block_history(
        blocks2,
        {
            "_usual": usual_size("_trend"),
            "_usual_change": usual_size("_change"),
            "_change": pl.col("_change").shift(1),
            "_usual_ramp": usual_size("_ramp"),
            "_ramp": pl.col("_ramp").shift(1),
            "_q_lo": pl.col("_q_lo").shift(1),
            "_q_hi": pl.col("_q_hi").shift(1),
            "_trend": pl.col("_trend").shift(1),
        },
    )
    if s.envelope_freeze_passes:
        blocks2 = _frozen_envelope(blocks2, blocks, s)
    q_lo, q_hi, trend, usual, change, usual_change, ramp, usual_ramp = (
        blocks2[c].to_numpy()
        for c in (
            "_q_lo",
            "_q_hi",
            "_trend",
            "_usual",
            "_change",
            "_usual_change",
            "_ramp",
            "_usual_ramp",
        )
    )

    # After a stop or a suppressed stretch the process settles (restart ramps, reheating,
    # refilling): no level or drift verdict until settle_blocks blocks have passed. A stop is a
    # stop once STOP_CONFIRM_READINGS readings in a row are stopped: a noisy reading of a deep
    # fault that dips below the stop threshold does not silence the level detector.
    quiet = runs(stopped) >= STOP_CONFIRM_READINGS
    quiet |= suppressed
    last_quiet = np.maximum.accumulate(np.where(quiet, index, -1))
    never_quiet = last_quiet < start  # no stop or suppressed stretch in the series yet
    judge_settled = (index - last_quiet > s.settle_blocks * B) | never_quiet
    judge_settled &= judge
    del quiet, last_quiet, never_quiet

    # Level: how far beyond the envelope's fence (in fences), per block constants on rows.
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        fence = s.envelope_margin * (q_hi - q_lo) + s.envelope_noise_margin * sigma_b
        fence_rows = fence[block]
        if s.direction == "down":
            excess = np.full(size, -1.0)
        else:
            excess = np.subtract(xr, q_hi[block])
            excess -= fence_rows
            excess /= fence_rows
        if s.direction != "up":
            under = np.subtract((q_lo - fence)[block], xr)
            under /= fence_rows
            under[stopping] = -1.0
            np.fmax(excess, under, out=excess)
            del under
        else:
            np.fmax(excess, -1.0, out=excess)
        del fence_rows
        excess[~judge_settled | np.isnan(excess)] = -1.0
    breach = excess > 0
    limit_breach = None
    if s.lower_limit is not None or s.upper_limit is not None:
        limit_breach = np.zeros(size, dtype=bool)
        if s.lower_limit is not None:
            limit_breach |= x < s.lower_limit
        if s.upper_limit is not None:
            limit_breach |= x > s.upper_limit
        limit_breach &= judge

    # The combiner folds the detectors in DETECTORS order: the highest score wins; the first
    # detector holding it is named.
    top = np.zeros(size)
    named = np.zeros(size, dtype=np.int8)
    higher = np.empty(size, dtype=bool)

    def combine(name: str, score: Any) -> None:
        np.greater(score, top, out=higher)
        named[higher] = DETECTORS.index(name)
        np.copyto(top, score, where=higher)

    # stuck is judged while stopped too, except on an exact zero (a stopped counter)
    flat_run = runs(flat)
    stuck = ready & (~stopped | (xv != 0.0)) & (flat_run >= s.stuck_samples)
    with np.errstate(invalid="ignore"):
        stuck &= (blocks["_flat_share"].to_numpy() <= s.stuck_max_flat_share)[block]
    np.copyto(top, 2.0 * flat_run / s.stuck_samples, where=stuck)  # DETECTORS[0]
    del flat_run, stuck
    gap_at = np.flatnonzero((gap_missing >= 1) & (n >= 2))
    if gap_at.size:
        gap_score = np.zeros(size)
        gap_score[gap_at] = 1.0 + pl.Series(gap_missing[gap_at]).log10().to_numpy()
        combine("gap", gap_score)
        del gap_score
    if limit_breach is not None:
        limit_run = runs(limit_breach)
        combine(
            "limits",
            np.where(
                limit_run >= s.limit_consecutive,
                1.0 + limit_run / (4.0 * s.limit_consecutive),
                0.0,
            ),
        )
        del limit_run
    # raised after level_consecutive breaches, then held by the deadband (at least 1.0)
    held = _held_alarm(excess, runs(breach), s, runs)
    combine("level", np.where(held, np.maximum(1.0 + excess, 1.0), 0.0))
    del held, excess

    # Spike: readings t-j .. t-1 all far (same side) from the level before them, reading t back.
    # Spikes are judged in every regime (a spike while idle is still a spike), only not on
    # readings with a suppressed status.
    spike = _spike_scores(s, xv, sigma, _rolling_median(xv, SPIKE_BASE_READINGS))
    spike[~(ready & (n > s.spike_max_readings + SPIKE_BASE_READINGS))] = 0.0
    combine("spike", spike)
    del spike

    with np.errstate(invalid="ignore"):
        roc = np.abs(step)
        roc /= (math.sqrt(2.0) * sigma_b)[block]
        roc /= s.roc_threshold
        roc[~(breach & (gap_missing == 0)) | np.isnan(roc)] = 0.0
    combine("rate_of_change", roc)
    del roc

    # A drift moves the value away from where the series normally sits; ramps back towards the
    # middle of the envelope (a restart, the end of a shift change) are recoveries, not drifts.
    # Everything but the side of the center is a per-block figure.
    root = math.sqrt(2.0 / B)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        drift_denominator = np.fmax(
            s.drift_threshold * usual, s.drift_noise_threshold * sigma_b * root
        )
        block_noise = sigma_b * root
        center = (q_lo + q_hi) / 2.0
        direction = np.where(np.isnan(change) | (change == 0), trend, change)
        trend_score = np.abs(trend) / drift_denominator
        change_score = np.abs(change) / np.fmax(
            s.drift_threshold * usual_change, s.drift_change_noise * block_noise
        )
        # no verdict before the usual trend is known (a null would leave only the noise bound)
        drift_b = np.where(np.isnan(usual), 0.0, np.fmax(trend_score, change_score))
        drift_b[np.isnan(drift_b)] = 0.0
        if s.direction == "up":
            drift_b[~(direction > 0)] = 0.0
        elif s.direction == "down":
            drift_b[~(direction < 0)] = 0.0
        away = np.subtract(xr, center[block])
        away *= direction[block]
        drift = np.where(judge_settled & (away > 0), drift_b[block], 0.0)
    del away
    combine("drift", drift)
    del drift

    # Ramp: a move over a few blocks beyond the usual size of such moves (a per-block figure).
    with np.errstate(invalid="ignore", divide="ignore"):
        if s.direction == "up":
            moved = np.where(ramp > 0, ramp, 0.0)
        elif s.direction == "down":
            moved = np.where(ramp < 0, -ramp, 0.0)
        else:
            moved = np.abs(ramp)
        ramp_b = moved / np.fmax(
            s.ramp_threshold * usual_ramp, s.ramp_noise_threshold * block_noise
        )
        ramp_b[np.isnan(usual_ramp) | np.isnan(ramp_b)] = 0.0  # unknown usual size: no verdict
    combine("ramp", np.where(judge_settled, ramp_b[block], 0.0))
    del moved, ramp_b

    if flag_stops:
        stop_start = stopped.copy()
        stop_start[1:] &= ~stopped[:-1]
        stop_start[first] = stopped[first]
        combine("regime", stop_start.astype(np.float64))

    # Level, limits, rate of change and drift already skip stopped readings (they compare with
    # the running envelope); spikes, stuck values and gaps are judged in every regime.
    score = top
    score[suppressed] = 0.0
    anomalous = score >= 1.0
    # Severity: magnitude sets the base step, duration escalates (a fault that lasts matters
    # more); a regime transition stays LOW.
    step = np.select([score >= 8.0, score >= 4.0, score >= 2.0], [3, 2, 1], 0)
    run = runs(anomalous)
    step = np.clip(step + (run >= s.escalate_samples) + (run >= 4 * s.escalate_samples), 0, 3)
    # An alarm does not de-escalate while it lasts: the highest step so far in the run. (Run
    # numbers grow along the rows, so one running maximum of run * 4 + step does it.)
    run_id = np.cumsum(anomalous & (run == 1))
    step = np.maximum.accumulate(run_id * 4 + step) - run_id * 4
    step = np.where(named == DETECTORS.index("regime"), 0, step)
    return pl.DataFrame(
        {
            "score": pl.Series(score).round(4),
            "is_anomaly": anomalous,
            "_severity": np.where(anomalous, step, -1).astype(np.int8),
            "_detector": np.where(anomalous, named, -1).astype(np.int8),
        }
    )


def _epoch_ms(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        return column.dt.epoch("ms").cast(pl.Float64)
    if isinstance(dtype, pl.Date):
        return column.cast(pl.Datetime("ms")).dt.epoch("ms").cast(pl.Float64)
    return column.cast(pl.Float64)


def detect(readings: pl.DataFrame, config: DetectionConfig | None = None) -> pl.DataFrame:
    """Score every reading: the input rows (same order) plus score, is_anomaly, severity, detector.

    Needs machine_id, metric, ts, value; seq and status_code are used when present (seq jumps are
    data gaps; suppressed status codes, by default 3 = maintenance, are never anomalies).
    """
    config = config or DetectionConfig()
    missing = {"machine_id", "metric", "ts", "value"} - set(readings.columns)
    if missing:
        raise ValueError(f"detect: readings lack column(s) {sorted(missing)}")
    coded = score_codes(readings, config)
    added = coded.select(
        "score",
        "is_anomaly",
        severity=named(coded["_severity"], pl.Series(SEVERITIES)),
        detector=named(coded["_detector"], pl.Series(DETECTORS)),
    )
    # hstack keeps the caller's columns as they are (a select after a concat would rechunk them)
    return readings.hstack(added.get_columns())


def named(codes: pl.Series, names: pl.Series) -> pl.Series:
    """Names from integer codes (null for a negative code); `names` may be String or Enum."""
    return names.gather(pl.select(pl.when(codes >= 0).then(codes)).to_series())


def score_codes(readings: pl.DataFrame, config: DetectionConfig) -> pl.DataFrame:
    """`detect` without the names: score, is_anomaly, and severity and detector as Int8 codes
    (-1 for none; `named` turns them into strings), one row per input row, in input order. For
    a caller that reorders the rows first: gathering codes is cheaper than strings.
    """
    if readings.height == 0:
        return pl.DataFrame(schema=CODED_SCHEMA)
    use_seq = "seq" in readings.columns and readings["seq"].null_count() == 0
    # A device that reports its state (status codes) announces planned stops itself; without
    # status, the transition into a stopped regime is flagged once, LOW.
    flag_stops = "status_code" not in readings.columns
    status = (
        pl.col("status_code").is_in(list(config.suppress_status_codes)).fill_null(False)
        if "status_code" in readings.columns
        else pl.lit(False)
    )
    value = pl.col("value").cast(pl.Float64)
    # Only the columns the detectors need travel through the sort (strings are costly to move).
    base = readings.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"),
        *KEY,
        *(["seq"] if use_seq else []),
        _x=pl.when(value.is_finite()).then(value),
        _t=_epoch_ms(pl.col("ts"), readings.schema["ts"]),
        _suppressed=status,
    )
    # Integer series codes: sorting and grouping on them is far cheaper than on the strings.
    # (an Enum already is one: its physical codes are small and dense)
    codes = [
        pl.col(c).to_physical().cast(pl.Int64)
        if isinstance(readings.schema[c], pl.Enum)
        else pl.col(c).cast(pl.String).cast(pl.Categorical).to_physical().cast(pl.Int64)
        for c in KEY
    ]
    base = base.with_columns(_machine_code=codes[0], _metric_code=codes[1])
    width = int(base.select(pl.col("_metric_code").max().fill_null(0)).item()) + 1
    base = base.with_columns(_code=pl.col("_machine_code") * width + pl.col("_metric_code"))
    pairs = base.group_by("_code").agg(pl.col(KEY[0]).first(), pl.col(KEY[1]).first())
    settings_of = [
        config.settings_for(machine, metric) for machine, metric in pairs.select(KEY).iter_rows()
    ]
    distinct = list(dict.fromkeys(settings_of))
    # Series are numbered by (settings group, code): after one sort every group is one slice.
    pairs = pairs.with_columns(
        _group=pl.Series([distinct.index(s) for s in settings_of], dtype=pl.Int64)
    ).sort("_group", "_code")
    rank_of = dict(zip(pairs["_code"].to_list(), range(pairs.height), strict=True))
    codes_in = base["_code"]
    if codes_in.null_count() == 0:  # codes are small and dense: a lookup table, not a hash map
        lookup = np.zeros(int(pairs["_code"].max()) + 1, dtype=np.int64)  # type: ignore[arg-type]
        lookup[pairs["_code"].to_numpy()] = np.arange(pairs.height)
        ranked = pl.lit(pl.Series("_code", lookup[codes_in.to_numpy()]))
    else:
        ranked = pl.col("_code").replace_strict(rank_of, return_dtype=pl.Int64)
    base = base.select(
        "_row",
        *(["seq"] if use_seq else ["_t"]),
        "_x",
        "_suppressed",
        _code=ranked,
    )
    within = pl.col("seq") if use_seq else pl.col("_t").cast(pl.Int64)
    spans = base.select(
        low=within.min().fill_null(0), high=within.max().fill_null(0), top=pl.col("_code").max()
    ).cast(pl.Int64)
    low, high, top = (int(spans[c].item()) for c in ("low", "high", "top"))
    span = high - low + 1
    in_order = False
    if span * (top + 1) < 2**62:  # one integer key sorts far faster than two columns
        key = pl.col("_code") * span + (within - low).fill_null(0)
        # a recording's readings often come in order already: a stable sort would not move them
        in_order = base.select(key).to_series().is_sorted()
        if not in_order:
            base = base.sort(key, maintain_order=True)
    else:
        base = base.sort(["_code", within], maintain_order=True)
    group_of_code = pairs["_group"].to_numpy()
    lengths = np.bincount(group_of_code[base["_code"].to_numpy()], minlength=len(distinct))
    parts = []
    offset = 0
    for group, length in enumerate(lengths.tolist()):
        if length == 0:
            continue
        part = base.slice(offset, length)
        offset += length
        for piece in _series_slices(part, SLICE_ROWS):
            parts.append(_detect_group(piece, distinct[group], use_seq, flag_stops))
    combined = pl.concat(parts)
    # Back to input order: the inverse of the sort permutation, by one scatter.
    if in_order:
        coded = combined
    else:
        order = base["_row"].to_numpy()
        inverse = np.empty(order.size, dtype=np.int64)
        inverse[order] = np.arange(order.size)
        coded = combined.gather(inverse)
    return coded
