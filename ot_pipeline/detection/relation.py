"""`relation`: a metric that leaves the relation it keeps with the other metrics of its machine.

Most metrics of a machine are driven by one operating point: speed, flow, pressure, current and
energy move together when the load changes. A drift of one of them (a sensor losing its
calibration, a valve wearing) breaks that relation while the value stays inside the range the
load moves it through, where a per-series detector cannot tell it from a load change.

Per machine, on the means of aligned time buckets (`relation_bucket_seconds`, 30 s), every
metric j is predicted from every other metric k by a quadratic fitted on the last
`relation_history_chunks` chunks (of CHUNK_BUCKETS buckets: an hour at 30 s), refitted at every
chunk. A pair is used only where it explains its target well (the residual RMS below
GOOD_SHARE of the target's spread, or near the noise of a target that moved) and where k lies
inside the range the fit has seen (no extrapolation to an operating point not learnt yet).
Chunks that fit much worse than the window's median chunk (a fault, a stuck sensor in the
window) are left out of the fit. A
metric's relation score is the *smallest* of its pairs' |residual| / (`relation_threshold` x
RMS): it is broken only when no other metric explains it, so a drift of k is not blamed on j.
A bucket is raised after `relation_consecutive` broken buckets in a row; its score is given to
the readings of the next bucket (causal: a bucket is judged once complete).

Everything is computed from per-chunk moment sums (count, x..x^4, y, xy, x^2 y, y^2, min, max),
folded in a fixed order, so a batch resumed from the bucket means of its state
(`resume.py`) computes exactly the figures of one continuous run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection.blocks import MEDIAN_ABS_STEP_TO_SIGMA
from ot_pipeline.detection.config import DetectorSettings

CHUNK_BUCKETS = 120  # buckets per chunk: the model is refitted at every chunk
MIN_FIT_BUCKETS = 120  # buckets a pair's fit needs (after bad chunks are left out)
MIN_CHUNK_BUCKETS = 30  # a chunk with fewer buckets does not vote on the window's usual fit
BAD_CHUNK = 9.0  # a chunk whose mean squared residual exceeds 9 x the median chunk's is left out
GOOD_SHARE = 0.1  # a pair judges its target when its residual RMS is below 10 % of its spread
NOISE_FIT = 1.5  # ... or below 1.5 x the noise of its bucket means (all it can explain)
NOISE_SPREAD = 4.0  # ... when the target moved (spread) at least 4 x its noise in the window
EXTRAPOLATE = 0.05  # k may lie this share of its learnt range outside it
MOMENTS = ("n", "x", "x2", "x3", "x4", "y", "xy", "x2y", "y2")  # per-chunk sums of x and y
KEY_SHIFT = 1 << 36
BATCH_CHUNK_ROWS = 20_000  # pairs' chunks scored together (x 120 buckets x 8 bytes per array)


@dataclass(frozen=True)
class Relation:
    """Per row (engine order) the relation score, and the bucket means a state carries
    (`_rank`, `_bucket`, `_mean`: completed buckets of the window the next batch needs)."""

    row_score: Any
    carried: pl.DataFrame


def carried_chunks(s: DetectorSettings) -> int:
    """Chunks of bucket means before the open one that the next batch needs."""
    return s.relation_history_chunks + 2


def bucket_means(rank: Any, bucket: Any, x: Any) -> tuple[pl.DataFrame, Any, Any]:
    """Mean of each series' readings per time bucket (`_rank`, `_bucket`, `_mean`), the
    first row of every run of rows of one (rank, bucket) and each run's key.

    Rows come sorted by series and device order, so a bucket is one run of rows (a reading out
    of time order makes another run of the same bucket: the runs are added up). A mean, not a
    median: a spike of 10 sigmas moves the mean of 30 readings by 2 sigmas of a bucket mean, far
    below a relation's threshold, and the mean is the better estimate of the level (and a sum
    in row order, which a batch resumed from the same readings repeats)."""
    key = rank * KEY_SHIFT + bucket
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    valid = ~np.isnan(x)
    sums = np.add.reduceat(np.where(valid, x, 0.0), starts) if starts.size else np.zeros(0)
    counts = np.add.reduceat(valid, starts, dtype=np.int64) if starts.size else np.zeros(0)
    run_keys = key[starts]
    frame = pl.DataFrame(
        {"_rank": rank[starts], "_bucket": bucket[starts], "_sum": sums, "_count": counts}
    )
    if not (np.diff(run_keys) > 0).all():
        frame = frame.group_by("_rank", "_bucket", maintain_order=True).agg(
            pl.col("_sum").sum(), pl.col("_count").sum()
        )
    means = (
        frame.filter(pl.col("_count") > 0)
        .select("_rank", "_bucket", _mean=pl.col("_sum") / pl.col("_count"))
        .sort("_rank", "_bucket")
    )
    return means, starts, run_keys


def _merge(computed: pl.DataFrame, prior: pl.DataFrame | None) -> pl.DataFrame:
    """The prior batch's completed buckets, then this batch's from the first one after them
    (the context readings before it may cover a bucket only in part)."""
    if prior is None or prior.height == 0:
        return computed
    last = prior.group_by("_rank").agg(_last=pl.col("_bucket").max())
    fresh = (
        computed.join(last, on="_rank", how="left")
        .filter(pl.col("_last").is_null() | (pl.col("_bucket") > pl.col("_last")))
        .drop("_last")
    )
    return pl.concat([prior.select(fresh.columns), fresh], how="vertical_relaxed").sort(
        "_rank", "_bucket"
    )


def _nanmedian(values: Any) -> Any:
    """Median of each row ignoring NaN (NaN for a row without values, silently)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(values, axis=1)


def _chunk_sums(x: Any, y: Any) -> dict[str, Any]:
    """Moment sums of each chunk (rows of the (chunks, CHUNK_BUCKETS) arrays)."""
    w = ~(np.isnan(x) | np.isnan(y))
    y = np.where(w, y, np.nan)
    x0 = np.where(w, x, 0.0)
    y0 = np.where(w, y, 0.0)
    x2 = x0 * x0
    return {
        "n": w.sum(axis=1).astype(np.float64),
        "x": x0.sum(axis=1),
        "x2": x2.sum(axis=1),
        "x3": (x2 * x0).sum(axis=1),
        "x4": (x2 * x2).sum(axis=1),
        "y": y0.sum(axis=1),
        "xy": (x0 * y0).sum(axis=1),
        "x2y": (x2 * y0).sum(axis=1),
        "y2": (y0 * y0).sum(axis=1),
        "step": _nanmedian(np.abs(np.diff(y, axis=1))),
        "lo": np.where(w, x, np.inf).min(axis=1),
        "hi": np.where(w, x, -np.inf).max(axis=1),
    }


def _z_moments(S: dict[str, Any], m: Any, sd: Any) -> dict[str, Any]:
    """Moments of z = (x - m) / sd (and of z with y) from raw moment sums."""
    n = S["n"]
    c1 = S["x"] - n * m
    c2 = S["x2"] - 2 * m * S["x"] + n * m**2
    c3 = S["x3"] - 3 * m * S["x2"] + 3 * m**2 * S["x"] - n * m**3
    c4 = S["x4"] - 4 * m * S["x3"] + 6 * m**2 * S["x2"] - 4 * m**3 * S["x"] + n * m**4
    cy1 = S["xy"] - m * S["y"]
    cy2 = S["x2y"] - 2 * m * S["xy"] + m**2 * S["y"]
    return {
        "z0": n,
        "z1": c1 / sd,
        "z2": c2 / sd**2,
        "z3": c3 / sd**3,
        "z4": c4 / sd**4,
        "y": S["y"],
        "zy": cy1 / sd,
        "z2y": cy2 / sd**2,
        "y2": S["y2"],
    }


def _fit(Z: dict[str, Any]) -> tuple[Any, Any]:
    """Least-squares quadratic y = b0 + b1 z + b2 z^2 from z moments: coefficients (..., 3) and
    the residual sum of squares."""
    A = np.stack(
        [
            np.stack([Z["z0"], Z["z1"], Z["z2"]], -1),
            np.stack([Z["z1"], Z["z2"], Z["z3"]], -1),
            np.stack([Z["z2"], Z["z3"], Z["z4"]], -1),
        ],
        -2,
    )
    B = np.stack([Z["y"], Z["zy"], Z["z2y"]], -1)
    ok = np.isfinite(A).all(axis=(-2, -1)) & np.isfinite(B).all(axis=-1)
    ok &= (
        np.abs(np.linalg.det(np.where(ok[..., None, None], A, np.eye(3))))
        > 1e-9 * np.maximum(Z["z0"], 1.0) ** 3
    )
    A = np.where(ok[..., None, None], A, np.eye(3))
    B = np.where(ok[..., None], B, 0.0)
    coef = np.linalg.solve(A, B[..., None])[..., 0]
    rss = Z["y2"] - (coef * B).sum(-1)
    coef[~ok] = np.nan
    return coef, np.where(ok, np.maximum(rss, 0.0), np.nan)


def _chunk_rss(coef: Any, Zc: dict[str, Any]) -> Any:
    """Residual sum of squares of a chunk (its z moments) under the model `coef`."""
    b0, b1, b2 = coef[..., 0], coef[..., 1], coef[..., 2]
    fit_y = b0 * Zc["y"] + b1 * Zc["zy"] + b2 * Zc["z2y"]
    quad = (
        b0 * b0 * Zc["z0"]
        + 2 * b0 * b1 * Zc["z1"]
        + (b1 * b1 + 2 * b0 * b2) * Zc["z2"]
        + 2 * b1 * b2 * Zc["z3"]
        + b2 * b2 * Zc["z4"]
    )
    return np.maximum(Zc["y2"] - 2 * fit_y + quad, 0.0)


def _pair_scores(X: Any, Y: Any, first: Any, s: DetectorSettings) -> Any:
    """|residual| / (threshold x RMS) per bucket of every pair's chunks, NaN where the pair
    gives no verdict. X, Y: (chunks, CHUNK_BUCKETS); `first`: per chunk row, the row of its
    pair's first chunk (windows never reach into another pair)."""
    H = s.relation_history_chunks
    S = _chunk_sums(X, Y)
    rows = np.arange(X.shape[0])
    # the window's chunks (the H before each), oldest first (a fixed order: the same sums in
    # any batch)
    lags = np.arange(H, 0, -1)
    src = rows[:, None] - lags[None, :]  # (chunks, H)
    inside = src >= first[:, None]
    src = np.where(inside, src, 0)

    def window(key: str, keep: Any) -> Any:
        v = np.where(keep, S[key][src], 0.0)
        total = v[:, 0].copy()
        for i in range(1, H):
            total += v[:, i]
        return total

    def fit(keep: Any) -> tuple[Any, Any, Any, Any, Any, Any]:
        """The window's fit over the chunks kept: its sums, count, mean and sd of x, the
        coefficients and the residual sum of squares."""
        W = {k: window(k, keep) for k in MOMENTS}
        n = W["n"]
        m = W["x"] / n
        sd = np.sqrt(np.maximum(W["x2"] / n - m * m, 0.0))
        return (W, n, m, sd, *_fit(_z_moments(W, m, sd)))

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        _, _, m, sd, coef, _ = fit(inside)
        # each window chunk's mean squared residual under the window's fit
        Sc = {k: S[k][src] for k in MOMENTS}
        Zc = _z_moments(Sc, m[:, None], sd[:, None])
        mse = _chunk_rss(coef[:, None, :], Zc) / Sc["n"]
        voting = inside & (Sc["n"] >= MIN_CHUNK_BUCKETS) & np.isfinite(mse)
        usual = _nanmedian(np.where(voting, mse, np.nan))
        keep = inside & ~(mse > BAD_CHUNK * usual[:, None])
        W, n, m, sd, coef, rss = fit(keep)
        rms = np.sqrt(rss / n)
        spread = np.sqrt(np.maximum(W["y2"] / n - (W["y"] / n) ** 2, 0.0))
        lo = np.where(keep, S["lo"][src], np.inf).min(axis=1)
        hi = np.where(keep, S["hi"][src], -np.inf).max(axis=1)
        margin = EXTRAPOLATE * (hi - lo)
        noise = _nanmedian(np.where(keep, S["step"][src], np.nan)) * MEDIAN_ABS_STEP_TO_SIGMA
        usable = (
            (n >= MIN_FIT_BUCKETS)
            & (sd > 1e-9 * np.maximum(np.abs(m), 1.0))
            & (
                (rms < GOOD_SHARE * spread)
                | ((rms < NOISE_FIT * noise) & (spread > NOISE_SPREAD * noise))
            )
            & np.isfinite(coef).all(axis=1)
        )
        rms = np.maximum(rms, 1e-6 * spread)
        z = (X - m[:, None]) / sd[:, None]
        predicted = coef[:, 0, None] + coef[:, 1, None] * z + coef[:, 2, None] * z * z
        score = np.abs(Y - predicted) / (s.relation_threshold * rms[:, None])
        known = (
            usable[:, None]
            & ((lo - margin)[:, None] <= X)
            & ((hi + margin)[:, None] >= X)
            & ~np.isnan(Y)
        )
    return np.where(known, score, np.nan)


def _raised(score: Any, consecutive: int) -> Any:
    """The score where `consecutive` buckets in a row (this one included) are broken, else 0
    (one series' buckets, dense: a missing bucket breaks the run)."""
    broken = np.nan_to_num(score, nan=0.0) > 1.0
    at = np.arange(score.size)
    run = at - np.maximum.accumulate(np.where(broken, -1, at))
    return np.where(run >= consecutive, score, 0.0)


class _Batch:
    """The pairs of a few machines, scored together (one vectorised pass)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.xs: list[Any] = []
        self.ys: list[Any] = []
        self.firsts: list[Any] = []
        self.pairs: list[tuple[int, int, int, int]] = []  # machine, j, k, first chunk row
        self.machines: list[tuple[Any, int, int]] = []  # ranks, first chunk, chunks
        self.rows = 0

    def add(self, ranks: Any, c0: int, grid: Any) -> None:
        """A machine's series: `grid` (series, chunks, CHUNK_BUCKETS) of bucket means."""
        chunks = grid.shape[1]
        for j in range(ranks.size):
            for k in range(ranks.size):
                if j != k:
                    self.ys.append(grid[j])
                    self.xs.append(grid[k])
                    self.firsts.append(np.full(chunks, self.rows))
                    self.pairs.append((len(self.machines), j, k, self.rows))
                    self.rows += chunks
        self.machines.append((ranks, c0, chunks))

    def flush(self, s: DetectorSettings, keys: list[Any], values: list[Any]) -> None:
        """Score the batch's pairs; append the raised buckets' keys (the next bucket: a verdict
        is given to the readings after a complete bucket) and scores."""
        if self.xs:
            pair = _pair_scores(
                np.concatenate(self.xs), np.concatenate(self.ys), np.concatenate(self.firsts), s
            )
            # A series' score is the smallest score of its relations (NaN where none judges):
            # it is suspect only when every relation it keeps is broken. A relation is judged
            # by predicting the series from the other metric, or, where that is not usable
            # (predicting a precise metric from a noisy one), the other metric from it: then
            # both are suspect.
            by_pair = {
                (m, j, k): pair[row : row + self.machines[m][2]].reshape(-1)
                for m, j, k, row in self.pairs
            }
            best: dict[tuple[int, int], Any] = {}
            for (m, j, k), score in by_pair.items():
                score = np.where(np.isnan(score), by_pair[(m, k, j)], score)
                have = best.get((m, j))
                best[(m, j)] = score if have is None else np.fmin(have, score)
            for (m, j), score in best.items():
                ranks, c0, _ = self.machines[m]
                raised = _raised(score, s.relation_consecutive)
                at = np.flatnonzero(raised > 0)
                if at.size:
                    keys.append(int(ranks[j]) * KEY_SHIFT + c0 * CHUNK_BUCKETS + at + 1)
                    values.append(raised[at])
        self.clear()


def scores(
    rank: Any,
    t_ms: Any,
    x: Any,
    machine_of_rank: Any,
    on: Any,
    s: DetectorSettings,
    prior: pl.DataFrame | None,
) -> Relation:
    """The relation score of every row (rows sorted by rank) and the buckets to carry."""
    bucket = np.floor_divide(t_ms, s.relation_bucket_seconds * 1000.0).astype(np.int64)
    rank = rank.astype(np.int64, copy=False)
    everywhere = bool(on.all())
    computed, starts, run_keys = bucket_means(
        rank, bucket, x if everywhere else np.where(on[rank], x, np.nan)
    )
    means = _merge(computed, prior)
    keep_from = carried_chunks(s)
    if means.height == 0:
        return Relation(np.zeros(rank.size), means)
    # the open (last) bucket of each series is not carried: its readings are in the context
    carried = means.filter(
        (pl.col("_bucket") < pl.col("_bucket").max().over("_rank"))
        & (
            pl.col("_bucket")
            >= (pl.col("_bucket").max().over("_rank") // CHUNK_BUCKETS - keep_from) * CHUNK_BUCKETS
        )
    )
    mean_rank = means["_rank"].to_numpy()
    mean_bucket = means["_bucket"].to_numpy()
    mean_value = means["_mean"].to_numpy()
    mean_machine = machine_of_rank[mean_rank]
    flagged_keys: list[Any] = []
    flagged_scores: list[Any] = []
    batch = _Batch()
    for machine in np.unique(mean_machine):
        sel = mean_machine == machine
        ranks_m = np.unique(mean_rank[sel])
        if ranks_m.size < 2:
            continue
        c0 = int(mean_bucket[sel].min()) // CHUNK_BUCKETS
        c1 = int(mean_bucket[sel].max()) // CHUNK_BUCKETS
        width = (c1 - c0 + 1) * CHUNK_BUCKETS
        dense = np.full((ranks_m.size, width), np.nan)
        dense[np.searchsorted(ranks_m, mean_rank[sel]), mean_bucket[sel] - c0 * CHUNK_BUCKETS] = (
            mean_value[sel]
        )
        batch.add(ranks_m, c0, dense.reshape(ranks_m.size, width // CHUNK_BUCKETS, CHUNK_BUCKETS))
        if batch.rows >= BATCH_CHUNK_ROWS:  # memory stays bounded on a long input
            batch.flush(s, flagged_keys, flagged_scores)
    batch.flush(s, flagged_keys, flagged_scores)
    row_score = np.zeros(rank.size)
    if flagged_keys:
        keys = np.concatenate(flagged_keys)
        values = np.concatenate(flagged_scores)
        order = np.argsort(keys)
        keys, values = keys[order], values[order]
        at = np.clip(np.searchsorted(keys, run_keys), 0, keys.size - 1)
        per_run = np.where(keys[at] == run_keys, values[at], 0.0)
        row_score = np.repeat(per_run, np.diff(np.r_[starts, rank.size]))
        if not everywhere:
            row_score[~on[rank]] = 0.0
    return Relation(row_score, carried)
