"""
### maintenance_dag: daily upkeep (retention)

[`prune_task_logs`, `prune_reports`, `clean_metadata_db`] (in parallel)

* **prune_task_logs** deletes task logs older than `LOG_RETENTION_DAYS` (`.env`, default 30).
* **prune_reports** deletes validation and drift reports (`$MLOPS_DATA_DIR/reports`) older than
  `REPORT_RETENTION_DAYS` (default 90).
* **clean_metadata_db** (queue `maintenance`) runs `airflow db clean` on Airflow's metadata
  database: DAG runs, task instances, XComs, logs, jobs and Celery results older than
  `AIRFLOW_DB_RETENTION_DAYS` (default 90), without archive tables. It runs on the maintenance
  worker, the only worker holding the database login; a cluster policy keeps every other task off
  that queue (`mlops_airflow.policy`).

A manual run may pass other retentions in its conf: `log_retention_days`, `report_retention_days`,
`db_retention_days`, or `clean_before` (an ISO timestamp), `dag_ids` and `tables` (lists) for the
database.
docs/production.md, "Upkeep", lists what grows and what bounds it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import dag, get_current_context, task

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
    """Three independent retention tasks."""
    prune_task_logs()
    prune_reports()
    clean_metadata_db()


maintenance_dag()
