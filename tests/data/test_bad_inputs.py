"""Bad input through the real console script and the Python API: a clear one-line error naming
file and check, a non-zero exit, the batch moved to quarantine with its reports, accepted data,
training table and champion unchanged. (Every class of bad batch is in the corpus,
tests/data/test_corpus.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest


def _good(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / "landing" / "2013-W04.csv", dtype=str)


def _write(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False)


def missing_column(df: pd.DataFrame, path: Path) -> None:
    _write(df.drop(columns=["carrier"]), path)


def wrong_dtype(df: pd.DataFrame, path: Path) -> None:
    df["distance"] = "far"
    _write(df, path)


def header_only(df: pd.DataFrame, path: Path) -> None:
    path.write_text(",".join(df.columns) + "\n")


def _snapshot(world, data_dir: Path) -> tuple[dict[str, str], str, str | None]:
    from mlops.registry import get_champion

    table = (data_dir / "processed" / "training.parquet").read_bytes()
    champ = get_champion()
    return world.tree_digest(data_dir / "accepted"), str(hash(table)), champ and champ["version"]


def test_console_script_exits_non_zero(world, data_dir: Path) -> None:
    """The installed ``mlops`` script (a real process) on a bad batch."""
    path = data_dir / "landing" / "2013-W36.csv"
    wrong_dtype(_good(data_dir), path)
    res = world.cli("validate", str(path), data_dir=data_dir)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and str(path) in res.stderr and "schema.dtype" in res.stderr
    assert json.loads(res.stdout)["quarantined_to"].endswith("quarantine/2013-W36.csv")


def test_unreadable_paths(world, data_dir: Path, tmp_path: Path) -> None:
    before = _snapshot(world, data_dir)
    missing = tmp_path / "2013-W50.csv"
    folder = tmp_path / "2013-W51.csv"
    folder.mkdir()
    for path in (missing, folder):
        res = world.cli("validate", str(path), data_dir=data_dir)
        assert res.returncode == 1
        assert str(path) in res.stderr and "check 'readable' failed" in res.stderr
    assert folder.is_dir()  # a folder is reported, never moved
    assert _snapshot(world, data_dir) == before


def test_error_object_names_file_check_columns(data_dir: Path) -> None:
    from mlops.errors import BatchValidationError
    from mlops.validate import validate_batch

    path = data_dir / "landing" / "2013-W39.csv"
    missing_column(_good(data_dir), path)
    with pytest.raises(BatchValidationError) as info:
        validate_batch(path)
    err = info.value
    assert err.check == "schema.missing_columns" and err.columns == ["carrier"]
    assert err.path == str(path) and Path(err.quarantined_to).exists()
    assert str(path) in str(err) and "carrier" in str(err)


def test_bad_batch_for_accepted_week_keeps_accepted_data_and_report(world, data_dir: Path) -> None:
    accepted = data_dir / "accepted" / "2013-W01.csv"
    report = data_dir / "reports" / "2013-W01" / "validation.json"
    before = (accepted.read_bytes(), report.read_bytes())
    bad = data_dir / "landing" / "2013-W01.csv"
    header_only(_good(data_dir), bad)
    res = world.cli("validate", str(bad), data_dir=data_dir)
    assert res.returncode == 1 and "header_only" in res.stderr
    assert (accepted.read_bytes(), report.read_bytes()) == before
    assert not bad.exists()
    assert list((data_dir / "quarantine").glob("2013-W01*.csv"))


def test_tolerances_are_keyword_arguments(data_dir: Path, tmp_path: Path) -> None:
    from mlops.validate import validate_batch

    path = tmp_path / "2013-W04.csv"
    df = _good(data_dir)
    df.loc[df.index[:30], "carrier"] = "ZZ"  # 0.5 %: below the default 1 % tolerance
    _write(df, path)
    result = validate_batch(path, checks=["schema", "quality"])
    assert result["status"] == "passed"
    from mlops.errors import BatchValidationError

    with pytest.raises(BatchValidationError, match="unknown_categories"):
        validate_batch(path, checks=["schema", "quality"], max_unknown_category_share=0.001)
    with pytest.raises(TypeError):
        validate_batch(path, max_unknown_share=0.1)


def test_extra_columns_are_reported_when_the_schema_tolerates_them(
        fresh_data: Path, schema_with, source_weeks, capsys) -> None:
    """header.extra_columns: warn (another data set's choice): the batch passes, and the CLI
    output and the report name the extra column; --html adds Evidently's drift report."""
    from mlops.cli import main
    from mlops.validate import accept_batch, validate_batch

    schema_with(header={"extra_columns": "warn"})
    frame, labels = source_weeks
    landing = fresh_data / "landing"
    landing.mkdir(parents=True)
    frame[labels == "2013-W02"].to_csv(landing / "2013-W02.csv", index=False)
    validate_batch(landing / "2013-W02.csv")
    accept_batch(landing / "2013-W02.csv")
    week = frame[labels == "2013-W03"].copy()
    week["remarks"] = "checked"
    path = landing / "2013-W03.csv"
    week.to_csv(path, index=False)
    capsys.readouterr()

    assert main(["validate", str(path), "--html"]) == 0

    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["status"] == "passed" and out["extra_columns"] == ["remarks"]
    assert captured.err.startswith(f"mlops: warning: {path}: schema.extra_columns:")
    assert "remarks" in captured.err
    report = json.loads(Path(out["report_json"]).read_text())
    assert report["checks"]["schema.extra_columns"]["status"] == "warning"
    assert any("remarks" in w for w in report["warnings"])
    page = Path(out["report_html"]).read_text()
    assert "Drifted Columns" in page and "remarks" in page  # Evidently's view + our table
