"""Every bad-input case: clear one-line error naming file and check, non-zero exit, the batch
moved to quarantine with its reports, accepted data, training table and champion unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

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


def all_null(df: pd.DataFrame, path: Path) -> None:
    df["sched_dep_time"] = None
    _write(df, path)


def out_of_range(df: pd.DataFrame, path: Path) -> None:
    df.loc[df.index[:10], "month"] = "13"
    _write(df, path)


def unknown_categories(df: pd.DataFrame, path: Path) -> None:
    df.loc[df.index[: len(df) // 10], "carrier"] = "ZZ"
    _write(df, path)


def duplicates(df: pd.DataFrame, path: Path) -> None:
    _write(pd.concat([df, df.head(len(df) // 10)]), path)


def outliers(df: pd.DataFrame, path: Path) -> None:
    df.loc[df.index[: len(df) // 10], "wind_speed"] = "120"  # within range, far off the reference
    _write(df, path)


def empty_file(df: pd.DataFrame, path: Path) -> None:
    path.write_bytes(b"")


def header_only(df: pd.DataFrame, path: Path) -> None:
    path.write_text(",".join(df.columns) + "\n")


def truncated(df: pd.DataFrame, path: Path) -> None:
    text = df.to_csv(index=False)
    path.write_text(text[: len(text) // 2])  # cut in the middle of a row


def corrupt(df: pd.DataFrame, path: Path) -> None:
    lines = df.to_csv(index=False).splitlines()
    lines[50] = lines[50] + ",extra,fields"
    path.write_text("\n".join(lines) + "\n")


def parquet_format(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path)


def json_format(df: pd.DataFrame, path: Path) -> None:
    path.write_text(df.head(20).to_json(orient="records"))


CASES: list[tuple[Callable[[pd.DataFrame, Path], None], str, list[str]]] = [
    (missing_column, "schema.missing_columns", ["carrier"]),
    (wrong_dtype, "schema.dtype", ["distance"]),
    (all_null, "quality.all_null", ["sched_dep_time"]),
    (out_of_range, "quality.range", ["month"]),
    (unknown_categories, "quality.unknown_categories", ["carrier"]),
    (duplicates, "anomalies.duplicates", []),
    (outliers, "anomalies.outliers", ["wind_speed"]),
    (empty_file, "empty_file", []),
    (header_only, "header_only", []),
    (truncated, "truncated", []),
    (corrupt, "corrupt", []),
    (parquet_format, "format", []),
    (json_format, "format", []),
]


def _snapshot(world, data_dir: Path) -> tuple[dict[str, str], str, str | None]:
    from mlops.registry import get_champion

    table = (data_dir / "processed" / "training.parquet").read_bytes()
    champ = get_champion()
    return world.tree_digest(data_dir / "accepted"), str(hash(table)), champ and champ["version"]


@pytest.mark.parametrize("make,check,columns", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_batch_is_rejected_and_quarantined(world, data_dir: Path, capsys, make, check,
                                                columns) -> None:
    before = _snapshot(world, data_dir)
    week = f"2013-W{40 + CASES.index((make, check, columns)):02d}"
    path = data_dir / "landing" / f"{week}.csv"
    make(_good(data_dir), path)

    from mlops.cli import main

    capsys.readouterr()
    code = main(["validate", str(path)])  # the console script's entry point, in-process

    assert code == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlops: error: ")
    assert str(path) in err[0] and f"check '{check}' failed" in err[0]
    out = json.loads(captured.out)
    assert out["check"] == check and out["file"] == str(path)
    for col in columns:
        assert col in out["columns"] and col in err[0]
    quarantined = data_dir / "quarantine" / f"{week}.csv"
    assert out["quarantined_to"] == str(quarantined)
    assert not path.exists() and quarantined.exists()
    report = json.loads((data_dir / "quarantine" / f"{week}.validation.json").read_text())
    assert report["status"] == "failed" and report["error"]["check"] == check
    assert (data_dir / "quarantine" / f"{week}.validation.html").stat().st_size > 0
    assert _snapshot(world, data_dir) == before
    assert not (data_dir / "accepted" / f"{week}.csv").exists()


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


def test_tolerances_are_keyword_arguments(data_dir: Path) -> None:
    from mlops.validate import validate_batch

    path = data_dir / "landing" / "2013-W38.csv"
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
