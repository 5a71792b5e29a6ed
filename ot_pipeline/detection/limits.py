"""`limits`: the value beyond a static `lower_limit` / `upper_limit` for `limit_consecutive`
readings (only when configured, e.g. the nominal band of a machine's metadata)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ot_pipeline.detection.config import DetectorSettings
from ot_pipeline.detection.series import Runs


def configured(s: DetectorSettings) -> bool:
    return s.lower_limit is not None or s.upper_limit is not None


def scores(x: Any, judge: Any, runs: Runs, s: DetectorSettings) -> Any:
    """1 + run / (4 x limit_consecutive) once the run of judged readings beyond a limit is
    long enough, growing with the run."""
    breach = np.zeros(x.size, dtype=bool)
    if s.lower_limit is not None:
        breach |= x < s.lower_limit
    if s.upper_limit is not None:
        breach |= x > s.upper_limit
    breach &= judge
    limit_run = runs(breach, "limit")
    return np.where(
        limit_run >= s.limit_consecutive,
        1.0 + limit_run / (4.0 * s.limit_consecutive),
        0.0,
    )
