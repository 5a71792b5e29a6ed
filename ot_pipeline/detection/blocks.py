"""Block statistics of the series: the long-term memory every level, drift and regime verdict uses.

Readings are cut into blocks of `block_samples` per series. A block's median is immune to spikes,
and rolling quantiles over thousands of blocks are cheap; every history is shifted by one block,
so a reading is judged against *completed* earlier blocks only (causal). Blocks are computed on a
(blocks, block_samples) numpy array (no hashing, one sort of small rows); their histories are
Polars over the block frames, which are `block_samples` times smaller than the rows.

Stage 1 (here, on all readings but suppressed ones): running level and floor, the noise sigma,
the share of flat steps. Stage 2 (running readings only, stops left out) is assembled by the
engine from the envelope, drift and ramp modules, with `block_history` and `usual_size`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection.config import DetectorSettings
from ot_pipeline.detection.resume import Resume

MEDIAN_ABS_STEP_TO_SIGMA = 1.0 / 0.954  # white noise: median |x_t - x_t-1| = 0.954 sigma
NOISE_QUANTILE = 0.7  # of the per-block median absolute steps, over noise_blocks blocks


@dataclass
class BlockLayout:
    """Where every row lies: its global block number and position in the block."""

    block: Any  # per row: global block number
    pos: Any  # per row: position in its block
    count: int  # number of blocks
    sid: Any  # per block: series number
    first_rows: Any  # per block: its first row


def block_layout(n: Any, sid: Any, block_samples: int) -> BlockLayout:
    """Global block number and position in the block of every row (rows sorted by series).

    Blocks are dense per series (reading n of a series lies in its block n // block_samples), so
    a block starts wherever n % block_samples == 0 and the blocks of all series are one sequence.
    """
    pos = n % block_samples
    block_first = pos == 0
    # intp: numpy gathers by an index of its own pointer size on a fast path (int32: 2x slower)
    block = np.cumsum(block_first, dtype=np.intp) - 1
    count = int(block[-1]) + 1 if block.size else 0
    return BlockLayout(
        block=block,
        pos=pos,
        count=count,
        sid=sid[block_first],
        first_rows=np.flatnonzero(block_first),
    )


def padded(values: Any, layout: BlockLayout, width: int) -> Any:
    """Rows laid out as a (blocks, width) array, NaN where a block has no (or a null) reading."""
    grid = np.full((layout.count, width), np.nan)
    grid[layout.block, layout.pos] = values
    return grid


def row_median(grid: Any) -> Any:
    """Median of each row ignoring NaN (NaN when a row has none): one sort of small rows."""
    ordered = np.sort(grid, axis=1)
    count = np.count_nonzero(~np.isnan(grid), axis=1)
    last = grid.shape[1] - 1
    low = np.take_along_axis(ordered, np.clip((count - 1) // 2, 0, last)[:, None], 1)[:, 0]
    high = np.take_along_axis(ordered, np.clip(count // 2, 0, last)[:, None], 1)[:, 0]
    return np.where(count > 0, (low + high) / 2.0, np.nan)


def resumed_history(
    blocks: pl.DataFrame,
    layout: BlockLayout,
    resume: Resume | None,
    roll: Callable[[pl.DataFrame], pl.DataFrame],
) -> pl.DataFrame:
    """`roll` (block histories) over the slice's blocks, after the prior blocks of a resumed
    batch's state (and back to the slice's own blocks), or over the slice's blocks alone."""
    if resume is None:
        return roll(blocks)
    columns = [c for c in blocks.columns if c != "_sid"]
    gb = resume.block_numbers(layout.sid, layout.first_rows)
    return resume.trim(roll(resume.extend(blocks, gb, columns)), columns)


def block_history(blocks: pl.DataFrame, exprs: dict[str, pl.Expr]) -> pl.DataFrame:
    """Block statistics rolled within each series (`_sid`), in one Polars context."""
    return blocks.with_columns(**{name: e.over("_sid") for name, e in exprs.items()})


def usual_size(column: str, s: DetectorSettings) -> pl.Expr:
    """The usual size of a block statistic: a high quantile of it over earlier blocks."""
    return (
        pl.col(column)
        .abs()
        .rolling_quantile(
            s.drift_usual_quantile,
            window_size=s.history_blocks,
            min_samples=max(s.min_history_blocks, s.drift_min_history_blocks),
        )
        .shift(1)
    )


@dataclass
class BlockStatistics:
    """Stage 1, shifted by one block: `frame` holds `_sid, _run_level, _run_floor, _noise,
    _flat_share` per block; `run_level` and `sigma_b` (the noise sigma of the rows of each block,
    floors applied) as arrays."""

    frame: pl.DataFrame
    run_level: Any
    sigma_b: Any


def block_statistics(
    xv: Any, flat: Any, layout: BlockLayout, s: DetectorSettings, resume: Resume | None = None
) -> BlockStatistics:
    """Running level (median of block medians), running floor, noise and flat share per block.

    The noise is a high quantile of the blocks' median absolute non-zero steps, so stretches of a
    quiet (stopped, stuck) signal do not make the noise look smaller than it is when the signal
    runs, and a held or quantized signal (most steps zero) is not judged against a noise of zero:
    its noise is the size of its moves, never below its resolution (smallest non-zero step).
    """
    N, mb = s.history_blocks, s.min_history_blocks
    grid = padded(xv, layout, s.block_samples)
    block = layout.block
    bmed = row_median(grid)
    # The steps where the value moved: a held or quantized signal (most steps zero) has the
    # noise of its moves, at least its resolution (its smallest non-zero step), not zero.
    steps = np.abs(np.diff(grid, axis=1))
    steps[steps == 0.0] = np.nan
    blocks = pl.DataFrame(
        {
            "_sid": layout.sid,
            "_bmed": bmed,
            "_bstep": row_median(steps),
            "_bflat": np.bincount(block, weights=flat) / np.bincount(block),
        },
        nan_to_null=True,
    )
    del grid, steps

    def roll(blocks: pl.DataFrame) -> pl.DataFrame:
        blocks = block_history(
            blocks,
            {
                "_run_level": pl.col("_bmed").rolling_median(N, min_samples=mb),
                "_run_floor": pl.col("_bmed").rolling_min(N, min_samples=mb),
                "_noise": pl.col("_bstep").rolling_quantile(
                    NOISE_QUANTILE, window_size=s.noise_blocks, min_samples=1
                )
                * MEDIAN_ABS_STEP_TO_SIGMA,
                "_flat_share": pl.col("_bflat").rolling_mean(N, min_samples=mb),
            },
        )
        return block_history(
            blocks,
            {c: pl.col(c).shift(1) for c in ("_run_level", "_run_floor", "_noise", "_flat_share")},
        )

    blocks = resumed_history(blocks, layout, resume, roll)
    run_level = blocks["_run_level"].to_numpy()
    sigma_b = np.fmax(
        blocks["_noise"].to_numpy(),
        np.fmax(max(s.abs_noise_floor, 1e-9), s.rel_noise_floor * np.abs(run_level)),
    )
    return BlockStatistics(frame=blocks, run_level=run_level, sigma_b=sigma_b)


def block_sigma(blocks: pl.DataFrame, s: DetectorSettings) -> pl.Expr:
    """`BlockStatistics.sigma_b` as a Polars expression over the stage-1 frame."""
    floor = pl.max_horizontal(
        pl.lit(max(s.abs_noise_floor, 1e-9)), s.rel_noise_floor * blocks["_run_level"].abs()
    )
    return pl.max_horizontal(pl.lit(blocks["_noise"]), floor)


def running_block_medians(xr: Any, layout: BlockLayout, s: DetectorSettings) -> pl.DataFrame:
    """Stage 2's base: the block medians of running readings only (`_sid`, `_bmed_r`)."""
    return pl.DataFrame(
        {
            "_sid": layout.sid,
            "_bmed_r": row_median(padded(xr, layout, s.block_samples)),
        },
        nan_to_null=True,
    )
