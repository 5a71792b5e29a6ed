"""`ramp`: the block median moved more over the last `ramp_blocks` blocks than `ramp_threshold` x
the usual size of such a move (known after `drift_min_history_blocks`) and `ramp_noise_threshold`
block-noise sigmas, in a watched direction: a rise or fall faster than the series has shown."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection.blocks import usual_size
from ot_pipeline.detection.config import DetectorSettings


def move_columns(s: DetectorSettings) -> dict[str, pl.Expr]:
    """Stage-2 block column `_ramp`: how far the block median moved over ramp_blocks blocks."""
    return {"_ramp": (pl.col("_bmed_r") - pl.col("_bmed_r").shift(s.ramp_blocks)).over("_sid")}


def history_columns(s: DetectorSettings) -> dict[str, pl.Expr]:
    """The usual size of a move over earlier blocks, and the move shifted by one block."""
    return {"_usual_ramp": usual_size("_ramp", s), "_ramp": pl.col("_ramp").shift(1)}


def scores(
    blocks2: pl.DataFrame, sigma_b: Any, block: Any, judge_settled: Any, s: DetectorSettings
) -> Any:
    """Ramp score per row: move / threshold (a per-block figure) on settled readings."""
    ramp, usual_ramp = (blocks2[c].to_numpy() for c in ("_ramp", "_usual_ramp"))
    with np.errstate(invalid="ignore", divide="ignore"):
        block_noise = sigma_b * math.sqrt(2.0 / s.block_samples)
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
    return np.where(judge_settled, ramp_b[block], 0.0)
