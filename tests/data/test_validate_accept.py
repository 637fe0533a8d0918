"""A good batch passes every check (Evidently distribution included) and is accepted once;
accepted data is never overwritten; a massively shifted batch fails the distribution check."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest


def test_good_batch_passes_all_checks_and_is_accepted_once(data_dir: Path, tmp_path: Path) -> None:
    from mlops.errors import BatchConflictError, BatchNotValidatedError
    from mlops.validate import accept_batch, validate_batch

    src = data_dir / "landing" / "2013-W04.csv"
    batch = tmp_path / "2013-W04.csv"
    batch.write_bytes(src.read_bytes())
    result = validate_batch(batch, html=True)
    assert result["status"] == "passed", result
    assert set(result["checks"]) >= {"readable", "format", "schema", "quality", "anomalies",
                                      "distribution"}
    assert result["checks"]["distribution"]["status"] in ("passed", "warning")
    assert "drift_share" in result["checks"]["distribution"]
    assert result["seconds"] < 60
    report = json.loads(Path(result["report_json"]).read_text())
    assert report["sha256"] == result["sha256"]
    html = Path(result["report_html"]).read_text()
    assert "Drifted Columns" in html and "passed" in html  # Evidently drift view + our verdict
    assert result["checks"]["distribution"]["engine"] == "evidently"

    dest = Path(accept_batch(batch))
    assert dest == data_dir / "accepted" / "2013-W04.csv"
    assert dest.read_bytes() == batch.read_bytes()
    mtime = dest.stat().st_mtime_ns
    assert accept_batch(batch) == str(dest) and dest.stat().st_mtime_ns == mtime

    other = tmp_path / "other" / "2013-W04.csv"
    other.parent.mkdir()
    df = pd.read_csv(batch, dtype=str).iloc[1:]  # the whole week less one row: other content
    df.to_csv(other, index=False)
    with pytest.raises(BatchNotValidatedError):
        accept_batch(other)  # validated content differs
    validate_batch(other, checks=["schema", "quality"])
    with pytest.raises(BatchConflictError):
        accept_batch(other)  # week already accepted with other content
    assert dest.read_bytes() == batch.read_bytes()
    dest.unlink()  # leave the shared world as it was


def test_massive_shift_fails_distribution_check(data_dir: Path, tmp_path: Path) -> None:
    from mlops.errors import BatchValidationError
    from mlops.validate import validate_batch

    df = pd.read_csv(data_dir / "landing" / "2013-W04.csv", dtype=str)
    day = pd.to_datetime(df[["year", "month", "day"]].astype(int))
    late = (day + pd.Timedelta(hours=23)).dt.tz_localize("America/New_York").dt.tz_convert("UTC")
    df["time_hour"] = late.dt.strftime("%Y-%m-%dT%H:%M:%SZ")  # every flight at 23:00 local
    df["carrier"], df["origin"], df["dest"] = "HA", "JFK", "HNL"
    df["distance"], df["sched_dep_time"], df["sched_arr_time"] = "4983", "2300", "2359"
    df["hour"], df["minute"] = "23", "59"
    df["flight"] = [str(i + 1) for i in range(len(df))]  # one flight number each: keys unique
    path = tmp_path / "2013-W04.csv"
    df.to_csv(path, index=False)
    with pytest.raises(BatchValidationError) as info:
        validate_batch(path)
    assert info.value.check == "distribution"
    assert {"carrier", "dest", "distance"} <= set(info.value.columns)
    moved = Path(info.value.quarantined_to)
    assert moved.parent == data_dir / "quarantine" and moved.exists() and not path.exists()
    # a failing distribution check brings Evidently's report (by default only then)
    assert "Drifted Columns" in Path(info.value.report).with_suffix(".html").read_text()


def test_checks_run_separately_merge_into_one_report(data_dir: Path, tmp_path: Path) -> None:
    from mlops.errors import BatchNotValidatedError, BatchValidationError
    from mlops.validate import accept_batch, validate_batch

    df = pd.read_csv(data_dir / "landing" / "2013-W04.csv", dtype=str)
    df.loc[df.index[:20], "distance"] = "-1"
    path = tmp_path / "2013-W04.csv"
    df.to_csv(path, index=False)
    first = validate_batch(path, checks=["anomalies"])  # one check per call, like the DAG tasks
    assert first["status"] == "passed" and "quality" not in first["checks"]
    report = data_dir / "reports" / "2013-W04" / "validation.json"
    with pytest.raises(BatchValidationError, match="quality.range") as info:
        validate_batch(path, checks=["quality"])
    merged = json.loads(report.read_text())
    assert merged["status"] == "failed" and merged["checks_run"] == ["anomalies", "quality"]
    assert merged["checks"]["anomalies"]["status"] == "passed"
    assert merged["checks"]["quality.range"]["columns"] == ["distance"]
    quarantined = Path(info.value.quarantined_to)
    # validating the quarantined copy again never moves it; nothing can be accepted from it
    with pytest.raises(BatchValidationError):
        validate_batch(quarantined, checks=["quality"])
    assert quarantined.exists()
    with pytest.raises(BatchNotValidatedError):
        accept_batch(quarantined)
