"""`ot detect` on CSV recordings (pure: files only, no servers)."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ot_pipeline.detection.cli import InputError, main, parse_time


def write_bench_csv(path: Path, rows: int = 1500) -> list[str]:
    """A pump-bench-like recording: ';' separated, 1 s sampling, several value columns, a
    pressure step (a closed valve) from row 900 to 1100 and one current spike at row 700."""
    rng = random.Random(3)
    start = datetime(2020, 3, 9, 10, 14, 33)
    times = []
    lines = ["datetime;Accelerometer1RMS;Current;Pressure;Volume Flow RateRMS"]
    for i in range(rows):
        t = (start + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
        times.append(t)
        valve = 900 <= i < 1100
        acc = 0.21 + rng.gauss(0, 0.004)
        current = 1.5 + rng.gauss(0, 0.05) + (1.5 if i == 700 else 0.0)
        pressure = 0.38 + rng.gauss(0, 0.01) + (0.4 if valve else 0.0)
        flow = 32 + rng.gauss(0, 0.6)
        lines.append(f"{t};{acc:.5f};{current:.5f};{pressure:.5f};{flow:.4f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return times


def test_ot_detect_scores_every_reading_of_a_semicolon_csv_with_several_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "valve.csv", tmp_path / "out.csv"
    times = write_bench_csv(source)
    code = main(
        [
            str(source),
            "--time-col",
            "datetime",
            "--sep",
            ";",
            "--metric",
            "Current=current",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["readings"] == 1500 * 4
    result = pl.read_csv(out, infer_schema=False)
    assert result.columns == [
        "ts",
        "column",
        "value",
        "score",
        "is_anomaly",
        "severity",
        "detector",
    ]
    assert result.height == 1500 * 4
    assert result["ts"].to_list()[::4] == times  # exactly the input text, input order
    assert set(result["is_anomaly"].unique().to_list()) <= {"true", "false"}
    flagged = result.filter(pl.col("is_anomaly") == "true").with_columns(
        row=pl.col("ts").replace_strict({t: i for i, t in enumerate(times)}, return_dtype=pl.Int64)
    )
    pressure = flagged.filter(pl.col("column") == "Pressure")
    assert pressure.height > 0
    assert 900 <= min(pressure["row"].to_list()) < 920
    current = flagged.filter(pl.col("column") == "Current")
    assert set(current["row"].to_list()) <= {700, 701}
    assert current.height >= 1
    assert flagged.filter(pl.col("row") < 700).height == 0


def test_ot_detect_takes_a_subset_of_columns_and_epoch_seconds(tmp_path: Path) -> None:
    source, out = tmp_path / "epoch.csv", tmp_path / "out.csv"
    rng = random.Random(4)
    lines = ["t,a,b,label"] + [
        f"{1_600_000_000 + 300 * i},{20 + rng.gauss(0, 0.5):.3f},{rng.random():.3f},0"
        for i in range(400)
    ]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main([str(source), "--time-col", "t", "--columns", "a", "--output", str(out)]) == 0
    result = pl.read_csv(out, infer_schema=False)
    assert result.height == 400
    assert result["column"].unique().to_list() == ["a"]
    assert result["ts"][0] == "1600000000"


def test_ot_detect_rejects_unknown_columns_and_metrics(tmp_path: Path) -> None:
    source = tmp_path / "valve.csv"
    write_bench_csv(source, rows=50)
    out = str(tmp_path / "out.csv")
    base = [str(source), "--time-col", "datetime", "--sep", ";", "--output", out]
    assert main([*base, "--columns", "Nope"]) == 2
    assert main([*base, "--metric", "Current=amperes"]) == 2
    assert main([str(source), "--time-col", "when", "--sep", ";", "--output", out]) == 2


def test_time_parsing_handles_iso_text_with_offsets_and_epoch_milliseconds() -> None:
    iso = parse_time(pl.Series(["2024-01-01T00:00:00Z", "2024-01-01T01:00:00+01:00"]))
    assert iso.to_list() == [1_704_067_200_000, 1_704_067_200_000]
    millis = parse_time(pl.Series(["1704067200000", "1704067201000"]))
    assert millis.to_list() == [1_704_067_200_000, 1_704_067_201_000]


def test_time_parsing_of_the_usual_form_equals_the_general_parser() -> None:
    """Whole seconds with one offset (or Z, or none) for all rows take a fast path with the
    format given; it must give what the general (inferring) parser gives, and rows of another
    form in such a column still parse."""
    columns = [
        ["2024-03-01T10:00:00+00:00", None, " 2024-03-01T10:00:01+00:00 "],
        ["2024-03-01T10:00:00-05:30", "2024-03-01T10:00:01-05:30"],
        ["2024-03-01T10:00:00+02:00", "2024-03-01T10:00:01+02:00"],
        ["2024-03-01T10:00:00Z", "2024-03-01T10:00:01Z"],
        ["2024-03-01 10:00:00", "2024-03-01 10:00:01"],
        ["2024-03-01T10:00:00", "2024-03-01T10:00:01.250"],  # one with a fraction
        ["2024-03-01T10:00:00.5", "2024-03-01T10:00:01.250"],
        ["2024-03-01T10:00:00+01:00", "2024-03-01T10:00:01+02:00"],  # offsets differ
        ["2024-03-01", "2024-03-02"],
    ]
    for texts in columns:
        column = pl.Series(texts)
        general = column.str.strip_chars().str.to_datetime(
            time_unit="ms", strict=False, time_zone="UTC"
        )
        assert parse_time(column).to_list() == general.dt.epoch("ms").to_list(), texts
    with pytest.raises(InputError, match="'soon'"):
        parse_time(pl.Series(["2024-03-01T10:00:00", "soon"]))
