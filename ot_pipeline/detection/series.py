"""The per-series row arrays of one slice: where each series begins, positions, steps, runs.

Rows come sorted by series (`_code`) and device order. Everything here is numpy on whole-slice
arrays, nulls as NaN (which no comparison passes, as no null does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection.resume import NONE, Resume


class Runs:
    """Run lengths within the series of one set of rows (the row index and the rows before
    each series are prepared once for the many conditions of a slice).

    With a `Resume` (a batch resumed from a state), a named run or distance continues the one
    carried at the checkpoint instead of starting at the slice's first row, ignores the context
    rows before the checkpoint, and its value at the next checkpoint is recorded."""

    def __init__(self, start: Any, resume: Resume | None = None) -> None:
        dtype = np.int32 if start.size < 2**31 - 1 else np.int64
        self.start = start
        self.index = np.arange(start.size, dtype=dtype)
        self.before = (start - 1).astype(dtype)  # the row before the series' first one
        self.resume = resume

    def __call__(self, condition: Any, name: str | None = None) -> Any:
        """Consecutive rows (ending at this one) of the same series for which `condition`
        holds: the distance to the last row where it fails (the row itself when it fails, so
        0), in place on one array."""
        r = self.resume
        if r is None or name is None:
            last = np.where(condition, self.index.dtype.type(-1), self.index)
            np.maximum.accumulate(last, out=last)
            np.maximum(last, self.before, out=last)
            return np.subtract(self.index, last, out=last)
        # context rows never end a run; the run in progress at P - 1 goes on from P
        last64 = np.where(condition | ~r.live, -1, self.index.astype(np.int64))
        np.maximum.accumulate(last64, out=last64)
        carried = (r.live_row - 1 - r.carry(name, 0))[r.sid]
        last64 = np.where(last64 >= self.start, last64, carried)  # none in the series: carried
        run = np.maximum(self.index - last64, 0)
        r.record(name, run, 0)
        return run

    def since(self, event: Any, name: str) -> Any:
        """Rows since the last `event` of the series (0 on one; at least NONE, or the largest
        value of the row index's type, when none yet)."""
        r = self.resume
        if r is None:  # the plain path: int32 in place, as cheap as one running maximum
            last = np.where(event, self.index, self.index.dtype.type(-1))
            np.maximum.accumulate(last, out=last)
            never = last < self.start  # none yet in this series (an earlier series' event)
            np.subtract(self.index, last, out=last)
            last[never] = np.iinfo(last.dtype).max
            return last
        last64 = np.where(event & r.live, self.index.astype(np.int64), -1)
        np.maximum.accumulate(last64, out=last64)
        virtual = (r.live_row - 1 - r.carry(name, NONE))[r.sid]
        last64 = np.where(last64 >= self.start, last64, virtual)
        since = np.minimum(self.index - last64, NONE)
        r.record(name, since, NONE)
        return since


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
    resume: Resume | None = None  # the carried state (a batch resumed from a state)


def series_rows(rows: pl.DataFrame, resume_of: Any = None) -> SeriesRows:
    """The row arrays of rows sorted by series (`_code`) and device order. `resume_of(sid,
    start)`: the `Resume` of the slice's series (a batch resumed from a state), whose positions
    continue the series' earlier readings."""
    size = rows.height
    codes = rows["_code"].to_numpy()
    first = np.ones(size, dtype=bool)
    np.not_equal(codes[1:], codes[:-1], out=first[1:])
    sid = (np.cumsum(first, dtype=np.uint32) - 1).astype(np.uint32, copy=False)
    index = np.arange(size, dtype=np.int64)
    start = np.maximum.accumulate(np.where(first, index, 0))  # the series' first row
    n = index - start  # position in the series
    resume = resume_of(sid, start) if resume_of is not None else None
    if resume is not None:
        n += resume.n0[sid]
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
        runs=Runs(start, resume),
        x=x,
        suppressed=suppressed,
        step=step,
        xv=np.where(suppressed, np.nan, x),
        resume=resume,
    )
