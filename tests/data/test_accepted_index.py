"""The index of accepted row keys: kept up to date on acceptance, never a re-read of every
accepted file, rebuilt from accepted/ when missing or damaged, and safe when two processes accept
batches with the same rows at once (the error names the other batch)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture()
def landing(fresh_data: Path, source_weeks) -> Path:
    frame, labels = source_weeks
    folder = fresh_data / "landing"
    folder.mkdir(parents=True)
    for week in ("2013-W02", "2013-W03", "2013-W06"):
        frame[labels == week].to_csv(folder / f"{week}.csv", index=False)
    return folder


def _index():
    from mlops.config import load_schema
    from mlops.validation.accepted_index import AcceptedIndex

    return AcceptedIndex.load(load_schema())


def test_acceptance_adds_keys_and_figures(fresh_data: Path, landing: Path) -> None:
    import pandas as pd

    from mlops.validate import accept_batch, validate_batch

    for week in ("2013-W02", "2013-W03"):
        validate_batch(landing / f"{week}.csv")
        accept_batch(landing / f"{week}.csv")
    manifest = fresh_data / "state" / "accepted_index" / "index.json"
    stamp = manifest.stat().st_mtime_ns
    index = _index()
    assert index.rebuilt == [] and sorted(index.entries) == ["2013-W02", "2013-W03"]
    raw = pd.read_csv(landing / "2013-W03.csv")
    entry = index.entries["2013-W03"]
    labelled = raw["arr_delay"].notna()
    assert (entry["rows"], entry["labelled"], entry["days"]) == (len(raw), labelled.sum(), 7)
    assert entry["positives"] == (raw["arr_delay"] > 15).sum()
    assert len(index.keys["2013-W03"]) == len(raw)
    validate_batch(landing / "2013-W06.csv")  # validation reads the index, never rewrites it
    assert manifest.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("damage", ["missing", "corrupt_manifest", "truncated_keys",
                                    "file_added_by_hand", "file_removed"])
def test_index_is_rebuilt_from_accepted(fresh_data: Path, landing: Path, damage: str) -> None:
    from mlops.validate import accept_batch, validate_batch

    for week in ("2013-W02", "2013-W03"):
        validate_batch(landing / f"{week}.csv")
        accept_batch(landing / f"{week}.csv")
    good = _index()
    folder = fresh_data / "state" / "accepted_index"
    expected = {"2013-W02", "2013-W03"}
    if damage == "missing":
        for path in folder.iterdir():
            path.unlink()
    elif damage == "corrupt_manifest":
        (folder / "index.json").write_text('{"version": 1, "batches": [')
    elif damage == "truncated_keys":
        keys = folder / good.entries["2013-W03"]["keys"]
        keys.write_bytes(keys.read_bytes()[:1000])
    elif damage == "file_added_by_hand":
        (fresh_data / "accepted" / "2013-W06.csv").write_bytes((landing / "2013-W06.csv").read_bytes())
        expected.add("2013-W06")
    elif damage == "file_removed":
        (fresh_data / "accepted" / "2013-W02.csv").unlink()
        expected.discard("2013-W02")

    index = _index()

    assert set(index.entries) == expected
    for week in expected & set(good.entries):
        assert np.array_equal(index.keys[week], good.keys[week])
        assert {k: index.entries[week][k] for k in ("rows", "labelled", "positives", "sha256")} == \
            {k: good.entries[week][k] for k in ("rows", "labelled", "positives", "sha256")}
    assert _index().rebuilt == []  # repaired once, then read as is
    manifest = json.loads((folder / "index.json").read_text())
    assert set(manifest["batches"]) == expected


def test_another_batch_with_accepted_rows_names_that_batch(fresh_data: Path, landing: Path,
                                                           schema_with) -> None:
    """With a key that repeats across weeks (day of month, not the date), rows of 2013-W06
    (Feb 4-10) clash with the accepted 2013-W02 (Jan 7-13)."""
    from mlops.errors import BatchValidationError
    from mlops.validate import accept_batch, validate_batch

    schema_with(row_key=["day", "carrier", "flight", "origin"])
    validate_batch(landing / "2013-W02.csv")
    accept_batch(landing / "2013-W02.csv")
    with pytest.raises(BatchValidationError) as info:
        validate_batch(landing / "2013-W06.csv")
    err = info.value
    assert err.check == "row_key.accepted" and "2013-W02" in str(err)
    assert set(err.columns) == {"day", "carrier", "flight", "origin"}
    assert "accepted/2013-W02.csv" in err.detail


def test_two_processes_accepting_the_same_rows_at_once(world, fresh_data: Path, landing: Path,
                                                       schema_with) -> None:
    """Both batches passed validation (nothing accepted yet); accepted together, exactly one
    gets in and the other is refused naming it."""
    from mlops.validate import validate_batch

    schema = schema_with(row_key=["day", "carrier", "flight", "origin"])
    for week in ("2013-W02", "2013-W06"):
        assert validate_batch(landing / f"{week}.csv")["status"] == "passed"
    env = {**os.environ, "MLOPS_DATA_DIR": str(fresh_data), "MLOPS_SCHEMA": str(schema)}
    procs = {week: subprocess.Popen([world.MLOPS, "accept", str(landing / f"{week}.csv")],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env)
             for week in ("2013-W02", "2013-W06")}
    outs = {week: (p.wait(timeout=120), p.stderr.read()) for week, p in procs.items()}
    codes = sorted(code for code, _ in outs.values())
    assert codes == [0, 1], outs
    winner = next(w for w, (code, _) in outs.items() if code == 0)
    message = next(err for code, err in outs.values() if code == 1)
    assert "BatchConflictError" in message and f"batch {winner}" in message, message
    assert [p.stem for p in (fresh_data / "accepted").glob("*.csv")] == [winner]
    assert sorted(_index().entries) == [winner]
