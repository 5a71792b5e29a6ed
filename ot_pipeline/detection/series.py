"""The per-series row arrays of one slice: where each series begins, positions, steps, runs.

Rows come sorted by series (`_code`) and device order. Everything here is numpy on whole-slice
arrays, nulls as NaN (which no comparison passes, as no null does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl


class Runs:
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


@dataclass
class SeriesRows:
    """The row arrays every detector reads (one entry per row of the slice)."""

    size: int
    first: Any  # the series' first row
    sid: Any  # series number within the slice (uint32)
    index: Any  # row number (int64)
    start: Any  # row number of the series' first row
    n: Any  # position in the series
    runs: Runs
    x: Any  # the value (float, NaN for null)
    suppressed: Any  # a suppressed device status: never anomalous, left out of every baseline
    step: Any  # x - the previous x of the series (NaN on the first)
    xv: Any  # x, NaN on suppressed readings


def series_rows(rows: pl.DataFrame) -> SeriesRows:
    """The row arrays of rows sorted by series (`_code`) and device order."""
    size = rows.height
    codes = rows["_code"].to_numpy()
    first = np.ones(size, dtype=bool)
    np.not_equal(codes[1:], codes[:-1], out=first[1:])
    sid = (np.cumsum(first, dtype=np.uint32) - 1).astype(np.uint32, copy=False)
    index = np.arange(size, dtype=np.int64)
    start = np.maximum.accumulate(np.where(first, index, 0))  # the series' first row
    n = index - start  # position in the series
    x = rows["_x"].to_numpy()  # float, NaN for null
    suppressed = rows["_suppressed"].to_numpy()
    step = np.empty(size)
    step[0] = np.nan
    np.subtract(x[1:], x[:-1], out=step[1:])
    step[first] = np.nan
    return SeriesRows(
        size=size,
        first=first,
        sid=sid,
        index=index,
        start=start,
        n=n,
        runs=Runs(start),
        x=x,
        suppressed=suppressed,
        step=step,
        xv=np.where(suppressed, np.nan, x),
    )
