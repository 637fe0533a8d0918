"""``mlops --dataset synthetic_drift`` runs replay → validate → accept → preprocess → train in a
fresh folder without any MLOPS_SCHEMA: everything lands in the data set's own folder, experiment
and registered model, nothing in the flights' folder; a bad data set is a clear error."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import ModuleType

import pytest

WEEKS = ["2013-W01", "2013-W02", "2013-W03"]


def _ok(world: ModuleType, data: Path, *args: str) -> dict:
    res = world.cli("--dataset", "synthetic_drift", *args, data_dir=data)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_the_cli_runs_the_synthetic_data_set_by_option(world: ModuleType, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_DATASET", raising=False)
    assert "MLOPS_SCHEMA" in world._CLEAR  # world.cli never passes one
    data = tmp_path / "data"
    folder = data / "datasets" / "synthetic_drift"
    described = _ok(world, data, "dataset")
    assert described["data_dir"] == str(folder) and described["model_name"] == "synthetic_drift_classifier"
    replay = _ok(world, data, "data", "replay", "--until", WEEKS[-1])
    assert replay["landing_dir"] == str(folder / "landing") and replay["weeks"] == WEEKS
    for week in WEEKS:
        assert _ok(world, data, "validate", week)["status"] == "passed"
        assert _ok(world, data, "accept", week)["accepted_to"] == str(folder / "accepted" / f"{week}.csv")
    table = _ok(world, data, "preprocess")
    assert table["table"] == str(folder / "processed" / "training.parquet") and table["weeks"] == WEEKS
    assert table["rows"] == 3 * 2000
    trained = _ok(world, data, "train")
    assert trained["train_weeks"] == WEEKS[:-1] and trained["holdout_week"] == WEEKS[-1]
    assert trained["version"] == "1"
    assert _ok(world, data, "champion")["champion"] is None
    assert _ok(world, data, "deploy", "1")["deployed"] is True
    assert _ok(world, data, "champion")["champion"]["version"] == "1"
    # Only the data set's folder under the flights' one; its own experiment and model in the
    # (one) local store beside the flights' folder.
    assert sorted(p.name for p in data.iterdir()) == ["datasets"]
    assert sorted(p.name for p in (data / "datasets").iterdir()) == ["synthetic_drift"]
    with sqlite3.connect(tmp_path / "data-mlflow" / "mlflow.db") as db:
        assert [r[0] for r in db.execute("SELECT name FROM experiments WHERE name != 'Default'")] == \
            ["synthetic_drift_classifier"]
        assert [r[0] for r in db.execute("SELECT name FROM registered_models")] == ["synthetic_drift_classifier"]
    # The flights see none of it.
    flights = world.cli("champion", data_dir=data)
    assert flights.returncode == 0 and json.loads(flights.stdout)["champion"] is None


@pytest.mark.parametrize("spec", ["no_such_set", "/no/such/dataset.yaml"])
def test_a_bad_data_set_is_a_clear_error(world: ModuleType, tmp_path: Path, spec: str) -> None:
    res = world.cli("--dataset", spec, "data", "replay", "--until", "2013-W01", data_dir=tmp_path / "data")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.startswith("mlops: error: DatasetError:") and spec in res.stderr, res.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.csv"))
