"""The combiner: detector scores -> one score, detector, severity per reading.

The score of a reading is the highest detector score (0 on suppressed readings); `detector`
names that detector (the first in DETECTORS order on a tie). Severity starts from the magnitude
(score >= 8 CRITICAL, >= 4 HIGH, >= 2 MEDIUM, else LOW), escalates one step once an anomalous
run (an alarm episode) has lasted `escalate_samples` readings and one more at 4 x that, and never
goes down within the run; a `regime` transition stays LOW. Detector and severity are integer
codes until `named`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection.config import DetectorSettings
from ot_pipeline.detection.resume import NONE, Resume
from ot_pipeline.detection.series import Runs

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
    "multivariate",
    "regime",
    "relation",
)
# What `Combiner.coded` returns (and `engine.score_codes` for the whole input).
CODED_SCHEMA = {
    "score": pl.Float64,
    "is_anomaly": pl.Boolean,
    "_severity": pl.Int8,
    "_detector": pl.Int8,
}


class Combiner:
    """Folds the detectors' scores in, one detector at a time (no array kept per detector)."""

    def __init__(self, size: int) -> None:
        self.top = np.zeros(size)
        self.named = np.zeros(size, dtype=np.int8)
        self._higher = np.empty(size, dtype=bool)

    def first(self, name: str, score: Any, where: Any) -> None:
        """The first detector (DETECTORS[0]): its score where it fires, nothing to compare."""
        assert name == DETECTORS[0]
        np.copyto(self.top, score, where=where)

    def add(self, name: str, score: Any) -> None:
        """A later detector: it is named where it scores higher than every one before."""
        higher = self._higher
        np.greater(score, self.top, out=higher)
        self.named[higher] = DETECTORS.index(name)
        np.copyto(self.top, score, where=higher)

    def coded(self, suppressed: Any, runs: Runs, s: DetectorSettings) -> pl.DataFrame:
        """score, is_anomaly and severity / detector codes (-1 when not anomalous)."""
        named = self.named
        score = self.top
        score[suppressed] = 0.0
        anomalous = score >= 1.0
        resume = runs.resume
        if s.alarm_budget and (anomalous.any() or resume is not None):
            muted = flood_muted(anomalous, runs, s)
            score[muted] = 0.0
            anomalous &= ~muted
        # Severity: magnitude sets the base step, duration escalates (a fault that lasts matters
        # more); a regime transition stays LOW.
        step = np.select([score >= 8.0, score >= 4.0, score >= 2.0], [3, 2, 1], 0)
        run = runs(anomalous, "alarm")
        step = np.clip(step + (run >= s.escalate_samples) + (run >= 4 * s.escalate_samples), 0, 3)
        # An alarm does not de-escalate while it lasts: the highest step so far in the run. (Run
        # numbers grow along the rows, so one running maximum of run * 4 + step does it.)
        starts = anomalous & (run == 1)
        if resume is not None:  # the alarm in progress at the checkpoint goes on at its step
            going_on = np.zeros(anomalous.size, dtype=bool)
            going_on[resume.live_row] = True
            going_on &= anomalous & (run > 1)
            carried = resume.carry("alarm_step", 0)[resume.sid]
            step = np.where(going_on, np.maximum(step, carried), step)
            starts |= going_on
        run_id = np.cumsum(starts)
        step = np.maximum.accumulate(run_id * 4 + step) - run_id * 4
        if resume is not None:
            resume.record("alarm_step", np.where(anomalous, step, 0), 0)  # 0: no alarm on
        step = np.where(named == DETECTORS.index("regime"), 0, step)
        return pl.DataFrame(
            {
                "score": pl.Series(score).round(4),
                "is_anomaly": anomalous,
                "_severity": np.where(anomalous, step, -1).astype(np.int8),
                "_detector": np.where(anomalous, named, -1).astype(np.int8),
            }
        )


def flood_muted(anomalous: Any, runs: Runs, s: DetectorSettings) -> Any:
    """Rows of alarms muted by the series' alarm budget (flood suppression, ISA-18.2).

    An alarm episode starts at an anomalous reading after at least `alarm_merge_samples` quiet
    ones. An episode is muted (all of its readings) when it is more than the `alarm_budget`-th
    to start within the last `alarm_budget_window` readings of the series, counting muted ones:
    a series raising alarms faster than anomalies plausibly occur is miscalibrated for its
    signal, and while it floods its new alarms are more likely noise than faults. A flood thus
    costs at most `alarm_budget` alarms however long it lasts, and alarms come back once its
    rate falls. Causal: a reading's fate depends only on the alarms before it.
    """
    index, start = runs.index, runs.start
    resume = runs.resume
    quiet = runs(~anomalous, "calm")  # quiet readings in a row, ending at each row (0 on an alarm)
    position = index - start
    before = np.empty_like(quiet)  # quiet readings in a row before each row, in its series
    before[0] = 0
    before[1:] = quiet[:-1]
    if resume is not None:  # positions continue the series; the calm before P is carried
        position = position + resume.n0[resume.sid]
        before[resume.live_row] = resume.carry("calm", 0)
    np.minimum(before, position, out=before)
    onset = anomalous & ((before >= s.alarm_merge_samples) | (before == position))
    if resume is not None:
        onset &= resume.live
    started = np.cumsum(onset, dtype=np.int64)  # episodes started so far (all series)
    back = index - s.alarm_budget_window  # the row just out of the window
    within = np.where(back >= start, back, start - 1)  # ... or the row before the series
    earlier = np.where(within >= 0, started[np.maximum(within, 0)], 0)
    count = started - earlier
    if resume is not None:  # ... and the onsets before the checkpoint still in the window
        at = np.flatnonzero(onset)
        for slot in resume.onsets.T:
            count[at] += slot[resume.sid[at]] > position[at] - s.alarm_budget_window
    over = onset & (count > s.alarm_budget)
    if resume is None and not over.any():
        return np.zeros(anomalous.size, dtype=bool)
    episode = started - 1  # the episode each anomalous row belongs to (its latest onset)
    muted_episode = np.zeros(int(started[-1]) + 1 if started.size else 1, dtype=bool)
    muted_episode[episode[over]] = True
    in_muted = muted_episode[np.maximum(episode, 0)]
    if resume is not None:
        # rows after P before the series' first onset here belong to the episode in progress
        last_onset = np.maximum.accumulate(np.where(onset, index, -1))
        carried = last_onset < resume.live_row[resume.sid]
        in_muted = np.where(carried, resume.muted[resume.sid], in_muted)
        _record_budget(resume, onset, position, in_muted)
    return anomalous & in_muted


def _record_budget(resume: Resume, onset: Any, position: Any, in_muted: Any) -> None:
    """The alarm budget at the next checkpoint: the last onsets' positions (the carried ones,
    then this slice's before P') and whether the episode in progress there is muted."""
    slots = resume.onsets.shape[1]
    at = np.flatnonzero(onset)
    at = at[at <= resume.end_row[resume.sid[at]]]
    merged = pl.concat(
        [
            pl.DataFrame(
                {
                    "_sid": np.repeat(np.arange(resume.n0.size, dtype=np.int64), slots),
                    "_q": resume.onsets.reshape(-1),
                }
            ),
            pl.DataFrame({"_sid": resume.sid[at].astype(np.int64), "_q": position[at]}),
        ]
    )
    last = merged.filter(pl.col("_q") >= 0).group_by("_sid").agg(pl.col("_q").sort().tail(slots))
    onsets = np.full((resume.n0.size, slots), -NONE, dtype=np.int64)
    for sid, qs in last.iter_rows():
        onsets[sid, slots - len(qs) :] = qs
    resume.out["onsets"] = onsets
    muted = resume.muted.copy()
    has = resume.end_row >= 0
    muted[has] = in_muted[resume.end_row[has]]
    resume.out["muted"] = muted


def named(codes: pl.Series, names: pl.Series) -> pl.Series:
    """Names from integer codes (null for a negative code); `names` may be String or Enum."""
    return names.gather(pl.select(pl.when(codes >= 0).then(codes)).to_series())
