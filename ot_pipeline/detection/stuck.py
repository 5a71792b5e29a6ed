"""`stuck`: `stuck_samples` consecutive readings within `stuck_tolerance` of each other, on a
series where at most `stuck_max_flat_share` of steps are normally flat (quantized sensors that
repeat values are not stuck). Judged while stopped too, except on an exact zero (a stopped
counter)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ot_pipeline.detection.config import DetectorSettings
from ot_pipeline.detection.series import Runs


def flat_steps(step: Any, s: DetectorSettings) -> Any:
    """Steps within the tolerance (their share per block is the `_flat_share` block statistic)."""
    return np.abs(step) <= s.stuck_tolerance


def scores(
    flat: Any,
    flat_share: Any,
    block: Any,
    ready: Any,
    stopped: Any,
    xv: Any,
    runs: Runs,
    s: DetectorSettings,
) -> tuple[Any, Any]:
    """(score, where): 2 x run / stuck_samples, on the rows where the value is stuck."""
    flat_run = runs(flat, "flat")
    stuck = ready & (~stopped | (xv != 0.0)) & (flat_run >= s.stuck_samples)
    with np.errstate(invalid="ignore"):
        stuck &= (flat_share <= s.stuck_max_flat_share)[block]
    return 2.0 * flat_run / s.stuck_samples, stuck
