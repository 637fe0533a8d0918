"""
### served_monitoring_dag: what the prediction service served, against the labels

Scheduled on the Asset `accepted_batches`: `ml_pipeline_dag` emits an event (extra `{"week": ...}`)
when it accepts a week's labelled batch, and this DAG then runs `monitor_served` for that week
(or for the run param `week` when triggered by hand; without either, the newest accepted batch).

* **monitor_served**: reads the predictions the service logged for the week (database
  `predictions`, read-only login of the Airflow Connection `predictions_db`), joins them with the
  batch's labels by row key and computes, per served version, the realised ROC AUC, the rows
  served and labelled, and the drift of the served scores against the champion's holdout scores
  (Evidently). Writes `reports/<week>/served.json` and pushes Pushgateway job `serving_monitor`
  (`mlops_served_roc_auc{version}`, ...; alert `MlServedAucBelowFloor`).

A database error fails the attempt and it is retried (never read as "nothing was served"). With
no prediction log configured the task is skipped.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from mlops_airflow import WEEK_PATTERN
from mlops_airflow.assets import ACCEPTED_BATCHES
from mlops_airflow.config import default_args
from mlops_airflow.dataset import dataset_param

DAG_ID = "served_monitoring_dag"


@dag(
    dag_id=DAG_ID,
    schedule=[ACCEPTED_BATCHES],
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["mlops", "serving", "monitoring"],
    doc_md=__doc__,
    params={
        "dataset": dataset_param(),
        "week": Param(None, type=["null", "string"], pattern=WEEK_PATTERN,
                      description="monitor this accepted week instead of the triggering event's"),
    },
)
def served_monitoring_dag() -> None:
    """Monitor the predictions served for the weeks just accepted."""

    @task
    def monitor_served() -> list[dict[str, Any]]:
        """Realised ROC AUC, rows served and labelled, score drift per served version."""
        from mlops_airflow.monitoring import monitor_run

        return monitor_run(get_current_context())

    monitor_served()


served_monitoring_dag()
