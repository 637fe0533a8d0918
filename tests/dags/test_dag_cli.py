"""The seed guide's CLI commands work against these DAGs (subprocesses on the test Airflow home).

CLI start-up takes several seconds here, so the commands are few and each is checked for content.
"""

from __future__ import annotations

import json
from pathlib import Path

from dag_harness import DAG_IDS, airflow_cli, run_dag, task_states, triggered_run

PIPELINE_TASKS = {
    "check_new_data", "validate_data", "preprocess", "train", "evaluate", "check_drift", "deploy",
}
CHAIN = ["check_new_data", "validate_data", "preprocess", "train", "evaluate", "check_drift", "deploy"]


def test_seed_guide_commands(airflow_db: Path, ml_data: Path) -> None:
    # A real run first (empty landing folder: the pipeline short-circuits), so the DAGs are in the
    # metadata DB and `tasks state` has task instances to report.
    dag_run = run_dag("ml_pipeline_dag")
    assert task_states(dag_run)["check_new_data"] == "success"

    listed = json.loads(
        airflow_cli("dags", "list", "-o", "json", "--columns", "dag_id,owners,is_paused")
        .stdout.strip().splitlines()[-1]
    )
    assert {d["dag_id"] for d in listed} == DAG_IDS
    assert all(d["owners"] in ("mlops", ["mlops"]) for d in listed), listed
    assert all(str(d["is_paused"]) == "False" for d in listed), listed

    shown = airflow_cli("dags", "show", "ml_pipeline_dag").stdout
    for upstream, downstream in zip(CHAIN, CHAIN[1:]):
        assert f"{upstream} -> {downstream}" in shown, f"edge {upstream} -> {downstream} not shown"

    listed_tasks = airflow_cli("tasks", "list", "ml_pipeline_dag").stdout.split()
    assert set(listed_tasks) == PIPELINE_TASKS

    run_id = "cli_trigger_test"
    airflow_cli(
        "dags", "trigger", "ml_pipeline_dag", "--run-id", run_id, "--conf", '{"source": "cli test"}'
    )
    created = triggered_run("ml_pipeline_dag", run_id)
    assert created is not None, "airflow dags trigger did not create the run"
    assert created[1] == {"source": "cli test"}
    assert created[0] in ("queued", "DagRunState.QUEUED")  # no scheduler runs in the tests

    states = airflow_cli(
        "tasks", "state", "ml_pipeline_dag", "check_new_data", dag_run.run_id
    ).stdout.split()
    assert states[-1] == "success"
