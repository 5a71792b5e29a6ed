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
CHUNK_ROWS = 2048  # rows per (rows, channels) temporary: small memory the allocator reuses (a
# fresh large array is zeroed page by page on first touch), and small products for BLAS


def _smoothed(columns: list[Any], window: int) -> Any:
    """(n, channels): per channel, a causal rolling median of 5 readings (a spike of one
    channel, the spike detector's business, does not move it), then a causal rolling mean over
    `window` readings (fewer at the start) against the noise. NaN-free input. One channel at a
    time, so every temporary is one column."""
    n = columns[0].size
    out = np.empty((n, len(columns)))
    for c, column in enumerate(columns):
        median = median_of_5(column)
        median[: min(4, n)] = column[: min(4, n)]
        total = np.cumsum(median, out=median)
        out[:, c] = total
        out[window:, c] -= total[:-window]
    out /= np.minimum(np.arange(1, n + 1), window)[:, None]
    return out


def _filled(column: Any, train: int) -> Any:
    """A channel with each missing reading replaced by the last known one (a missing reading is
    not a relation), before the first by the mean of the (so filled) normal period; None when
    the normal period has no reading."""
    missing = np.isnan(column)
    if not missing.any():
        return np.ascontiguousarray(column)
    index = np.where(missing, 0, np.arange(column.size))
    np.maximum.accumulate(index, out=index)
    filled = column[index]
    before = np.isnan(filled)  # before the first reading
    if before.any():
        if before[:train].all():
            return None
        filled[before] = np.nanmean(filled[:train])
    return filled


def machine_scores(columns: list[Any], s: DetectorSettings) -> tuple[Any, Any]:
    """One machine's aligned channels (each n readings): the machine's score per reading (0 in
    the normal period), and which channels lead it (n, channels): the machine's score goes to
    the channels leading it, 0 to the others."""
    n, p = columns[0].size, len(columns)
    raised_all = np.zeros(n)
    leading_all = np.zeros((n, p), dtype=bool)
    train = s.multivariate_train_samples
    if p < 2 or n <= train:
        return raised_all, leading_all
    filled = [_filled(c, train) for c in columns]
    if any(c is None for c in filled):  # a channel with no reading in the normal period
        return raised_all, leading_all
    smooth = _smoothed(filled, s.multivariate_smooth_samples)
    resolution = np.array([_resolution(c[:train]) for c in filled])
    del filled
    warm = min(s.multivariate_smooth_samples, train // 2)  # the smoothing window has filled
    normal = np.ones(n, dtype=bool)  # readings the model may learn from (not raised)
    run = 0  # readings in a row above the limit, carried over from the segment before
    begin = train
    while begin < n:
        end = min(2 * begin, n)  # the model of [0, begin) judges [begin, 2 x begin)
        fit = _Rows(smooth, normal, warm, begin)
        if fit.count < p + 2:
            break
        model = _Model(fit, resolution, s)
        ratio, leading = model.judge(smooth[begin:end])
        above = ratio >= 1.0
        index = np.arange(above.size)
        last_below = np.maximum.accumulate(np.where(above, -1 - run, index))
        consecutive = index - last_below
        raised = np.where(consecutive >= s.multivariate_consecutive, ratio, 0.0)
        run = int(consecutive[-1])
        normal[begin:end] = raised == 0.0
        raised_all[begin:end] = raised
        leading_all[begin:end] = leading
        begin = end
    return raised_all, leading_all


def _resolution(column: Any) -> float:
    """A channel's smallest non-zero step (0 when none)."""
    steps = np.abs(np.diff(column))
    steps = steps[steps > 0]
    return float(steps.min()) if steps.size else 0.0


class _Rows:
    """The rows of `smooth` in [begin, end) marked in `keep`, as copies of CHUNK_ROWS rows at a
    time (a slice where all are kept, as most are: no gather)."""

    def __init__(self, smooth: Any, keep: Any, begin: int, end: int) -> None:
        self.smooth, self.keep, self.begin, self.end = smooth, keep, begin, end
        self.count = int(np.count_nonzero(keep[begin:end]))
        self.width = smooth.shape[1]

    def parts(self) -> Any:
        for at in range(self.begin, self.end, CHUNK_ROWS):
            stop = min(at + CHUNK_ROWS, self.end)
            keep = self.keep[at:stop]
            yield self.smooth[at:stop].copy() if keep.all() else self.smooth[at:stop][keep]


class _Model:
    """PCA of standardised channels with the limits of T² and Q (LIMIT_QUANTILE over the
    normal period, widened by `multivariate_threshold`), learnt on the rows `fit`. Every pass
    goes over CHUNK_ROWS rows at a time."""

    def __init__(self, fit: _Rows, resolution: Any, s: DetectorSettings) -> None:
        p, m = fit.width, fit.count
        self.mean = sum(part.sum(axis=0) for part in fit.parts()) / m
        centred = np.zeros((p, p))  # sum of (x - mean)(x - mean)^T
        for part in fit.parts():
            part -= self.mean
            centred += part.T @ part
        self.scale = np.fmax(np.sqrt(np.diag(centred) / m), np.fmax(resolution, 1e-9))
        covariance = centred / np.outer(self.scale, self.scale) / max(m - 1, 1)
        eigenvalues, vectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, vectors = np.fmax(eigenvalues[order], 1e-9), vectors[:, order]
        explained = np.cumsum(eigenvalues) / eigenvalues.sum()
        k = min(int(np.searchsorted(explained, MULTIVARIATE_VARIANCE)) + 1, p - 1)
        components = vectors[:, :k]
        # z -> residual (what the model cannot explain), z -> weighted (T² = z . weighted)
        self.residual = np.eye(p) - components @ components.T
        self.weighted = (components / eigenvalues[:k]) @ components.T
        t2, q = np.empty(m), np.empty(m)
        at = 0
        for part in fit.parts():
            t2[at : at + part.shape[0]], q[at : at + part.shape[0]], _ = self._statistics(part)
            at += part.shape[0]
        self.t2_limit = s.multivariate_threshold * max(float(np.quantile(t2, LIMIT_QUANTILE)), 1e-9)
        self.q_limit = s.multivariate_threshold * max(float(np.quantile(q, LIMIT_QUANTILE)), 1e-9)

    def _statistics(self, x: Any) -> tuple[Any, Any, Any]:
        """T², Q and each channel's parts of them (T² = sum of `weighted`, Q of `residual`)
        of readings `x` (a chunk: standardised in place)."""
        x -= self.mean
        x /= self.scale
        weighted, residual = x @ self.weighted, x @ self.residual
        residual *= residual
        weighted *= x
        return weighted.sum(axis=1), residual.sum(axis=1), (weighted, residual)

    def judge(self, smooth: Any) -> tuple[Any, Any]:
        """Per reading of `smooth`: the larger ratio of T² and Q to their limits, and which
        channels lead it (their share of T² / limit + Q / limit at least half the largest)."""
        n = smooth.shape[0]
        ratio = np.empty(n)
        leading = np.empty(smooth.shape, dtype=bool)
        for at in range(0, n, CHUNK_ROWS):
            part = smooth[at : at + CHUNK_ROWS].copy()
            t2, q, (weighted, residual) = self._statistics(part)
            np.fmax(t2 / self.t2_limit, q / self.q_limit, out=ratio[at : at + part.shape[0]])
            share = residual / self.q_limit + weighted / self.t2_limit
            leading[at : at + part.shape[0]] = share >= 0.5 * share.max(axis=1, keepdims=True)
        return ratio, leading


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
        raised, leading = machine_scores([values[a : a + size] for a in starts], s)
        for column, a in enumerate(starts):
            np.multiply(raised, leading[:, column], out=out[a : a + size])
    return out
