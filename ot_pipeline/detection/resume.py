"""Detector state carried from one batch to the next: hourly runs that equal one continuous run.

Every decision of the engine depends on the series' earlier readings through three kinds of
memory, and a state holds each of them at a *checkpoint* P of every series (a block boundary,
P readings into the series):

- the raw inputs of the block statistics (`BLOCK_COLUMNS`) of the last blocks before P, enough
  for every rolling window over blocks (`prior_blocks`): the next batch prepends them, so block
  histories (level, noise, envelope, trend, usual sizes) are rolled exactly as in one run;
- the readings from P - CONTEXT_READINGS on (the *context*: short windows over readings, such as
  a spike's level before it, a step, the gap detector's stride, look back into it), judged again
  only from P on;
- at P - 1, the row state that reaches further back: the length of every run (flat, breached,
  stopped, alarm, quiet ...), the distance to the last quiet stretch, level raise and release,
  the highest severity of the alarm in progress, and the alarm budget's last onsets and the mute
  of the episode in progress (`Runs`, `Combiner`).

A batch resumed from a state therefore flags exactly what one run over all the readings would
(tested flag for flag on simulated readings with faults); a state is a few hundred bytes per
series plus its block history (`prior_blocks` rows of 7 floats).

The relation detector (relation.py) carries the bucket means of its window (`buckets`).

Not carried: the multivariate detector and the envelope freeze (off for the fleet; `detect`
refuses a state with either on), and the daily profile of stops, which looks back whole days of
readings (a resumed batch sees only its context: see docs/detection.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ot_pipeline.detection.config import DetectorSettings

NONE = 1 << 40  # "no such event yet": farther back than any window
CONTEXT_BLOCKS = 5  # readings judged again only for the windows that look back into them
BLOCK_COLUMNS = ("_bmed", "_bstep", "_bflat", "_bmed_r", "_spike")
# Row state at P - 1 (a run length, or a distance: NONE = never), see the module docstring.
RUN_CARRIES = ("flat", "going_down", "stopped", "breach", "release", "limit", "alarm", "calm")
SINCE_CARRIES = ("quiet", "raise", "released")
ROW_COLUMNS = ("ts", "value", "seq", "status_code")
KEY = ("machine_id", "metric")
BUCKET_SCHEMA = {
    "machine_id": pl.String,
    "metric": pl.String,
    "_bucket": pl.Int64,
    "_mean": pl.Float64,
}


def context_readings(s: DetectorSettings) -> int:
    return CONTEXT_BLOCKS * s.block_samples


def prior_blocks(s: DetectorSettings) -> int:
    """Blocks before the checkpoint every block history needs: the longest window (the
    envelope's and the usual sizes' `history_blocks`) over statistics that look back
    `drift_blocks` and a few more blocks themselves."""
    return s.history_blocks + 2 * s.drift_blocks + s.ramp_blocks + 16


def supported(s: DetectorSettings) -> None:
    if s.multivariate or s.envelope_freeze_passes:
        raise ValueError(
            "detect with a state: the multivariate detector and the envelope freeze keep no "
            "state; turn them off (multivariate: false, envelope_freeze_passes: 0)"
        )


@dataclass
class Resume:
    """The state of the series of one slice (arrays per series, `sid` order) and what the slice
    leaves for the next batch (`out`, `out_blocks`, at the new checkpoint P')."""

    sid: Any  # per row: series number in the slice
    start: Any  # per row: the row of its series' first reading in the slice
    n0: Any  # per series: position (readings into the series) of its first row in the slice
    live_from: Any  # per series: the checkpoint P; earlier rows are context
    length: Any  # per series: rows in the slice
    carries: dict[str, Any]  # per series, at P - 1
    onsets: Any  # (series, budget + 1): positions of the last alarm onsets before P (-NONE)
    muted: Any  # per series: the alarm episode in progress at P - 1 is muted
    prior: pl.DataFrame  # _sid, _gb (global block number), BLOCK_COLUMNS: blocks before P
    seen: Any  # per series: readings the previous batches judged (later ones are new here)
    prior_bins: pl.DataFrame  # _sid, _bin, _sum, _count: the daily profile's bins so far
    s: DetectorSettings
    ranks: Any = None  # per series: its rank in the batch (`RankState`)
    out: dict[str, Any] = field(default_factory=dict)
    out_blocks: dict[str, pl.DataFrame] = field(default_factory=dict)
    out_bins: pl.DataFrame | None = None

    def __post_init__(self) -> None:
        bs = self.s.block_samples
        self.first_row = np.flatnonzero(np.r_[True, self.sid[1:] != self.sid[:-1]])
        self.live_row = self.first_row + (self.live_from - self.n0)  # per series: row of P
        self.live = np.arange(self.sid.size) >= self.live_row[self.sid]
        n_end = self.n0 + self.length
        self.checkpoint = n_end // bs * bs  # P': the last block boundary
        self.checkpoint = np.maximum(self.checkpoint, self.live_from)
        # the row of P' - 1, or -1 when P' = P (nothing new: the carries stay what they were)
        self.end_row = np.where(
            self.checkpoint > self.live_from,
            self.first_row + (self.checkpoint - self.n0) - 1,
            -1,
        )

    def carry(self, name: str, default: int) -> Any:
        return self.carries.get(name, np.full(self.n0.size, default, dtype=np.int64))

    def record(self, name: str, values: Any, default: int) -> None:
        """Values at P' - 1 (the carry in where the slice brought nothing new)."""
        has = self.end_row >= 0
        kept = self.carry(name, default).copy()
        kept[has] = values[self.end_row[has]]
        self.out[name] = kept

    def record_bins(self, bins: pl.DataFrame, keep: int) -> None:
        """The profile's bins of the last `keep` bins of each series, for the next batch."""
        self.out_bins = bins.filter(pl.col("_bin") > pl.col("_bin").max().over("_sid") - keep)

    # -- block histories --------------------------------------------------------------------
    def block_numbers(self, layout_sid: Any, block_first_rows: Any) -> Any:
        """Global block number of every block of the slice."""
        n = self.n0[layout_sid] + (block_first_rows - self.first_row[layout_sid])
        return n // self.s.block_samples

    def extend(self, blocks: pl.DataFrame, gb: Any, columns: list[str]) -> pl.DataFrame:
        """The slice's blocks (`_sid` and the raw `columns`) from P on, after the prior blocks of
        their series, which stand for the context's blocks too (a context block lacks the
        reading before it); sorted by series and block, with `_gb`, the global block number."""
        live_block = self.live_from // self.s.block_samples
        sid = blocks["_sid"].to_numpy()
        frame = blocks.select("_sid", *columns).with_columns(_gb=pl.Series(gb, dtype=pl.Int64))
        frame = frame.filter(pl.Series(gb >= live_block[sid]))
        prior = self.prior.select(pl.col("_sid").cast(frame.schema["_sid"]), "_gb", *columns)
        return pl.concat(
            [prior, frame.select("_sid", "_gb", *columns)], how="vertical_relaxed"
        ).sort("_sid", "_gb", maintain_order=True)

    def trim(self, blocks: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
        """The extended blocks back to the slice's own (its context blocks included), keeping
        the raw columns of the blocks before P' for the next batch."""
        bs = self.s.block_samples
        gb, sid = blocks["_gb"].to_numpy(), blocks["_sid"].to_numpy()
        before = (gb < (self.checkpoint // bs)[sid]) & (
            gb >= (self.checkpoint // bs)[sid] - prior_blocks(self.s)
        )
        self.out_blocks[",".join(columns)] = blocks.filter(pl.Series(before)).select(
            "_sid", "_gb", *columns
        )
        own = gb >= (self.n0 // bs)[sid]
        return blocks.filter(pl.Series(own)).drop("_gb")


@dataclass(frozen=True)
class DetectorState:
    """What `detect_resumed` leaves for the next batch: `series` (one row per series: KEY,
    `n0` the position of its first context reading, `live_from` the checkpoint P, the carries,
    `onsets`, `muted`, `seen`), `blocks` (KEY, `_gb`, BLOCK_COLUMNS: the blocks before P),
    `rows` (KEY, ROW_COLUMNS: the readings from `n0` on, in series order) and `bins` (KEY,
    `_bin`, `_sum`, `_count`: the daily profile's last PROFILE_DAYS days) and `buckets` (KEY,
    `_bucket`, `_mean`: the relation detector's completed buckets of its window)."""

    series: pl.DataFrame
    blocks: pl.DataFrame
    rows: pl.DataFrame
    bins: pl.DataFrame
    buckets: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=BUCKET_SCHEMA))

    def to_frame(self) -> pl.DataFrame:
        """One frame (one row per series, blocks and rows nested) for one file."""
        blocks = self.blocks.group_by(KEY, maintain_order=True).agg(
            pl.struct(pl.exclude(KEY)).alias("blocks")
        )
        rows = self.rows.group_by(KEY, maintain_order=True).agg(
            pl.struct(pl.exclude(KEY)).alias("rows")
        )
        bins = self.bins.group_by(KEY, maintain_order=True).agg(
            pl.struct(pl.exclude(KEY)).alias("bins")
        )
        buckets = self.buckets.group_by(KEY, maintain_order=True).agg(
            pl.struct(pl.exclude(KEY)).alias("buckets")
        )
        return (
            self.series.join(blocks, on=list(KEY), how="left")
            .join(rows, on=list(KEY), how="left")
            .join(bins, on=list(KEY), how="left")
            .join(buckets, on=list(KEY), how="left")
        )

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> DetectorState:
        def nested(column: str) -> pl.DataFrame:
            return frame.select(*KEY, column).explode(column).drop_nulls(column).unnest(column)

        nests = [c for c in ("blocks", "rows", "bins", "buckets") if c in frame.columns]
        return cls(
            series=frame.drop(nests),
            blocks=nested("blocks"),
            rows=nested("rows"),
            bins=nested("bins"),
            # a state written before the relation detector has no buckets: it learns again
            buckets=nested("buckets")
            if "buckets" in frame.columns
            else pl.DataFrame(schema=BUCKET_SCHEMA),
        )


class RankState:
    """A `DetectorState` laid out by the engine's series ranks (`pairs`: KEY per rank), and the
    collector of what every slice leaves for the next batch."""

    def __init__(self, state: DetectorState | None, pairs: pl.DataFrame, budget_slots: int):
        ranks = pairs.height
        self.pairs = pairs
        self.slots = budget_slots
        self.n0 = np.zeros(ranks, dtype=np.int64)
        self.live_from = np.zeros(ranks, dtype=np.int64)
        self.carries: dict[str, Any] = {}
        self.onsets = np.full((ranks, budget_slots), -NONE, dtype=np.int64)
        self.muted = np.zeros(ranks, dtype=bool)
        self.prior = pl.DataFrame(
            schema={"_rank": pl.Int64, "_gb": pl.Int64, **dict.fromkeys(BLOCK_COLUMNS, pl.Float64)}
        )
        self.seen = np.zeros(ranks, dtype=np.int64)
        self.bins = pl.DataFrame(
            schema={"_rank": pl.Int64, "_bin": pl.Int64, "_sum": pl.Float64, "_count": pl.Int64}
        )
        self.buckets = pl.DataFrame(
            schema={"_rank": pl.Int64, "_bucket": pl.Int64, "_mean": pl.Float64}
        )
        self.relation_carried: pl.DataFrame | None = None  # what the relation detector keeps
        self.known = np.zeros(ranks, dtype=bool)
        self.carried_over: pl.DataFrame | None = None  # series of the state not in this batch
        ranked = pairs.select(*KEY).with_columns(_rank=pl.int_range(pl.len(), dtype=pl.Int64))
        if state is not None and state.series.height:
            on = state.series.join(ranked, on=list(KEY), how="inner")
            at = on["_rank"].to_numpy()
            self.known[at] = True
            self.n0[at] = on["n0"].to_numpy()
            self.live_from[at] = on["live_from"].to_numpy()
            for name in (*RUN_CARRIES, *SINCE_CARRIES, "alarm_step"):
                default = NONE if name in SINCE_CARRIES else 0
                values = np.full(ranks, default, dtype=np.int64)
                values[at] = on[name].to_numpy()
                self.carries[name] = values
            for i, qs in zip(at.tolist(), on["onsets"].to_list(), strict=True):
                qs = list(qs)[-budget_slots:]  # the most recent (the budget may have changed)
                if qs:
                    self.onsets[i, budget_slots - len(qs) :] = qs
            self.muted[at] = on["muted"].to_numpy()
            self.seen[at] = on["seen"].to_numpy()
            self.bins = (
                state.bins.join(ranked, on=list(KEY), how="inner")
                .select("_rank", "_bin", "_sum", "_count")
                .cast({"_bin": pl.Int64, "_sum": pl.Float64, "_count": pl.Int64})
            )
            self.prior = (
                state.blocks.join(ranked, on=list(KEY), how="inner")
                .select("_rank", "_gb", *BLOCK_COLUMNS)
                .cast({c: pl.Float64 for c in BLOCK_COLUMNS})
            )
            self.buckets = (
                state.buckets.join(ranked, on=list(KEY), how="inner")
                .select("_rank", "_bucket", "_mean")
                .cast({"_rank": pl.Int64, "_bucket": pl.Int64, "_mean": pl.Float64})
            )
            self.carried_over = state.series.join(ranked, on=list(KEY), how="anti")
        self.state = state
        self._series: list[pl.DataFrame] = []
        self._blocks: list[pl.DataFrame] = []
        self._rows: list[Any] = []
        self._bins: list[pl.DataFrame] = []

    def resume_of(self, rows: pl.DataFrame, s: DetectorSettings) -> Any:
        """The factory `series_rows` calls with the slice's series numbers and starts."""
        codes = rows["_code"].to_numpy()

        def make(sid: Any, start: Any) -> Resume:
            first = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
            ranks = codes[first].astype(np.int64)
            length = np.diff(np.r_[first, sid.size])
            lookup = pl.DataFrame({"_rank": ranks, "_sid": np.arange(ranks.size, dtype=np.int64)})
            prior = self.prior.join(lookup, on="_rank", how="inner").drop("_rank")
            bins = self.bins.join(lookup, on="_rank", how="inner").drop("_rank")
            resume = Resume(
                sid=sid.astype(np.int64),
                start=start,
                n0=self.n0[ranks],
                live_from=self.live_from[ranks],
                length=length,
                carries={k: v[ranks] for k, v in self.carries.items()},
                onsets=self.onsets[ranks],
                muted=self.muted[ranks],
                prior=prior,
                seen=self.seen[ranks],
                prior_bins=bins.select("_sid", "_bin", "_sum", "_count"),
                s=s,
                ranks=ranks,
            )
            return resume

        return make

    def collect(self, resume: Resume, rows: pl.DataFrame, n: Any) -> None:
        """What the slice leaves: carries at P', blocks before P', and the input rows of the
        next context (from P' - CONTEXT_READINGS on)."""
        s = resume.s
        ranks = resume.ranks
        nxt = np.maximum(resume.checkpoint - context_readings(s), 0)
        series = {
            "_rank": ranks,
            "n0": nxt,
            "live_from": resume.checkpoint,
            "muted": resume.out.get("muted", resume.muted),
            "onsets": resume.out.get("onsets", resume.onsets).tolist(),
            "seen": resume.n0 + resume.length,
        }
        for name in (*RUN_CARRIES, *SINCE_CARRIES, "alarm_step"):
            default = NONE if name in SINCE_CARRIES else 0
            series[name] = resume.out.get(name, resume.carry(name, default))
        self._series.append(pl.DataFrame(series))
        frames = [
            f.with_columns(
                pl.col(c).cast(pl.Float64) for c in f.columns if c not in ("_sid", "_gb")
            )
            for f in resume.out_blocks.values()
        ]
        if frames:
            merged = frames[0]
            for f in frames[1:]:
                merged = merged.join(f, on=["_sid", "_gb"], how="full", coalesce=True)
            for c in BLOCK_COLUMNS:
                if c not in merged.columns:
                    merged = merged.with_columns(pl.lit(None, dtype=pl.Float64).alias(c))
            rank = ranks[merged["_sid"].cast(pl.Int64).to_numpy()]
            self._blocks.append(
                merged.with_columns(_rank=pl.Series(rank, dtype=pl.Int64)).select(
                    "_rank", "_gb", *BLOCK_COLUMNS
                )
            )
        bins = resume.out_bins if resume.out_bins is not None else resume.prior_bins
        self._bins.append(
            bins.with_columns(
                _rank=pl.Series(ranks)[bins["_sid"].cast(pl.Int64)].alias("_rank")
                if bins.height
                else pl.lit(None, dtype=pl.Int64)
            ).select("_rank", "_bin", "_sum", "_count")
        )
        keep = n >= nxt[resume.sid]
        self._rows.append(rows["_row"].to_numpy()[keep])

    def result(self, readings: pl.DataFrame) -> DetectorState:
        """The state after this batch (`readings`: the batch's input, context rows first)."""
        keys = self.pairs.select(*KEY).with_columns(_rank=pl.int_range(pl.len(), dtype=pl.Int64))
        series = pl.concat(self._series).join(keys, on="_rank").drop("_rank")
        series = series.select(*KEY, *[c for c in series.columns if c not in KEY])
        blocks = (
            pl.concat(self._blocks).join(keys, on="_rank").select(*KEY, "_gb", *BLOCK_COLUMNS)
            if self._blocks
            else pl.DataFrame(schema={**dict.fromkeys(KEY, pl.String), "_gb": pl.Int64})
        )
        bins = (
            pl.concat(self._bins, how="vertical_relaxed")
            .join(keys, on="_rank")
            .select(*KEY, "_bin", "_sum", "_count")
        )
        buckets = (
            self.relation_carried.join(keys, on="_rank").select(*KEY, "_bucket", "_mean")
            if self.relation_carried is not None
            else pl.DataFrame(schema=BUCKET_SCHEMA)
        )
        taken = np.concatenate(self._rows) if self._rows else np.zeros(0, dtype=np.int64)
        present = [c for c in ROW_COLUMNS if c in readings.columns]
        rows = readings[np.sort(taken)].select(*KEY, *present)
        if self.state is not None and self.carried_over is not None and self.carried_over.height:
            gone = self.carried_over.select(*KEY)
            series = pl.concat(
                [series, self.carried_over.select(series.columns)], how="vertical_relaxed"
            )
            blocks = pl.concat(
                [blocks, self.state.blocks.join(gone, on=list(KEY)).select(blocks.columns)],
                how="vertical_relaxed",
            )
            rows = pl.concat(
                [rows, self.state.rows.join(gone, on=list(KEY)).select(rows.columns)],
                how="vertical_relaxed",
            )
            bins = pl.concat(
                [bins, self.state.bins.join(gone, on=list(KEY)).select(bins.columns)],
                how="vertical_relaxed",
            )
            buckets = pl.concat(
                [buckets, self.state.buckets.join(gone, on=list(KEY)).select(buckets.columns)],
                how="vertical_relaxed",
            )
        # a deterministic file: the same readings write the same state, byte for byte
        return DetectorState(
            series=series.sort(KEY),
            blocks=blocks.sort(*KEY, "_gb"),
            rows=rows.sort(*KEY, *[c for c in ("seq", "ts") if c in rows.columns]),
            bins=bins.sort(*KEY, "_bin"),
            buckets=buckets.sort(*KEY, "_bucket"),
        )
