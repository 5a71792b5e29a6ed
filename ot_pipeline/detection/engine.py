"""One vectorised pass of every detector over a frame of readings; see docs/detection.md.

Series are (machine_id, metric), in device order (seq when every reading has one, else event
time). Rows sharing one `DetectorSettings` are processed together (windows are constants of the
pass): one sort puts every settings group in one contiguous slice, slices of whole series are
scored alone, and the codes go back to input order by one scatter. Never a loop per row.

Every statistic a decision uses comes from the series' *earlier* readings (short rolling windows
ending at the reading, histories of completed blocks shifted by one block), so a flag depends
only on that reading and the ones before it: the batch pipeline, a replay and a live stream agree.

Where each part lives: `series` (the row arrays of a slice), `blocks` (block statistics: level,
noise, flat share, histories), `regime` (stops, settling), `envelope` (normal operation), one
module per detector family (`stuck`, `gap`, `limits`, `level` with `rate_of_change`, `spike`,
`drift`, `ramp`, `regime`), and `combiner` (scores -> score, detector, severity).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection import (
    drift,
    envelope,
    gap,
    level,
    limits,
    multivariate,
    ramp,
    regime,
    relation,
    spike,
    stuck,
)
from ot_pipeline.detection.blocks import (
    block_history,
    block_layout,
    block_statistics,
    resumed_history,
    running_block_medians,
)
from ot_pipeline.detection.combiner import (
    CODED_SCHEMA,
    DETECTORS,
    SEVERITIES,
    Combiner,
    named,
)
from ot_pipeline.detection.config import DetectionConfig, DetectorSettings
from ot_pipeline.detection.resume import DetectorState, RankState, supported
from ot_pipeline.detection.series import series_rows

__all__ = [
    "CODED_SCHEMA",
    "DETECTORS",
    "SEVERITIES",
    "detect",
    "detect_resumed",
    "named",
    "score_codes",
]

KEY = ["machine_id", "metric"]
SLICE_ROWS = 1 << 20  # rows (whole series) scored together: Polars' temporaries stay reusable


def _series_slices(rows: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    """Rows (sorted by series) cut into slices of whole series, about `size` rows each.

    Every detector works within a series, so slices are scored alone with the same result;
    each Polars temporary of a small slice is memory the allocator hands out again, where one
    of a huge frame is fresh memory, page-faulted in 4 KiB pages, every time.
    """
    if rows.height <= size:
        return [rows]
    codes = rows["_code"].to_numpy()
    firsts = np.flatnonzero(codes[1:] != codes[:-1]) + 1  # where a series begins (not the 1st)
    at = np.searchsorted(firsts, np.arange(size, rows.height, size))  # next one past each size
    cuts = np.unique(firsts[at[at < firsts.size]])
    bounds = [0, *cuts.tolist(), rows.height]
    return [rows.slice(a, b - a) for a, b in itertools.pairwise(bounds) if b > a]


def _detect_group(
    rows: pl.DataFrame,
    s: DetectorSettings,
    use_seq: bool,
    flag_stops: bool,
    input_times: Callable[[], Any] | None = None,
    state: RankState | None = None,
) -> pl.DataFrame:
    """All detectors for the series of one settings group; rows sorted by series and order.

    Row-level work is numpy on whole-slice arrays (nulls travel as NaN, which no comparison
    passes, as no null does); per-block statistics are Polars over the (small) block frames. A
    figure constant within a block is computed once per block and taken onto the rows.
    """
    series = series_rows(rows, state.resume_of(rows, s) if state is not None else None)
    resume = series.resume
    runs = series.runs
    flat = stuck.flat_steps(series.step, s)
    layout = block_layout(series.n, series.sid, s.block_samples)
    block = layout.block
    gap_missing = gap.missing_readings(rows, series, layout, s, use_seq)

    # Long-term statistics, stage 1 (raw block medians): running level, noise, flat share.
    stats = block_statistics(series.xv, flat, layout, s, resume)
    sigma_b = stats.sigma_b
    sigma = sigma_b[block]

    def times() -> Any:  # epoch ms of the slice's rows (only asked for when needed)
        if "_t" in rows.columns:
            return rows["_t"].fill_null(strategy="forward").fill_null(0.0).to_numpy()
        assert input_times is not None
        return input_times()[rows["_row"].to_numpy()]

    regimes = regime.regimes(
        series, stats, block, s, times if ("_t" in rows.columns or input_times) else None
    )

    # Stage 2 (block medians of running readings only): envelope of normal operation, trend.
    def stage2(blocks2: pl.DataFrame) -> pl.DataFrame:
        blocks2 = block_history(
            blocks2, {**envelope.quantile_columns(s), **drift.consistency_columns(s)}
        )
        blocks2 = drift.with_change(
            blocks2.with_columns(**drift.trend_columns(s), **ramp.move_columns(s)), s
        )
        return block_history(
            blocks2,
            {**drift.history_columns(s), **ramp.history_columns(s), **envelope.shifted_columns()},
        )

    blocks2 = resumed_history(running_block_medians(regimes.xr, layout, s), layout, resume, stage2)
    if s.envelope_freeze_passes:
        blocks2 = envelope.frozen(blocks2, stats.frame, s)
    q_lo, q_hi = blocks2["_q_lo"].to_numpy(), blocks2["_q_hi"].to_numpy()

    judge_settled = regime.settled(series, regimes, s)
    excess = envelope.excess(
        regimes.xr, q_lo, q_hi, sigma_b, block, regimes.stopping, judge_settled, s
    )
    breach = excess > 0

    # The combiner folds the detectors in DETECTORS order: the highest score wins; the first
    # detector holding it is named. Level, limits, rate of change and drift skip stopped
    # readings (they compare with the running envelope); spikes, stuck values, gaps and the
    # relation are judged in every regime.
    combiner = Combiner(series.size)
    combiner.first(
        "stuck",
        *stuck.scores(
            flat,
            stats.frame["_flat_share"].to_numpy(),
            block,
            regimes.ready,
            regimes.stopped,
            series.xv,
            runs,
            s,
        ),
    )
    gap_score = gap.scores(gap_missing, series.n)
    if gap_score is not None:
        combiner.add("gap", gap_score)
        del gap_score
    if limits.configured(s):
        combiner.add("limits", limits.scores(series.x, regimes.judge, runs, s))
    combiner.add("level", level.scores(excess, breach, runs, s))
    del excess
    combiner.add(
        "spike", spike.scores(s, series.xv, sigma, regimes.ready, series.n, layout, resume)
    )
    combiner.add(
        "rate_of_change",
        level.rate_of_change_scores(series.step, sigma_b, block, breach, gap_missing, s),
    )
    combiner.add(
        "drift", drift.scores(blocks2, regimes.xr, sigma_b, q_lo, q_hi, block, judge_settled, s)
    )
    combiner.add("ramp", ramp.scores(blocks2, sigma_b, block, judge_settled, s))
    if "_mv" in rows.columns:  # computed per machine before the settings groups were cut
        combiner.add("multivariate", np.where(regimes.stopped, 0.0, rows["_mv"].to_numpy()))
    if flag_stops:
        combiner.add("regime", regime.scores(regimes.stopped, series.first))
    if "_rel" in rows.columns:  # computed per machine before the settings groups were cut
        # In every regime: a machine idling at its lowest speed is "stopped" to each series'
        # regime, yet its metrics keep their relations (where the fit has seen them: its range
        # guard), and a drift there is seen by nothing else.
        combiner.add("relation", rows["_rel"].to_numpy())
    coded = combiner.coded(series.suppressed, runs, s)
    if state is not None and resume is not None:
        state.collect(resume, rows, series.n)
    return coded


def _machine_wide(
    pairs: pl.DataFrame, width: int | None, on: Any, distinct: list[DetectorSettings]
) -> tuple[Any, DetectorSettings]:
    """For a detector across a machine's series: the machine of every series rank (`width`
    None: one machine, the value columns of a recording) and the settings it runs with (those
    of the first series with it `on`)."""
    codes = pairs["_code"].to_numpy()
    machine = codes // width if width is not None else np.zeros_like(codes)
    return machine, distinct[int(pairs["_group"][int(np.flatnonzero(on)[0])])]


def _with_multivariate(
    base: pl.DataFrame,
    pairs: pl.DataFrame,
    width: int | None,
    on: Any,
    distinct: list[DetectorSettings],
    use_seq: bool,
    input_times: Callable[[], Any],
) -> pl.DataFrame:
    """`_mv`, the multivariate score of every (sorted) row: per machine, across its series.

    Rows are sorted by series rank (the row of `pairs`), each series contiguous in time order.
    """
    ranks = base["_code"].to_numpy()
    length = np.bincount(ranks, minlength=pairs.height)
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    machine, settings = _machine_wide(pairs, width, on, distinct)
    times = (
        input_times()[base["_row"].to_numpy()]
        if use_seq
        else base["_t"].fill_null(strategy="forward").fill_null(0.0).to_numpy()
    )
    mv = multivariate.scores(
        machine, start, length, times, base["_x"].to_numpy(), on & (length > 0), settings
    )
    return base.with_columns(_mv=pl.Series(mv))


def _with_relation(
    base: pl.DataFrame,
    pairs: pl.DataFrame,
    width: int | None,
    on: Any,
    distinct: list[DetectorSettings],
    ranked_state: RankState | None,
) -> pl.DataFrame:
    """`_rel`, the relation score of every (sorted) row: per machine, across its series."""
    machine, settings = _machine_wide(pairs, width, on, distinct)
    t = base["_t"]
    times = t.fill_null(strategy="forward").fill_null(0.0).to_numpy()
    # a reading without a time has no bucket (nor one of a suppressed status)
    x = np.where(
        base["_suppressed"].to_numpy() | t.is_null().to_numpy(), np.nan, base["_x"].to_numpy()
    )
    found = relation.scores(
        base["_code"].to_numpy(),
        times,
        x,
        machine,
        on,
        settings,
        ranked_state.buckets if ranked_state is not None else None,
    )
    if ranked_state is not None:
        ranked_state.relation_carried = found.carried
    return base.with_columns(_rel=pl.Series(found.row_score))


def _epoch_ms(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        return column.dt.epoch("ms").cast(pl.Float64)
    if isinstance(dtype, pl.Date):
        return column.cast(pl.Datetime("ms")).dt.epoch("ms").cast(pl.Float64)
    return column.cast(pl.Float64)


def detect(readings: pl.DataFrame, config: DetectionConfig | None = None) -> pl.DataFrame:
    """Score every reading: the input rows (same order) plus score, is_anomaly, severity, detector.

    Needs machine_id, metric, ts, value; seq and status_code are used when present (seq jumps are
    data gaps; suppressed status codes, by default 3 = maintenance, are never anomalies).
    """
    config = config or DetectionConfig()
    missing = {"machine_id", "metric", "ts", "value"} - set(readings.columns)
    if missing:
        raise ValueError(f"detect: readings lack column(s) {sorted(missing)}")
    coded = score_codes(readings, config)
    added = coded.select(
        "score",
        "is_anomaly",
        severity=named(coded["_severity"], pl.Series(SEVERITIES)),
        detector=named(coded["_detector"], pl.Series(DETECTORS)),
    )
    # hstack keeps the caller's columns as they are (a select after a concat would rechunk them)
    return readings.hstack(added.get_columns())


def detect_resumed(
    readings: pl.DataFrame, state: DetectorState | None, config: DetectionConfig | None = None
) -> tuple[pl.DataFrame, DetectorState | None]:
    """`detect` continuing from `state` (what the previous batch left; None: the series start
    here), and the state after these readings. Batches resumed in order flag exactly what one
    `detect` over all their readings flags (ot_pipeline/detection/resume.py)."""
    config = config or DetectionConfig()
    missing = {"machine_id", "metric", "ts", "value"} - set(readings.columns)
    if missing:
        raise ValueError(f"detect: readings lack column(s) {sorted(missing)}")
    if readings.height == 0:
        return detect(readings, config), state
    columns = [
        c
        for c in ("machine_id", "metric", "ts", "value", "seq", "status_code")
        if c in readings.columns
    ]
    frame = readings.select(columns)
    context = 0
    if state is not None and state.rows.height:
        rows = state.rows.select(columns).cast(dict(frame.schema))  # type: ignore[arg-type]
        context = rows.height
        frame = pl.concat([rows, frame], how="vertical")
    out: list[DetectorState] = []
    coded = score_codes(frame, config, state=state, resumed=out).slice(context)
    added = coded.select(
        "score",
        "is_anomaly",
        severity=named(coded["_severity"], pl.Series(SEVERITIES)),
        detector=named(coded["_detector"], pl.Series(DETECTORS)),
    )
    return readings.hstack(added.get_columns()), out[0]


def score_codes(
    readings: pl.DataFrame,
    config: DetectionConfig,
    *,
    one_machine: bool = False,
    state: DetectorState | None = None,
    resumed: list[DetectorState] | None = None,
) -> pl.DataFrame:
    """`detect` without the names: score, is_anomaly, and severity and detector as Int8 codes
    (-1 for none; `named` turns them into strings), one row per input row, in input order. For
    a caller that reorders the rows first: gathering codes is cheaper than strings.

    `one_machine`: every series is a channel of one machine for the multivariate detector (the
    value columns of a recording, each its own `machine_id` for the config), instead of the
    series of each `machine_id`.

    `resumed`: a list that receives the state after these readings (`detect_resumed`), which
    `state` (the state before them; its context rows must lead `readings`) continues.
    """
    if readings.height == 0:
        return pl.DataFrame(schema=CODED_SCHEMA)
    use_seq = "seq" in readings.columns and readings["seq"].null_count() == 0
    # A device that reports its state (status codes) announces planned stops itself; without
    # status, the transition into a stopped regime is flagged once, LOW.
    flag_stops = "status_code" not in readings.columns
    status = (
        pl.col("status_code").is_in(list(config.suppress_status_codes)).fill_null(False)
        if "status_code" in readings.columns
        else pl.lit(False)
    )
    value = pl.col("value").cast(pl.Float64)
    # Only the columns the detectors need travel through the sort (strings are costly to move).
    base = readings.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"),
        *KEY,
        *(["seq"] if use_seq else []),
        _x=pl.when(value.is_finite()).then(value),
        _t=_epoch_ms(pl.col("ts"), readings.schema["ts"]),
        _suppressed=status,
    )
    # Integer series codes: sorting and grouping on them is far cheaper than on the strings.
    # (an Enum already is one: its physical codes are small and dense)
    codes = [
        pl.col(c).to_physical().cast(pl.Int64)
        if isinstance(readings.schema[c], pl.Enum)
        else pl.col(c).cast(pl.String).cast(pl.Categorical).to_physical().cast(pl.Int64)
        for c in KEY
    ]
    base = base.with_columns(_metric_code=codes[1])
    width = int(base.select(pl.col("_metric_code").max().fill_null(0)).item()) + 1
    base = base.with_columns(_code=codes[0] * width + pl.col("_metric_code"))
    pairs = base.group_by("_code").agg(pl.col(KEY[0]).first(), pl.col(KEY[1]).first())
    settings_of = [
        config.settings_for(machine, metric) for machine, metric in pairs.select(KEY).iter_rows()
    ]
    distinct = list(dict.fromkeys(settings_of))
    # Series are numbered by (settings group, code): after one sort every group is one slice.
    pairs = pairs.with_columns(
        _group=pl.Series([distinct.index(s) for s in settings_of], dtype=pl.Int64)
    ).sort("_group", "_code")
    rank_of = dict(zip(pairs["_code"].to_list(), range(pairs.height), strict=True))
    codes_in = base["_code"]
    if codes_in.null_count() == 0:  # codes are small and dense: a lookup table, not a hash map
        lookup = np.zeros(int(pairs["_code"].max()) + 1, dtype=np.int64)  # type: ignore[arg-type]
        lookup[pairs["_code"].to_numpy()] = np.arange(pairs.height)
        ranked = pl.lit(pl.Series("_code", lookup[codes_in.to_numpy()]))
    else:
        ranked = pl.col("_code").replace_strict(rank_of, return_dtype=pl.Int64)
    related = np.array([distinct[g].relation for g in pairs["_group"].to_list()], dtype=bool)
    base = base.select(
        "_row",
        *(["seq"] if use_seq else []),
        *(["_t"] if related.any() or not use_seq else []),
        "_x",
        "_suppressed",
        _code=ranked,
    )
    within = pl.col("seq") if use_seq else pl.col("_t").cast(pl.Int64)
    spans = base.select(
        low=within.min().fill_null(0), high=within.max().fill_null(0), top=pl.col("_code").max()
    ).cast(pl.Int64)
    low, high, top = (int(spans[c].item()) for c in ("low", "high", "top"))
    span = high - low + 1
    in_order = False
    if span * (top + 1) < 2**62:  # one integer key sorts far faster than two columns
        key = pl.col("_code") * span + (within - low).fill_null(0)
        # a recording's readings often come in order already: a stable sort would not move them
        in_order = base.select(key).to_series().is_sorted()
        if not in_order:
            base = base.sort(key, maintain_order=True)
    else:
        base = base.sort(["_code", within], maintain_order=True)
    cache: list[Any] = []

    def input_times() -> Any:  # epoch ms in input order, computed once when a stop is judged
        if not cache:
            t = readings.select(_epoch_ms(pl.col("ts"), readings.schema["ts"]))
            cache.append(t.to_series().fill_null(strategy="forward").fill_null(0.0).to_numpy())
        return cache[0]

    on = np.array([distinct[g].multivariate for g in pairs["_group"].to_list()], dtype=bool)
    if on.any():
        base = _with_multivariate(
            base, pairs, width if not one_machine else None, on, distinct, use_seq, input_times
        )
    ranked_state: RankState | None = None
    if resumed is not None:
        for settings in distinct:
            supported(settings)
        slots = max(d.alarm_budget for d in distinct) + 1
        ranked_state = RankState(state, pairs.select(*KEY), slots)
    if related.any():
        base = _with_relation(
            base, pairs, width if not one_machine else None, related, distinct, ranked_state
        )
    group_of_code = pairs["_group"].to_numpy()
    lengths = np.bincount(group_of_code[base["_code"].to_numpy()], minlength=len(distinct))
    parts = []
    offset = 0
    for group, length in enumerate(lengths.tolist()):
        if length == 0:
            continue
        part = base.slice(offset, length)
        offset += length
        for piece in _series_slices(part, SLICE_ROWS):
            parts.append(
                _detect_group(
                    piece, distinct[group], use_seq, flag_stops, input_times, ranked_state
                )
            )
    combined = pl.concat(parts)
    # Back to input order: the inverse of the sort permutation, by one scatter.
    if in_order:
        coded = combined
    else:
        order = base["_row"].to_numpy()
        inverse = np.empty(order.size, dtype=np.int64)
        inverse[order] = np.arange(order.size)
        coded = combined.gather(inverse)
    if ranked_state is not None and resumed is not None:
        resumed.append(ranked_state.result(readings))
    return coded
