"""The envelope of normal operation: the baseline of `level`, `rate_of_change` and `drift`.

Envelope = [q, 1 - q] quantiles (`envelope_quantile`) of the running block medians over
`history_blocks` blocks, shifted by one block; the fence around it is `envelope_margin` x its
width plus `envelope_noise_margin` noise sigmas. The freeze (`envelope_freeze_passes`) learns it
again without the blocks that lie outside, so a lasting fault is not learnt as normal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection.blocks import block_sigma
from ot_pipeline.detection.config import DetectorSettings


def quantile_columns(s: DetectorSettings) -> dict[str, pl.Expr]:
    """Stage-2 block columns `_q_lo`, `_q_hi` (not yet shifted; see `shifted_columns`)."""
    q, N, mb = s.envelope_quantile, s.history_blocks, s.min_history_blocks
    return {
        "_q_lo": pl.col("_bmed_r").rolling_quantile(q, window_size=N, min_samples=mb),
        "_q_hi": pl.col("_bmed_r").rolling_quantile(1 - q, window_size=N, min_samples=mb),
    }


def shifted_columns() -> dict[str, pl.Expr]:
    """The envelope of a block is that of the blocks before it."""
    return {"_q_lo": pl.col("_q_lo").shift(1), "_q_hi": pl.col("_q_hi").shift(1)}


def frozen(blocks2: pl.DataFrame, blocks: pl.DataFrame, s: DetectorSettings) -> pl.DataFrame:
    """Envelope quantiles re-learnt without the blocks that lie outside the envelope.

    A block is outside when its median is beyond the level detector's fence in a watched
    direction. Pass k leaves out the blocks pass k-1 found outside; every pass uses earlier
    blocks only (the quantiles are shifted by one block), so the result stays causal. A fault
    that lasts is then absorbed only after (passes + 1) times as long as without the freeze.
    """
    q, N, mb = s.envelope_quantile, s.history_blocks, s.min_history_blocks
    sigma = blocks2.select(block_sigma(blocks, s).alias("_sigma_b")).to_series()
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


def excess(
    xr: Any,
    q_lo: Any,
    q_hi: Any,
    sigma_b: Any,
    block: Any,
    stopping: Any,
    judge_settled: Any,
    s: DetectorSettings,
) -> Any:
    """How far each reading lies beyond the envelope's fence, in fences, in a watched direction
    (-1 where not judged or not below a stop's way down); per-block constants taken onto rows."""
    size = xr.size
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        fence = s.envelope_margin * (q_hi - q_lo) + s.envelope_noise_margin * sigma_b
        fence_rows = fence[block]
        if s.direction == "down":
            beyond = np.full(size, -1.0)
        else:
            beyond = np.subtract(xr, q_hi[block])
            beyond -= fence_rows
            beyond /= fence_rows
        if s.direction != "up":
            under = np.subtract((q_lo - fence)[block], xr)
            under /= fence_rows
            under[stopping] = -1.0
            np.fmax(beyond, under, out=beyond)
            del under
        else:
            np.fmax(beyond, -1.0, out=beyond)
        del fence_rows
        beyond[~judge_settled | np.isnan(beyond)] = -1.0
    return beyond
