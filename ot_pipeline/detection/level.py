"""`level` and `rate_of_change`: readings beyond the envelope's fence (see envelope.py).

`level` is raised after `level_consecutive` readings beyond the fence and held (deadband and
off-delay, against chattering alarms) until `level_clear_samples` readings in a row are back by
`level_deadband` fences. `rate_of_change` flags a step of more than `roc_threshold` x sqrt(2)
noise sigmas that lands beyond the fence at once, before `level` has its consecutive readings.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ot_pipeline.detection.config import DetectorSettings
from ot_pipeline.detection.series import Runs


def scores(excess: Any, breach: Any, runs: Runs, s: DetectorSettings) -> Any:
    """Level score: 1 + excess over the fence (in fences) while the alarm is up, at least 1."""
    held = held_alarm(excess, runs(breach, "breach"), s, runs)
    return np.where(held, np.maximum(1.0 + excess, 1.0), 0.0)


def held_alarm(excess: Any, breach_run: Any, s: DetectorSettings, runs: Runs) -> Any:
    """Rows on which the level alarm is up: raised after `level_consecutive` breaches, held
    (deadband + off-delay) until `level_clear_samples` readings in a row are back inside the
    fence by `level_deadband` fences; not judged readings (stopped, unsettled) count as back.

    Up at t when the last raise of the series is later than the last release, and t is not a
    release itself: two running maxima, no loop. (No raise yet: both are NONE, not up.)
    """
    raised = breach_run >= s.level_consecutive
    released = runs(excess <= -s.level_deadband, "release") >= s.level_clear_samples
    since_raise = runs.since(raised, "raise")
    since_release = runs.since(released, "released")
    return (since_raise < since_release) & ~released


def rate_of_change_scores(
    step: Any, sigma_b: Any, block: Any, breach: Any, gap_missing: Any, s: DetectorSettings
) -> Any:
    """Step / (roc_threshold x sqrt(2) sigma) on readings beyond the fence, not after a gap."""
    with np.errstate(invalid="ignore"):
        roc = np.abs(step)
        roc /= (math.sqrt(2.0) * sigma_b)[block]
        roc /= s.roc_threshold
        roc[~(breach & (gap_missing == 0)) | np.isnan(roc)] = 0.0
    return roc
