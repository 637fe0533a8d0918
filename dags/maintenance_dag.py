"""
### maintenance_dag: daily upkeep (retention)

[`prune_task_logs`, `prune_reports`, `clean_metadata_db`, `prune_mlflow_runs`] (in parallel)

* **prune_task_logs** deletes task logs older than `LOG_RETENTION_DAYS` (`.env`, default 30).
* **prune_reports** deletes validation and drift reports (`$MLOPS_DATA_DIR/reports`) older than
  `REPORT_RETENTION_DAYS` (default 90).
* **clean_metadata_db** (queue `maintenance`) runs `airflow db clean` on Airflow's metadata
  database: DAG runs, task instances, XComs, logs, jobs and Celery results older than
  `AIRFLOW_DB_RETENTION_DAYS` (default 90), without archive tables. It runs on the maintenance
  worker, the only worker holding the database login; a cluster policy keeps every other task off
  that queue (`mlops_airflow.policy`).

* **prune_mlflow_runs** (queue `maintenance`, pool `model_registry`), for every data set's
  registered model and experiment, in this order:
  1. deletes (MLflow `delete_model_version`) the registered versions created more than
     `MLFLOW_MODEL_VERSION_RETENTION_DAYS` (default 180) ago, except every version that holds an
     alias (`champion`, `previous`, any other) and the `MLFLOW_KEEP_MODEL_VERSIONS` (default 10)
     newest versions of each model;
  2. deletes the runs that started more than `MLFLOW_RUN_RETENTION_DAYS` (default 180) ago, except
     the run of every registered model version still there (their models, metrics and the
     decisions recorded on them) and runs that have not ended, and the logged models of the
     deleted runs. So the runs of the versions deleted in step 1 go in the same pass.

  Runs go by MLflow's soft delete (lifecycle stage `deleted`): `mlflow gc` on the tracking server
  frees their rows and artifacts. It uses the maintenance worker's own MLflow login (MANAGE on the
  experiments and registered models; the pipeline's login cannot delete), in the one-slot pool
  shared with every task that registers a version or moves an alias, so it never deletes a
  version while an alias moves. An MLflow error fails the task (nothing is read as "no alias").

A manual run may pass other retentions in its conf: `log_retention_days`, `report_retention_days`,
`mlflow_run_retention_days`, `mlflow_model_version_retention_days`, `mlflow_keep_model_versions`,
`db_retention_days`, or `clean_before` (an ISO timestamp), `dag_ids` and `tables` (lists) for the
database.
docs/production.md, "Upkeep", lists what grows and what bounds it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import dag, get_current_context, task

from mlops_airflow import REGISTRY_POOL
from mlops_airflow.config import default_args
from mlops_airflow.policy import MAINTENANCE_QUEUE

DAG_ID = "maintenance_dag"


def _conf() -> dict[str, Any]:
    return dict(get_current_context()["dag_run"].conf or {})


@task
def prune_task_logs() -> dict[str, Any]:
    """Task logs older than the retention."""
    from mlops_airflow.maintenance import prune_task_logs as prune

    return prune(_conf())


@task
def prune_reports() -> dict[str, Any]:
    """Reports older than the retention."""
    from mlops_airflow.maintenance import prune_reports as prune

    return prune(_conf())


@task(queue=MAINTENANCE_QUEUE)
def clean_metadata_db() -> dict[str, Any]:
    """`airflow db clean` on the retention."""
    from mlops_airflow.maintenance import clean_metadata_db as clean

    return clean(_conf())


@task(queue=MAINTENANCE_QUEUE, pool=REGISTRY_POOL)
def prune_mlflow_runs() -> dict[str, Any]:
    """Old unaliased model versions beyond the newest ones, then MLflow runs older than the
    retention that no registered version references."""
    from mlops_airflow.maintenance import prune_mlflow_runs as prune

    return prune(_conf())


@dag(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["mlops", "upkeep", "daily"],
    doc_md=__doc__,
)
def maintenance_dag() -> None:
    """Four independent retention tasks."""
    prune_task_logs()
    prune_reports()
    clean_metadata_db()
    prune_mlflow_runs()


maintenance_dag()
