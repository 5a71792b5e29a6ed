"""`multivariate`: the relations between the channels of one machine (PCA, Hotelling T² and Q).

A fault can change how a machine's channels move together (a valve: the flow falls while the
pressure and the current stay where they were) without any channel leaving its own normal range,
where every univariate detector is blind. Per machine with at least two channels sampled together
(the same readings count and times, as the value columns of a recording):

- each channel is smoothed by a causal rolling median of `multivariate_smooth_samples` readings
  (the relations, not the noise of single readings);
- a normal period gives each channel's mean and standard deviation (not below its resolution)
  and the principal components of the standardised channels (enough to explain
  MULTIVARIATE_VARIANCE of the variance, at most all channels but one, so a residual space
  remains). The first model is learnt on the machine's first `multivariate_train_samples`
  readings and judges the readings up to twice that; then it is learnt again on all earlier
  readings that were not raised, each time the history doubles (a slow wander of the process
  becomes known; a fault is not learnt; log2 refits in all);
- every later reading gets Hotelling's T² (the distance inside the model, per component
  variance) and Q, the squared prediction error (SPE: what the model cannot explain: a broken
  relation). Limits are high empirical quantiles of both over the normal period, widened by
  `multivariate_threshold`; the score is the larger ratio to its limit, given once
  `multivariate_consecutive` readings in a row exceed 1 (as `level` does).

Causal (a reading's score uses it and the readings before it, and a model fitted on earlier
readings only) and vectorised: a few passes of numpy over an (n, channels) array per machine.
A machine whose first readings are not normal is judged against them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection.config import DetectorSettings

MULTIVARIATE_VARIANCE = 0.9  # share of the standardised variance the components keep
LIMIT_QUANTILE = 0.995  # of T² and Q over the normal period


def _smoothed(values: Any, window: int) -> Any:
    """Causal rolling median over `window` readings (fewer at the start): a spike of one
    channel (the spike detector's business) does not move it."""
    frame = pl.DataFrame({str(c): values[:, c] for c in range(values.shape[1])})
    return frame.select(pl.all().rolling_median(window, min_samples=1)).to_numpy()


def machine_scores(values: Any, s: DetectorSettings) -> Any:
    """Scores (n, p) of one machine's aligned channels (n, p), 0 in the normal period: the
    machine's score on the channels leading it, 0 on the others."""
    n, p = values.shape
    scores = np.zeros((n, p))
    train = s.multivariate_train_samples
    if p < 2 or n <= train:
        return scores
    # nulls: the last known value of the channel (a missing reading is not a relation)
    missing = np.isnan(values)
    if missing.any():
        index = np.where(~missing, np.arange(n)[:, None], 0)
        np.maximum.accumulate(index, axis=0, out=index)
        values = np.take_along_axis(values, index, axis=0)
        values = np.where(np.isnan(values), np.nanmean(values[:train], axis=0), values)
        if np.isnan(values).any():  # a channel with no reading in the normal period
            return scores
    smooth = _smoothed(values, s.multivariate_smooth_samples)
    resolution = _resolution(values[:train])
    warm = min(s.multivariate_smooth_samples, train // 2)  # the smoothing window has filled
    normal = np.ones(n, dtype=bool)  # readings the model may learn from (not raised)
    run = 0  # readings in a row above the limit, carried over from the segment before
    begin = train
    while begin < n:
        end = min(2 * begin, n)  # the model of [0, begin) judges [begin, 2 x begin)
        fit = smooth[warm:begin][normal[warm:begin]]
        if fit.shape[0] < p + 2:
            break
        model = _Model(fit, resolution, s)
        ratio, share = model.judge(smooth[begin:end])
        above = ratio >= 1.0
        index = np.arange(above.size)
        last_below = np.maximum.accumulate(np.where(above, -1 - run, index))
        consecutive = index - last_below
        raised = np.where(consecutive >= s.multivariate_consecutive, ratio, 0.0)
        run = int(consecutive[-1])
        normal[begin:end] = raised == 0.0
        # ... on the channels that account for it (at least half the largest share)
        leading = share >= 0.5 * share.max(axis=1, keepdims=True)
        scores[begin:end] = np.where(leading, raised[:, None], 0.0)
        begin = end
    return scores


def _resolution(values: Any) -> Any:
    """Each channel's smallest non-zero step (0 when none)."""
    steps = np.abs(np.diff(values, axis=0))
    steps[steps == 0] = np.inf
    resolution = steps.min(axis=0) if steps.shape[0] else np.zeros(values.shape[1])
    resolution[~np.isfinite(resolution)] = 0.0
    return resolution


class _Model:
    """PCA of standardised channels with the limits of T² and Q (LIMIT_QUANTILE over the
    normal period, widened by `multivariate_threshold`)."""

    def __init__(self, fit: Any, resolution: Any, s: DetectorSettings) -> None:
        p = fit.shape[1]
        self.mean = fit.mean(axis=0)
        self.scale = np.fmax(fit.std(axis=0), np.fmax(resolution, 1e-9))
        z_fit = (fit - self.mean) / self.scale
        eigenvalues, vectors = np.linalg.eigh(np.cov(z_fit, rowvar=False))
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, vectors = np.fmax(eigenvalues[order], 1e-9), vectors[:, order]
        explained = np.cumsum(eigenvalues) / eigenvalues.sum()
        k = min(int(np.searchsorted(explained, MULTIVARIATE_VARIANCE)) + 1, p - 1)
        self.components = vectors[:, :k]
        self.weights = self.components / eigenvalues[:k]  # T² = (z @ weights) . (z @ comps)
        self.t2_limit = self.q_limit = 1.0
        t2, q, _ = self._statistics(z_fit)
        self.t2_limit = s.multivariate_threshold * max(float(np.quantile(t2, LIMIT_QUANTILE)), 1e-9)
        self.q_limit = s.multivariate_threshold * max(float(np.quantile(q, LIMIT_QUANTILE)), 1e-9)

    def _statistics(self, z: Any) -> tuple[Any, Any, Any]:
        t = z @ self.components
        weighted = (z @ self.weights) @ self.components.T
        residual = z - t @ self.components.T
        # each channel's share of T² / limit + Q / limit
        share = residual**2 / self.q_limit + z * weighted / self.t2_limit
        t2 = np.einsum("ij,ij->i", z, weighted)
        return t2, np.einsum("ij,ij->i", residual, residual), share

    def judge(self, smooth: Any) -> tuple[Any, Any]:
        """(larger ratio of T² and Q to their limits, each channel's share) per reading."""
        t2, q, share = self._statistics((smooth - self.mean) / self.scale)
        return np.fmax(t2 / self.t2_limit, q / self.q_limit), share


def scores(
    machine: Any,
    series_start: Any,
    series_length: Any,
    times: Any,
    values: Any,
    on: Any,
    s: DetectorSettings,
) -> Any:
    """Multivariate scores of rows sorted by series (each series contiguous, in time order).

    `machine`, `series_start`, `series_length` and `on` are per series (machine code, first
    row, row count, whether the detector is on); `times` and `values` per row. The channels
    of a machine are the series of that machine with the same row count and times (sampled
    together); a machine with fewer than two such series gets no score.
    """
    out = np.zeros(values.size)
    for code in np.unique(machine[on]):
        members = np.flatnonzero((machine == code) & on)
        if members.size < 2:
            continue
        length = series_length[members]
        members = members[length == np.bincount(length).argmax()]  # the usual row count
        if members.size < 2:
            continue
        first = series_start[members[0]]
        size = int(series_length[members[0]])
        reference = times[first : first + size]
        aligned = [
            m
            for m in members
            if np.array_equal(times[series_start[m] : series_start[m] + size], reference)
        ]
        if len(aligned) < 2:
            continue
        starts = series_start[aligned]
        grid = np.stack([values[a : a + size] for a in starts], axis=1)
        machine_score = machine_scores(grid, s)
        for column, a in enumerate(starts):
            out[a : a + size] = machine_score[:, column]
    return out
