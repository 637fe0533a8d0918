"""
### model_retraining_dag: retrain, compare, then deploy or roll back

`backup_current_model` → `retrain_model` → `evaluate_new_model` → `compare_models` →
(`deploy_new_model` | `rollback_model`)

No schedule: `ml_pipeline_dag.check_drift` triggers it when drift is found (`conf["drift"]` holds the
drift result), or run it by hand.

* **backup_current_model** records the current `champion` as the backup (alias `previous`). The
  first attempt's answer is memoised per run, so clearing this task after a deployment cannot
  overwrite the backup with the new champion.
* **retrain_model** (queue `heavy`) trains a candidate. The run conf (all optional) selects the
  data: `train_weeks` (list of ISO weeks), `holdout_week`, `max_rows` (cap on training rows) and
  `shuffle_labels` (break the label/feature link). A tiny or label-shuffled slice of real data
  gives a deliberately *worse* candidate, used to exercise the rollback path.
* **evaluate_new_model** scores candidate and champion on the same holdout week (margin from
  Variable `mlops_deploy_margin`).
* **compare_models** is a branch: exactly one of the two next tasks runs.
* **deploy_new_model** moves `champion` to the candidate (the old one keeps alias `previous`).
* **rollback_model** restores the backed-up champion and records why (the evaluation summary) on
  the model version, so the champion is unchanged.

MLflow: Connection `mlflow_default` if defined, else env `MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from mlops_airflow import HEAVY_QUEUE, RETRAINING_DAG_ID, WEEK_PATTERN
from mlops_airflow.config import HEAVY_TIMEOUT, default_args



@dag(
    dag_id=RETRAINING_DAG_ID,
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["mlops", "training", "retraining"],
    doc_md=__doc__,
    params={
        "train_weeks": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "pattern": WEEK_PATTERN},
            description="ISO weeks to train on (default: every accepted week but the holdout)",
        ),
        "holdout_week": Param(
            None, type=["null", "string"], pattern=WEEK_PATTERN, description="ISO week to evaluate on"
        ),
        "max_rows": Param(
            None, type=["null", "integer"], minimum=1, description="cap on training rows"
        ),
        "shuffle_labels": Param(False, type="boolean", description="shuffle the training labels"),
        "drift": Param(None, type=["null", "object"], description="drift result from ml_pipeline_dag"),
    },
)
def model_retraining_dag() -> None:
    """Retrain on request (drift or by hand), then deploy the candidate or roll back."""

    @task
    def backup_current_model() -> dict[str, Any] | None:
        """Record the current champion as the backup, once per run."""
        from mlops_airflow.tasks import backup_champion_once

        return backup_champion_once(get_current_context())

    @task(queue=HEAVY_QUEUE, execution_timeout=HEAVY_TIMEOUT)
    def retrain_model() -> dict[str, Any]:
        """Train a candidate on the data selected by the run conf."""
        from mlops_airflow.tasks import train_from_params

        return train_from_params(get_current_context()["params"])

    @task
    def evaluate_new_model(model: dict[str, Any]) -> dict[str, Any]:
        """Score the candidate against the champion."""
        from mlops_airflow.tasks import evaluate_candidate

        return evaluate_candidate(model)

    @task.branch
    def compare_models(evaluation: dict[str, Any]) -> str:
        """Pick deploy_new_model when the candidate wins, rollback_model otherwise."""
        return "deploy_new_model" if evaluation.get("beats_champion") else "rollback_model"

    @task
    def deploy_new_model() -> dict[str, Any]:
        """Make the candidate the champion."""
        from mlops_airflow.tasks import deploy_candidate

        ti = get_current_context()["ti"]
        return deploy_candidate(ti.xcom_pull(task_ids="evaluate_new_model"))

    @task
    def rollback_model() -> dict[str, Any]:
        """Restore the backed-up champion and record why."""
        from mlops_airflow.tasks import rollback_candidate

        ti = get_current_context()["ti"]
        return rollback_candidate(ti.xcom_pull(task_ids="evaluate_new_model"))

    model = retrain_model()
    backup_current_model() >> model
    compare_models(evaluate_new_model(model)) >> [deploy_new_model(), rollback_model()]


model_retraining_dag()
