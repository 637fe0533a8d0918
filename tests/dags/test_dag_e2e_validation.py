"""data_validation_dag end to end (dag.test on the SQLite metadata DB) on real weekly batches:
a good batch passes all four checks; a bad one fails with a clear error and ends in quarantine;
a day without arrivals is skipped."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from testkit.dag_harness import age_files, ml_env, run_dag, task_states, xcom

CHECKS = ("check_data_quality", "check_distributions", "detect_anomalies")


@pytest.fixture(scope="module")
def landing(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory):
    """Weeks 1-4 replayed; 1-2 validated and accepted earlier (the reference), 3 just arrived,
    4 held back to become the bad batch."""
    root = tmp_path_factory.mktemp("validation")
    with ml_env(root, "validation_model") as data:
        from mlops.data import replay
        from mlops.validate import accept_batch, validate_batch

        replay(until_week="2013-W04")
        land = data / "landing"
        for week in ("2013-W01", "2013-W02"):
            validate_batch(str(land / f"{week}.csv"))
            accept_batch(str(land / f"{week}.csv"))
        age_files(land / "2013-W01.csv", land / "2013-W02.csv")
        held_back = root / "2013-W04.csv"
        shutil.move(land / "2013-W04.csv", held_back)
        yield data, held_back


def test_good_batch_passes_every_check(landing) -> None:
    data, _ = landing
    dag_run = run_dag("data_validation_dag")
    assert dag_run.state == "success"
    assert task_states(dag_run) == {"validate_schema": "success", **{c: "success" for c in CHECKS}}
    assert xcom(dag_run, "validate_schema") == ["2013-W03"]  # only the batch of the interval
    for task_id in CHECKS:
        [result] = xcom(dag_run, task_id)
        assert result["batch"] == "2013-W03" and result["status"] == "passed"
    assert (data / "landing" / "2013-W03.csv").exists()
    assert not (data / "quarantine" / "2013-W03.csv").exists()


def test_bad_batch_fails_with_clear_error_and_is_quarantined(landing, caplog) -> None:
    import pandas as pd

    data, held_back = landing
    land = data / "landing"
    age_files(land / "2013-W03.csv")
    # Real week 4 with a broken feed: 20 flights with a negative distance.
    frame = pd.read_csv(held_back, low_memory=False)
    frame.loc[frame.index[:20], "distance"] = -1
    frame.to_csv(land / "2013-W04.csv", index=False)

    with caplog.at_level(logging.ERROR, logger="mlops_airflow"):
        dag_run = run_dag("data_validation_dag")

    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert states["validate_schema"] == "success"
    assert states["check_data_quality"] == "failed"
    # the parallel checks still deliver their verdict (on the quarantined copy if need be)
    assert states["check_distributions"] == "success"
    assert states["detect_anomalies"] == "success"

    assert not (land / "2013-W04.csv").exists()
    assert (data / "quarantine" / "2013-W04.csv").exists()
    report = json.loads((data / "quarantine" / "2013-W04.validation.json").read_text())
    assert report["status"] == "failed"
    assert report["error"]["check"] == "quality.range"
    assert report["error"]["columns"] == ["distance"]

    failures = [r.getMessage() for r in caplog.records if "TASK FAILED" in r.getMessage()]
    assert len(failures) == 1, failures
    line = failures[0]
    assert "dag=data_validation_dag task=check_data_quality" in line
    assert "try=1/3" in line  # failed at once: bad data is not retried
    assert "2013-W04.csv" in line and "quality.range" in line and "distance" in line


def test_day_without_arrivals_is_skipped(landing) -> None:
    data, _ = landing
    age_files(*(data / "landing").glob("*.csv"))
    dag_run = run_dag("data_validation_dag")
    assert dag_run.state == "success"
    assert set(task_states(dag_run).values()) == {"skipped"}
