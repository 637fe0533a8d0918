"""
### ml_pipeline_dag: weekly flight-delay model pipeline

`check_new_data` → `validate_data` → `preprocess` → `train` → `evaluate` → `check_drift` →
`approve_deploy` → `deploy`

Each task is a thin call into the `mlops` package; XCom carries only small dicts (weeks, paths,
run ids, model versions, metrics).

* **check_new_data** is a *short-circuit* (`@task.short_circuit`), not a deferrable sensor: the
  weekly schedule already is the poll, batches arrive as whole files, and a sensor would hold a
  run open (and a triggerer slot) for a week. No new batch returns an empty list, so every
  downstream task is **skipped** and the run ends successfully. New batches come from the
  watermark in `$MLOPS_DATA_DIR/state/` (`mlops.batches.new_batches`); the first attempt's answer is
  memoised per run so a cleared task sees the same batches.
* **validate_data** validates each new batch (quality limits from Variables `mlops_<limit>`);
  failing batches go to quarantine and are reported, passing ones are copied to `accepted/`. The
  task fails (without retries) only when no batch passed.
* **preprocess** rebuilds the training table (`dvc repro`).
* **train** (queue `heavy`) trains the weekly recipe (the first of `configs/recipes.yaml`) on every
  accepted week but the newest, which is held out, logs the run and its model to MLflow, then
  advances the watermark. A rerun on the same data reuses the logged run instead of fitting again.
* **evaluate** registers the candidate (once per fingerprint: never a duplicate version) and
  compares it with the `champion` on the holdout week; the promotion decision (`decision`: deploy
  or not, the reason, margin from Variable `mlops_deploy_margin`) travels in its result.
* **check_drift** subclasses the standard `TriggerDagRunOperator`: it measures three drift signals
  of the newest batch against the champion: *data* (share of drifted decision columns, Variable
  `mlops_drift_share`), *model* (the champion's ROC AUC on the batch vs on its own holdout week,
  `mlops_auc_drop`) and *label* (the batch's delayed rate vs the champion's training rate,
  `mlops_label_shift`). When any fires it triggers `model_retraining_dag` with the drift result
  (which signals fired and by how much) in the run's `conf["drift"]`. In Airflow 3 the trigger
  goes through the Execution API, so it works on Celery workers. The triggered run id is
  `drift__<this run id>`: a cleared `check_drift` finds that run and ends *skipped* instead of
  triggering twice. This keeps the task list at seven tasks (no separate branch task).
* **approve_deploy** is the approval gate (`mlops_airflow.approval`): skipped when no deploy is
  proposed; with Variable `mlops_require_approval` (env `MLOPS_REQUIRE_APPROVAL`) off (the
  default) it approves at once; on, it shows the evaluation and waits for an Op or Admin to
  Approve or Reject (Browse → Required Actions, or the REST API). Reject or the timeout
  (`mlops_approval_timeout`) skips `deploy` and tags the candidate with the reason.
* **deploy** moves the `champion` alias only when the decision `evaluate` recorded in MLflow for
  this run says so (never on an XCom's word); otherwise it is skipped, a normal outcome. It runs
  when `check_drift` or the gate is skipped (trigger rule `none_failed`) because drift and
  deployment are independent decisions.

Assets (`mlops_airflow.assets`): `validate_data` produces `accepted_batches` (one event per
accepted week, extra `week`), `preprocess` the `training_table`, `check_drift` a `drift` event when
a signal fires, `deploy` the `champion` (extra `version`, `candidate_version`, `decision`). Batch
paths are rebuilt from the weeks this run claimed, never taken from an XCom.

`evaluate` and `deploy` register versions and move aliases: they run in the one-slot pool
`model_registry`, shared by every worker host. An MLflow outage fails a task with its normal
retries; it is never read as "no champion".

Param `dataset` (default `$MLOPS_DATASET`, else `flights`): the data set every task works on
(`mlops.dataset`: its own folder, experiment and registered model); the drift-triggered
retraining's conf carries it.

MLflow: Connection `mlflow_default` if defined, else env `MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import dag, get_current_context, task

from mlops_airflow import HEAVY_QUEUE, REGISTRY_POOL
from mlops_airflow.approval import DeployApprovalOperator
from mlops_airflow.assets import ACCEPTED_BATCHES, ACCEPTED_BATCHES_MORE, CHAMPION, DRIFT, TRAINING_TABLE
from mlops_airflow.config import HEAVY_RETRIES, HEAVY_RETRY_DELAY, HEAVY_TIMEOUT, default_args
from mlops_airflow.dataset import dataset_param
from mlops_airflow.drift import DriftTriggerOperator

DAG_ID = "ml_pipeline_dag"


@dag(
    dag_id=DAG_ID,
    schedule="@weekly",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["mlops", "training", "weekly"],
    doc_md=__doc__,
    params={"dataset": dataset_param()},
)
def ml_pipeline_dag() -> None:
    """Weekly pipeline: new data → validated → trained → evaluated → drift-checked → deployed."""

    @task.short_circuit
    def check_new_data() -> list[str]:
        """Batches not yet processed (empty list: skip the rest of the run)."""
        from mlops_airflow.tasks import claim_new_batches

        return claim_new_batches(get_current_context())

    @task(outlets=[ACCEPTED_BATCHES, ACCEPTED_BATCHES_MORE])
    def validate_data(batches: list[str]) -> dict[str, Any]:
        """Validate each new batch of this run; quarantine bad ones, accept good ones."""
        from mlops_airflow.tasks import validate_new_batches

        return validate_new_batches(get_current_context())

    @task(outlets=[TRAINING_TABLE])
    def preprocess(validated: dict[str, Any]) -> dict[str, Any]:
        """Rebuild the training table from the accepted batches."""
        from mlops_airflow.tasks import preprocess_accepted

        return preprocess_accepted(get_current_context())

    @task(queue=HEAVY_QUEUE, execution_timeout=HEAVY_TIMEOUT, retries=HEAVY_RETRIES,
          retry_delay=HEAVY_RETRY_DELAY)
    def train(table: dict[str, Any]) -> dict[str, Any]:
        """Train and register a candidate, then advance the watermark."""
        from mlops_airflow.tasks import train_and_mark

        return train_and_mark(table, get_current_context())

    @task(pool=REGISTRY_POOL)
    def evaluate(model: dict[str, Any]) -> dict[str, Any]:
        """Register the candidate and compare it with the champion on the holdout week."""
        from mlops_airflow.tasks import evaluate_candidate

        return {**evaluate_candidate(model, get_current_context()), "batches": model["batches"]}

    @task(trigger_rule="none_failed", pool=REGISTRY_POOL, outlets=[CHAMPION])
    def deploy() -> dict[str, Any]:
        """Move `champion` to the candidate if the decision says so; skip otherwise."""
        from mlops_airflow.tasks import deploy_if_better

        ti = get_current_context()["ti"]
        return deploy_if_better(ti.xcom_pull(task_ids="evaluate"))

    evaluation = evaluate(train(preprocess(validate_data(check_new_data()))))
    check_drift = DriftTriggerOperator(task_id="check_drift", evaluation=evaluation, outlets=[DRIFT])
    approve = DeployApprovalOperator(task_id="approve_deploy", deploy_task_id="deploy",
                                     drift_from="check_drift", evaluate_task_id="evaluate",
                                     trigger_rule="none_failed")
    check_drift >> approve >> deploy()


ml_pipeline_dag()
