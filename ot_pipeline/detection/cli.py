"""`ot detect`: run the same detectors as the pipeline over any CSV recording.

    ot detect INPUT.csv --time-col COL [--sep SEP] [--columns a,b] [--metric COL=METRIC ...]
              [--config detection.yaml] --output OUT.csv

Each value column is one series (named after the column); `--metric COL=METRIC` gives it the
defaults of a metric type of the event contract (temperature, vibration, ...), otherwise it is a
generic signal. One row out per input reading and value column: ts (exactly the input text),
column, value, score, is_anomaly (true/false), severity, detector. The time column holds ISO-8601
text or epoch numbers (seconds, or milliseconds when above 1e11).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from ot_pipeline.detection.combiner import DETECTORS, SEVERITIES, named
from ot_pipeline.detection.config import METRIC_DEFAULTS, RECORDING_DEFAULTS, DetectionConfig
from ot_pipeline.detection.engine import score_codes

EPOCH_MS_ABOVE = 1e11  # epoch numbers above this are milliseconds, below seconds
ISO_SECONDS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S")  # given, Polars parses them fast
OUTPUT_READINGS = 1 << 19  # output rows per slice of the output CSV (about)


class InputError(ValueError):
    """A problem with the input file or the arguments; the message is meant for the user."""


def parse_time(text: pl.Series) -> pl.Series:
    """Epoch milliseconds (Int64) from ISO-8601 text or epoch numbers; raises on unparsable."""
    stripped = text.str.strip_chars()
    numeric = stripped.cast(pl.Float64, strict=False)
    present = stripped.is_not_null() & (stripped != "")
    if numeric.is_not_null().sum() == present.sum():
        peak = numeric.abs().max()
        scale = 1.0 if isinstance(peak, int | float) and peak > EPOCH_MS_ABOVE else 1000.0
        return (numeric * scale).round().cast(pl.Int64)
    epoch = _common_iso(stripped)
    if epoch is None:
        epoch = _any_iso(stripped)
    else:  # the texts of another form, by the general parser
        other = (present & epoch.is_null()).arg_true()
        if other.len():
            epoch = epoch.scatter(other, _any_iso(stripped.gather(other)))
    bad = present & epoch.is_null()
    if bad.any():
        example = stripped.filter(bad)[0]
        raise InputError(f"cannot parse time value {example!r} (ISO-8601 or epoch expected)")
    return epoch


def _any_iso(text: pl.Series) -> pl.Series:
    """Epoch ms of ISO-8601 texts, each with or without an offset (UTC when none); the format is
    inferred (slower than a given one), null where a text does not parse."""
    parsed = text.str.to_datetime(time_unit="ms", strict=False, time_zone="UTC")
    return parsed.dt.epoch("ms")


def _common_iso(text: pl.Series) -> pl.Series | None:
    """Epoch ms of the usual form, whole seconds with one offset (or Z, or none) for all rows,
    which Polars parses several times faster when given the format; None when the first rows
    are not of that form. Null where a row is not."""
    head = text.drop_nulls().head(1000)
    if head.is_empty():
        return None
    offset_ms = 0
    body = text
    if head.str.ends_with("Z").all():
        body = text.str.strip_suffix("Z")
    elif head.str.contains(r"[+-]\d\d:\d\d$").all():
        suffix = head.str.slice(-6)
        if suffix.n_unique() == 1 and text.str.ends_with(suffix[0]).all():
            sign = -1 if suffix[0][0] == "-" else 1
            offset_ms = sign * (int(suffix[0][1:3]) * 60 + int(suffix[0][4:6])) * 60_000
            body = text.str.strip_suffix(suffix[0])
    for fmt in ISO_SECONDS:
        if body.head(head.len()).str.to_datetime(fmt, strict=False).null_count() == 0:
            parsed = body.str.to_datetime(fmt, time_unit="ms", strict=False)
            return parsed.dt.epoch("ms") - offset_ms
    return None


def to_readings(
    table: pl.DataFrame, time_col: str, columns: list[str], metrics: dict[str, str]
) -> pl.DataFrame:
    """Long readings (one per row and value column) in the shape `detect` takes.

    Column-major: all rows of the first value column, then the second, ... Column and metric
    names are Enums gathered from one entry per column (no string per reading). The output is
    built from the input table itself (`_write_output`), so the value texts are not carried.
    """
    rows, width = table.height, len(columns)
    ts_ms = parse_time(table[time_col])
    series = np.repeat(np.arange(width, dtype=np.uint32), rows)
    names = pl.Series("column", columns, dtype=pl.Enum(columns))
    kinds = [metrics.get(c, "generic") for c in columns]
    metric_names = pl.Series("metric", kinds, dtype=pl.Enum(list(dict.fromkeys(kinds))))
    text = pl.concat([table[c] for c in columns], rechunk=False)
    return pl.DataFrame(
        {
            "ts": pl.concat([ts_ms] * width, rechunk=False).rename("ts"),
            "column": names.gather(series),
        }
    ).with_columns(
        machine_id=pl.col("column"),
        metric=metric_names.gather(series),
        value=_numbers(text),
    )


def _write_output(
    path: Path, table: pl.DataFrame, time_col: str, value_columns: list[str], scored: pl.DataFrame
) -> None:
    """The output CSV, in input order (row by row), written in slices of input rows: each
    slice's columns are small, reused memory (one 5 M-row string column would be fresh memory,
    page-faulted in). `scored` is in long order: column c of input row r is at c * rows + r."""
    rows, width = table.height, len(value_columns)
    score = scored["score"].fill_null(0.0)
    flagged = scored["is_anomaly"].fill_null(False)
    # names as Enums: a gather moves small codes, the CSV writer writes the names
    names = pl.Series("column", value_columns, dtype=pl.Enum(value_columns))
    severity = pl.Series(SEVERITIES, dtype=pl.Enum(SEVERITIES))
    detector = pl.Series(DETECTORS, dtype=pl.Enum(DETECTORS))
    step = max(OUTPUT_READINGS // width, 1)  # input rows per slice
    # a slice's output row k is value column k % width of its input row k // width
    slice_row = np.repeat(np.arange(min(step, rows), dtype=np.int64), width)
    slice_column = np.tile(np.arange(width, dtype=np.int64), min(step, rows))
    with path.open("wb") as out:
        for first in range(0, max(rows, 1), step):
            count = min(step, rows - first)
            row, column = slice_row[: count * width], slice_column[: count * width]
            long = column * rows + (row + first)
            # the slice's value texts, column after column, then row by row
            values = pl.concat([table[c].slice(first, count) for c in value_columns], rechunk=True)
            is_anomaly = flagged.gather(long)  # true/false
            if is_anomaly.any():
                severities = named(scored["_severity"].gather(long), severity)
                detectors = named(scored["_detector"].gather(long), detector)
            else:  # most slices: nothing flagged, nothing to name
                severities = pl.repeat(None, row.size, dtype=severity.dtype, eager=True)
                detectors = pl.repeat(None, row.size, dtype=detector.dtype, eager=True)
            pl.DataFrame(
                {
                    "ts": table[time_col].slice(first, count).gather(row),
                    "column": names.gather(column),
                    "value": values.gather(column * count + row),
                    "score": score.gather(long),
                    "is_anomaly": is_anomaly,
                    "severity": severities,
                    "detector": detectors,
                }
            ).write_csv(out, include_header=first == 0)


def _numbers(text: pl.Series) -> pl.Series:
    """Floats from text, null where not a number; surrounding blanks are allowed. Most values
    parse as they are, so only the ones that do not are stripped and parsed again."""
    value = text.cast(pl.Float64, strict=False)
    retry = (value.is_null() & text.is_not_null()).arg_true()
    if retry.len():
        again = text.gather(retry).str.strip_chars().cast(pl.Float64, strict=False)
        value = value.scatter(retry, again)
    return value.rename("value")


def _holds_numbers(column: pl.Series) -> bool:
    """Whether any value parses as a number (the first rows usually tell; all rows otherwise)."""
    for part in (column.head(1000), column):
        if part.str.strip_chars().cast(pl.Float64, strict=False).null_count() < part.len():
            return True
    return False


def _parse_metric_mappings(pairs: list[str], columns: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, metric = pair.rpartition("=")
        if not sep or not column:
            raise InputError(f"--metric {pair!r}: expected COLUMN=METRIC")
        if column not in columns:
            raise InputError(f"--metric {pair!r}: {column!r} is not a value column")
        if metric not in METRIC_DEFAULTS:
            known = ", ".join(sorted(METRIC_DEFAULTS))
            raise InputError(f"--metric {pair!r}: unknown metric {metric!r} (known: {known})")
        mapping[column] = metric
    return mapping


def run(
    input_path: Path,
    output_path: Path,
    *,
    time_col: str,
    sep: str = ",",
    columns: list[str] | None = None,
    metric_pairs: list[str] | None = None,
    config: DetectionConfig | None = None,
) -> dict[str, object]:
    """Score a CSV recording and write the results; returns the summary figures."""
    started = time.perf_counter()
    # The texts stay in the reader's chunks: the output is built per slice (no copy of them all).
    table = pl.read_csv(input_path, separator=sep, infer_schema=False)
    if time_col not in table.columns:
        raise InputError(f"time column {time_col!r} not in {table.columns}")
    if columns:
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise InputError(f"--columns: {missing} not in {table.columns}")
        value_columns = columns
    else:  # every other column that holds numbers
        value_columns = [c for c in table.columns if c != time_col and _holds_numbers(table[c])]
    if not value_columns:
        raise InputError("no value columns to score")
    metrics = _parse_metric_mappings(metric_pairs or [], value_columns)
    readings = to_readings(table, time_col, value_columns, metrics)
    loaded = time.perf_counter()
    # Recording defaults first; a config's own `defaults` override them.
    config = config or DetectionConfig()
    config = replace(config, defaults={**RECORDING_DEFAULTS, **config.defaults})
    # the value columns are the channels of one machine (the multivariate detector)
    scored = score_codes(
        readings.select("machine_id", "metric", "ts", "value"), config, one_machine=True
    )
    detected = time.perf_counter()
    _write_output(output_path, table, time_col, value_columns, scored)
    finished = time.perf_counter()
    return {
        "input": str(input_path),
        "output": str(output_path),
        "rows": table.height,
        "columns": value_columns,
        "readings": readings.height,
        "anomalies": int(scored["is_anomaly"].sum()),
        "detect_s": round(detected - loaded, 3),
        "total_s": round(finished - started, 3),
        "readings_per_s": round(readings.height / max(finished - started, 1e-9)),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ot detect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", type=Path, help="CSV recording")
    parser.add_argument("--time-col", required=True, help="column with the time of each row")
    parser.add_argument("--sep", default=",", help="field separator (default ,)")
    parser.add_argument("--columns", help="comma-separated value columns (default: all numeric)")
    parser.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="COL=METRIC",
        help="treat a column as a metric type (repeatable); others are generic signals",
    )
    parser.add_argument("--config", type=Path, help="detection config YAML (docs/detection.md)")
    parser.add_argument("--output", type=Path, required=True, help="CSV to write")
    args = parser.parse_args(argv)
    sep = "\t" if args.sep in ("\\t", "tab") else args.sep
    if len(sep) != 1:
        parser.error("--sep must be a single character")
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    print(f"ot detect: scoring {args.input} ...", file=sys.stderr, flush=True)
    try:
        config = DetectionConfig.from_yaml(args.config) if args.config else None
        summary = run(
            args.input,
            args.output,
            time_col=args.time_col,
            sep=sep,
            columns=columns,
            metric_pairs=args.metric,
            config=config,
        )
    except (InputError, ValueError, OSError, pl.exceptions.PolarsError) as exc:
        print(f"ot detect: {exc}", file=sys.stderr)
        return 2
    print(
        f"ot detect: {summary['readings']} readings, {summary['anomalies']} flagged, "
        f"{summary['total_s']} s",
        file=sys.stderr,
        flush=True,
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
