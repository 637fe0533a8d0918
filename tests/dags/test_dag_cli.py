"""The seed guide's CLI commands work against these DAGs (subprocesses on the test Airflow home).

CLI start-up takes several seconds here, so the commands are few, run two at a time, and each is
checked for content.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testkit.dag_harness import DAG_IDS, airflow_cli, run_dag, task_states, triggered_run

CHAIN = ["check_new_data", "validate_data", "preprocess", "train", "evaluate", "check_drift", "approve_deploy", "deploy"]
TRIGGER_RUN_ID = "cli_trigger_test"


def test_seed_guide_commands(airflow_db: Path, ml_data: Path) -> None:
    # A real run first (empty landing folder: the pipeline short-circuits), so the DAGs are in the
    # metadata DB and `tasks state` has task instances to report.
    dag_run = run_dag("ml_pipeline_dag")
    assert task_states(dag_run)["check_new_data"] == "success"

    commands = {
        "list": ("dags", "list", "-o", "json", "--columns", "dag_id,owners,is_paused"),
        "show": ("dags", "show", "ml_pipeline_dag"),
        "tasks": ("tasks", "list", "ml_pipeline_dag"),
        "trigger": (
            "dags", "trigger", "ml_pipeline_dag", "--run-id", TRIGGER_RUN_ID,
            "--conf", '{"source": "cli test"}',
        ),
        "state": ("tasks", "state", "ml_pipeline_dag", "check_new_data", dag_run.run_id),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(airflow_cli, *args) for name, args in commands.items()}
        out = {name: future.result().stdout for name, future in futures.items()}

    listed = json.loads(out["list"].strip().splitlines()[-1])
    assert {d["dag_id"] for d in listed} == DAG_IDS
    assert all(d["owners"] in ("mlops", ["mlops"]) for d in listed), listed
    assert all(str(d["is_paused"]) == "False" for d in listed), listed

    for upstream, downstream in zip(CHAIN, CHAIN[1:]):
        assert f"{upstream} -> {downstream}" in out["show"], f"edge {upstream} -> {downstream}"

    assert set(out["tasks"].split()) == set(CHAIN)

    created = triggered_run("ml_pipeline_dag", TRIGGER_RUN_ID)
    assert created is not None, "airflow dags trigger did not create the run"
    state, conf = created
    assert conf == {"source": "cli test"}
    assert state == "queued"  # no scheduler runs in the tests

    assert out["state"].split()[-1] == "success"
