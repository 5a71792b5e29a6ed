"""`drift`: a *consistent* trend of block medians over `drift_blocks` blocks, away from the middle
of the envelope.

Consistent: either all but a `drift_consistency` share of consecutive block changes go one way,
or `drift_direction_share` of the DRIFT_LAG_BLOCKS-block changes go one way and the median block
change accounts for at least half of the net change (evenly spread, not one step or ramp). The
trend must exceed `drift_threshold` x its usual size over the history and a noise bound. The
CUSUM idea with order statistics instead of sums: setpoint steps and ramps, short and
concentrated, do not accumulate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection.blocks import usual_size
from ot_pipeline.detection.config import DetectorSettings

DRIFT_LAG_BLOCKS = 6  # a drift's direction is read from changes over this many blocks


def consistency_columns(s: DetectorSettings) -> dict[str, pl.Expr]:
    """Stage-2 block columns (rolled per series): `_rise` / `_fall`, the high and low quantile
    of the last drift_blocks block-to-block changes. Normal ramps (setpoint changes, restarts)
    are shorter than the window and do not qualify."""
    return {
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
    }


def trend_columns(s: DetectorSettings) -> dict[str, pl.Expr]:
    """`_trend` (from `_rise` / `_fall`) and, for a slow drift under noise, `_up_share` (share of
    rising DRIFT_LAG_BLOCKS-block changes), `_net` (net change over the window) and `_spread`
    (the typical block change x the window)."""
    D = s.drift_blocks
    # Direction over a few blocks (a slow drift is buried in the noise of consecutive blocks).
    rising = (pl.col("_bmed_r").diff(DRIFT_LAG_BLOCKS) > 0).cast(pl.Float64)
    return {
        # unknown (null) until the window has its minimum of changes: an unknown trend counted
        # as 0 would make the usual trend look like 0 in the first hour of a series
        "_trend": pl.when(pl.col("_rise").is_null() | pl.col("_fall").is_null())
        .then(None)
        .when(pl.col("_rise") > 0)
        .then(pl.col("_rise"))
        .when(pl.col("_fall") < 0)
        .then(pl.col("_fall"))
        .otherwise(0.0),
        "_up_share": rising.rolling_mean(D, min_samples=D // 2).over("_sid"),
        "_net": (pl.col("_bmed_r") - pl.col("_bmed_r").shift(D)).over("_sid"),
        # evenly spread: the typical block change accounts for most of the net change (a few
        # steps or one ramp inside the window do not)
        "_spread": (pl.col("_bmed_r").diff().rolling_median(D, min_samples=D // 2) * D).over(
            "_sid"
        ),
    }


def with_change(blocks2: pl.DataFrame, s: DetectorSettings) -> pl.DataFrame:
    """`_change`: the net change when most changes go its way and it is evenly spread, else 0."""
    unknown = pl.col("_net").is_null() | pl.col("_up_share").is_null() | pl.col("_spread").is_null()
    return blocks2.with_columns(
        _even=(pl.col("_spread") / pl.col("_net")) >= 0.5,
    ).with_columns(
        # Unknown (null) before a full window exists: counted as 0, the first drift_blocks blocks
        # made the usual change 0 and the first real changes were judged against the noise bound
        # alone (a burst of false drift verdicts ~1,800 readings into a fresh series).
        _change=pl.when(unknown)
        .then(None)
        .when(
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


def history_columns(s: DetectorSettings) -> dict[str, pl.Expr]:
    """Usual sizes of trend and change over earlier blocks, and both shifted by one block."""
    return {
        "_usual": usual_size("_trend", s),
        "_usual_change": usual_size("_change", s),
        "_change": pl.col("_change").shift(1),
        "_trend": pl.col("_trend").shift(1),
    }


def scores(
    blocks2: pl.DataFrame,
    xr: Any,
    sigma_b: Any,
    q_lo: Any,
    q_hi: Any,
    block: Any,
    judge_settled: Any,
    s: DetectorSettings,
) -> Any:
    """Drift score per row: trend / threshold on settled readings on the far side of the
    envelope's middle, in a watched direction (`drift_direction`, by default both). A drift
    moves the value away from where the series normally sits; ramps back towards the middle (a
    restart, the end of a shift change) are recoveries, not drifts. Everything but the side of
    the center is a per-block figure."""
    trend, usual, change, usual_change = (
        blocks2[c].to_numpy() for c in ("_trend", "_usual", "_change", "_usual_change")
    )
    root = math.sqrt(2.0 / s.block_samples)
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
        # no change verdict before the usual change is known either (fmax would drop the NaN
        # and leave the noise bound alone)
        change_score[np.isnan(usual_change)] = np.nan
        # no verdict before the usual trend is known (a null would leave only the noise bound)
        drift_b = np.where(np.isnan(usual), 0.0, np.fmax(trend_score, change_score))
        drift_b[np.isnan(drift_b)] = 0.0
        watched = s.drift_direction or s.direction
        if watched == "up":
            drift_b[~(direction > 0)] = 0.0
        elif watched == "down":
            drift_b[~(direction < 0)] = 0.0
        away = np.subtract(xr, center[block])
        away *= direction[block]
        drift = np.where(judge_settled & (away > 0), drift_b[block], 0.0)
    return drift
