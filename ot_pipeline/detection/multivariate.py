"""`multivariate`: the relations between the channels of one machine (PCA, Hotelling T² and Q).

A fault can change how a machine's channels move together (a valve: the flow falls while the
pressure and the current stay where they were) without any channel leaving its own normal range,
where every univariate detector is blind. Per machine with at least two channels sampled together
(the same readings count and times, as the value columns of a recording):

- each channel is smoothed by a causal median of 5 readings (spikes are not relations) and a
  rolling mean of `multivariate_smooth_samples` readings
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

from ot_pipeline.detection.config import DetectorSettings
from ot_pipeline.detection.spike import median_of_5

MULTIVARIATE_VARIANCE = 0.9  # share of the standardised variance the components keep
LIMIT_QUANTILE = 0.995  # of T² and Q over the normal period
MATMUL_ROWS = 4096


def _smoothed(values: Any, window: int) -> Any:
    """Causal rolling median of 5 readings (a spike of one channel, the spike detector's
    business, does not move it), then a causal rolling mean over `window` readings (fewer at
    the start) against the noise. NaN-free input."""
    n = values.shape[0]
    out = np.empty_like(values)
    for c in range(values.shape[1]):
        column = np.ascontiguousarray(values[:, c])
        median = median_of_5(column)
        median[: min(4, n)] = column[: min(4, n)]
        out[:, c] = median
    total = np.cumsum(out, axis=0)
    out = total.copy()
    out[window:] -= total[:-window]
    return out / np.minimum(np.arange(1, n + 1), window)[:, None]


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


def _times(z: Any, matrix: Any) -> Any:
    """z @ matrix for a thin z (n, p), in slices of MATMUL_ROWS rows: BLAS keeps one thread on
    small products (on a large thin one it spins threads and burns CPU seconds for nothing)."""
    out = np.empty((z.shape[0], matrix.shape[1]))
    for begin in range(0, z.shape[0], MATMUL_ROWS):
        np.matmul(z[begin : begin + MATMUL_ROWS], matrix, out=out[begin : begin + MATMUL_ROWS])
    return out


def _gram(z: Any) -> Any:
    """z.T @ z, summed over slices of MATMUL_ROWS rows (one thread, as `_times`)."""
    total = np.zeros((z.shape[1], z.shape[1]))
    for begin in range(0, z.shape[0], MATMUL_ROWS):
        part = z[begin : begin + MATMUL_ROWS]
        total += part.T @ part
    return total


class _Model:
    """PCA of standardised channels with the limits of T² and Q (LIMIT_QUANTILE over the
    normal period, widened by `multivariate_threshold`)."""

    def __init__(self, fit: Any, resolution: Any, s: DetectorSettings) -> None:
        p = fit.shape[1]
        self.mean = fit.mean(axis=0)
        self.scale = np.fmax(fit.std(axis=0), np.fmax(resolution, 1e-9))
        z_fit = (fit - self.mean) / self.scale
        covariance = _gram(z_fit) / max(z_fit.shape[0] - 1, 1)
        eigenvalues, vectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, vectors = np.fmax(eigenvalues[order], 1e-9), vectors[:, order]
        explained = np.cumsum(eigenvalues) / eigenvalues.sum()
        k = min(int(np.searchsorted(explained, MULTIVARIATE_VARIANCE)) + 1, p - 1)
        components = vectors[:, :k]
        # z -> residual (what the model cannot explain), z -> weighted (T² = z . weighted);
        # p x p matrices, applied by `_times`
        self.residual = np.eye(p) - components @ components.T
        self.weighted = (components / eigenvalues[:k]) @ components.T
        self.t2_limit = self.q_limit = 1.0
        t2, q, _ = self._statistics(z_fit)
        self.t2_limit = s.multivariate_threshold * max(float(np.quantile(t2, LIMIT_QUANTILE)), 1e-9)
        self.q_limit = s.multivariate_threshold * max(float(np.quantile(q, LIMIT_QUANTILE)), 1e-9)

    def _statistics(self, z: Any) -> tuple[Any, Any, Any]:
        weighted, residual = _times(z, self.weighted), _times(z, self.residual)
        residual *= residual
        weighted *= z
        # each channel's share of T² / limit + Q / limit
        share = residual / self.q_limit + weighted / self.t2_limit
        return weighted.sum(axis=1), residual.sum(axis=1), share

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
