"""ml_pipeline_dag end to end (dag.test on the SQLite metadata DB, real MLflow SQLite store) on
replayed weeks 1-3 of 2013: the first run registers a model and makes it champion; a second run
without new data is skipped; a drifted batch (the real week 4, but only the flights from EWR: a
shifted origin/carrier/destination mix) makes check_drift trigger model_retraining_dag with the
drift result in conf."""

from __future__ import annotations

from pathlib import Path

import shutil

import pytest

from testkit.dag_harness import (
    clear_and_rerun,
    retraining_runs,
    ml_env,
    run_dag,
    set_variable,
    task_states,
    triggered_run,
    xcom,
)

WEEKS = ["2013-W01", "2013-W02", "2013-W03"]
MODEL = "pipeline_model"
DRIFT_WEEK = "2013-W04"
DOWNSTREAM = ("validate_data", "preprocess", "train", "evaluate", "check_drift", "approve_deploy", "deploy")


@pytest.fixture(scope="module")
def pipeline(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory):
    """Weeks 1-3 in landing, nothing processed, no model yet; week 4 held back."""
    root = tmp_path_factory.mktemp("pipeline")
    with ml_env(root, MODEL) as data:
        from mlops.data import replay

        replay(until_week=DRIFT_WEEK)
        shutil.move(data / "landing" / f"{DRIFT_WEEK}.csv", root / f"{DRIFT_WEEK}.csv")
        yield data


@pytest.fixture(scope="module")
def first_run(pipeline):
    return run_dag("ml_pipeline_dag")


def test_first_run_registers_a_model_and_sets_champion(pipeline: Path, first_run) -> None:
    from mlops.batches import processed_weeks
    from mlops.registry import get_champion

    assert first_run.state == "success"
    assert task_states(first_run) == {
        "check_new_data": "success", **{t: "success" for t in DOWNSTREAM}
    }
    trained = xcom(first_run, "train")
    assert trained["holdout_week"] == WEEKS[-1] and trained["train_weeks"] == WEEKS[:-1]
    assert trained["recipe"] == "weekly" and trained["version"] is None  # logged, not registered
    evaluation = xcom(first_run, "evaluate")
    assert evaluation["decision"]["deploy"] is True and evaluation["champion_version"] is None
    assert evaluation["decision"]["reason"].startswith("no champion yet")
    drift = xcom(first_run, "check_drift", key="drift")
    assert drift["week"] == WEEKS[-1] and drift["drift_detected"] is False
    assert drift["batch"].endswith(f"accepted/{WEEKS[-1]}.csv")
    assert set(drift["signals"]) == {"data", "model", "label"} and drift["fired"] == []
    champion = get_champion()
    assert champion is not None and champion["version"] == evaluation["version"]
    assert champion["tags"]["recipe"] == "weekly"
    assert xcom(first_run, "deploy")["champion_version"] == evaluation["version"]
    assert processed_weeks() == WEEKS
    assert sorted(p.stem for p in (pipeline / "accepted").glob("*.csv")) == WEEKS
    # XCom carries small values only: no DataFrame, a few KB at most
    for task_id in ("check_new_data", "validate_data", "preprocess", "train", "evaluate"):
        assert len(repr(xcom(first_run, task_id))) < 20_000


def test_second_run_without_new_data_is_skipped(first_run) -> None:
    from mlops import tracking
    from mlops.registry import get_champion

    champion = get_champion()
    client = tracking.setup()
    versions = len(client.search_model_versions(f"name = '{MODEL}'"))

    dag_run = run_dag("ml_pipeline_dag")

    assert dag_run.state == "success"  # nothing new is a normal outcome, not a failure
    states = task_states(dag_run)
    assert states.pop("check_new_data") == "success"
    assert set(states.values()) == {"skipped"} and set(states) == set(DOWNSTREAM)
    assert xcom(dag_run, "check_new_data") in (None, [])  # a falsy result pushes no XCom
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == versions
    assert get_champion()["version"] == champion["version"]


@pytest.fixture(scope="module")
def drift_run(pipeline: Path, first_run):
    """A run on a drifted batch: the real week 4, but only the flights from EWR."""
    import pandas as pd

    week = pd.read_csv(pipeline.parent / f"{DRIFT_WEEK}.csv", low_memory=False)
    week[week["origin"] == "EWR"].to_csv(pipeline / "landing" / f"{DRIFT_WEEK}.csv", index=False)
    # Threshold from the Airflow Variable (no code change): a third of the monitored columns.
    set_variable("mlops_drift_share", "0.3")
    try:
        return run_dag("ml_pipeline_dag")
    finally:
        set_variable("mlops_drift_share", None)


def test_drifted_batch_triggers_retraining_with_drift_in_conf(drift_run) -> None:

    from mlops.batches import processed_weeks

    dag_run = drift_run
    states = task_states(dag_run)
    assert dag_run.state == "success", states
    assert states["check_drift"] == "success"
    drift = xcom(dag_run, "check_drift", key="drift")
    assert drift["week"] == DRIFT_WEEK
    data = drift["signals"]["data"]
    assert drift["drift_detected"] is True and "data" in drift["fired"] and data["threshold"] == 0.3
    assert data["share"] >= 0.3 and "origin" in data["drifted_columns"]

    triggered = triggered_run("model_retraining_dag", f"drift__{dag_run.run_id}")
    assert triggered is not None, "check_drift did not trigger model_retraining_dag"
    _, conf = triggered
    assert conf["drift"] == drift
    assert conf["triggered_by"] == {"dag_id": "ml_pipeline_dag", "run_id": dag_run.run_id}
    assert processed_weeks() == [*WEEKS, DRIFT_WEEK]


def test_cleared_tasks_rerun_to_the_same_end_state(drift_run) -> None:
    """Clearing and rerunning tasks that act on shared state changes nothing: the same batches,
    no second model version, no second retraining run, no alias move, the same watermark."""
    from mlops import tracking
    from mlops.batches import processed_weeks
    from mlops.registry import get_champion

    client = tracking.setup()
    versions = {v.version for v in client.search_model_versions(f"name = '{MODEL}'")}
    champion = get_champion()
    batches = xcom(drift_run, "check_new_data")
    trained = xcom(drift_run, "train")

    # Drift is measured against the current champion, which the first attempt may have replaced:
    # threshold 0 makes the rerun decide "drift" for sure, to exercise the trigger's idempotency.
    set_variable("mlops_drift_share", "0")
    try:
        states = clear_and_rerun(drift_run, ["check_new_data", "train", "check_drift", "deploy"])
    finally:
        set_variable("mlops_drift_share", None)

    assert states["check_new_data"] == "success" and states["train"] == "success"
    assert xcom(drift_run, "check_new_data") == batches  # memoised for the run
    retrained = xcom(drift_run, "train")
    assert retrained["run_id"] == trained["run_id"] and retrained["reused"] is True
    # the retraining run of this pipeline run exists already: skipped instead of triggering again
    assert xcom(drift_run, "check_drift", key="drift")["drift_detected"] is True
    assert states["check_drift"] == "skipped"
    assert retraining_runs() == [f"drift__{drift_run.run_id}"]
    assert states["deploy"] in ("success", "skipped") and states["deploy"] == task_states(drift_run)["deploy"]
    assert {v.version for v in client.search_model_versions(f"name = '{MODEL}'")} == versions
    assert get_champion()["version"] == champion["version"]
    assert processed_weeks() == [*WEEKS, DRIFT_WEEK]
