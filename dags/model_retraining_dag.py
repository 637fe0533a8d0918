"""
### model_retraining_dag: retrain with every recipe, keep the best, then deploy or roll back

`backup_current_model` → `retrain_model` (one mapped task per recipe) → `evaluate_new_model` →
`compare_models` → (`approve_new_model` → `deploy_new_model` | `rollback_model`)

No schedule: `ml_pipeline_dag.check_drift` triggers it when a drift signal fires (`conf["drift"]`
holds the drift result: which of the data, model and label signals fired and by how much), or
run it by hand.

* **backup_current_model** records the current `champion` as the backup (alias `previous`). The
  first attempt's answer is memoised per run, so clearing this task after a deployment cannot
  overwrite the backup with the new champion.
* **retrain_model** (queue `heavy`) is mapped over the training *recipes* of
  `configs/recipes.yaml` (the weekly recipe, recent-window variants, a recency-weighted variant, a
  hyperparameter variant): each trains its candidate and scores it on the *validation week*, the
  newest training week, which precedes the holdout week. Recipes run in parallel when several
  heavy worker slots exist, one after the other on a single slot. The run conf (all optional)
  selects the data for every recipe: `train_weeks` (list of ISO weeks), `holdout_week`, `max_rows`
  (cap on training rows) and `shuffle_labels` (break the label/feature link; a deliberately
  *worse* candidate, to exercise the rollback path); `recipes` limits the run to some recipes
  (the others are skipped). Rerunning on the same data reuses each recipe's logged run.
* **evaluate_new_model** takes the recipe with the best validation ROC AUC, registers its
  candidate (once per fingerprint: a rerun never registers a duplicate) and compares it with the
  champion on the holdout week; the promotion decision (`decision`: deploy or not, reason,
  margin from Variable `mlops_deploy_margin`) travels in its result.
* **compare_models** is a branch on that decision: `approve_new_model` when it is to deploy,
  `rollback_model` otherwise.
* **approve_new_model** is the approval gate (`mlops_airflow.approval`, Variable
  `mlops_require_approval`, default off: approves at once). On, it shows the evaluation and the
  drift signals that fired and waits for an Op or Admin: Approve → `deploy_new_model`; Reject or
  the timeout → `rollback_model` with the approver's reason.
* **deploy_new_model** moves `champion` to the candidate of the decision `evaluate_new_model`
  recorded in MLflow for this run (the old one keeps alias `previous`).
* **rollback_model** keeps (or restores) the backed-up champion and records the decision's (or
  the rejection's) reason on the candidate version.

Assets: the first task lists `drift` as an inlet (the retraining consumes drift in the asset
graph; the drift trigger still starts it), `deploy_new_model` and `rollback_model` produce
`champion` events (extra `version`, `candidate_version`, `decision`).

The tasks that register versions or move aliases (`backup_current_model`, `evaluate_new_model`,
`deploy_new_model`, `rollback_model`) run in the one-slot pool `model_registry`, shared by every
worker host. An MLflow outage fails them with their normal retries; it is never read as "no
champion".

Param `dataset` (default `$MLOPS_DATASET`, else `flights`; a drift-triggered run gets the
pipeline run's): the data set every task works on. `retrain_model` is mapped over the recipes of
every data set of `configs/` (the default one's first); a run skips those its data set lacks.

MLflow: Connection `mlflow_default` if defined, else env `MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from mlops_airflow import HEAVY_QUEUE, REGISTRY_POOL, RETRAINING_DAG_ID, WEEK_PATTERN, recipe_names
from mlops_airflow.approval import DeployApprovalOperator
from mlops_airflow.assets import CHAMPION, DRIFT
from mlops_airflow.config import HEAVY_RETRIES, HEAVY_RETRY_DELAY, HEAVY_TIMEOUT, default_args
from mlops_airflow.dataset import dataset_param

RECIPES = recipe_names()


@dag(
    dag_id=RETRAINING_DAG_ID,
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["mlops", "training", "retraining"],
    doc_md=__doc__,
    params={
        "dataset": dataset_param(),
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
        "recipes": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "enum": RECIPES},
            minItems=1,
            description="train only these recipes (default: all of configs/recipes.yaml)",
        ),
        "drift": Param(None, type=["null", "object"], description="drift result from ml_pipeline_dag"),
    },
)
def model_retraining_dag() -> None:
    """Retrain on request (drift or by hand) with every recipe, then deploy the best candidate
    or roll back."""

    @task(pool=REGISTRY_POOL, inlets=[DRIFT])
    def backup_current_model() -> dict[str, Any] | None:
        """Record the current champion as the backup, once per run."""
        from mlops_airflow.tasks import backup_champion_once

        return backup_champion_once(get_current_context())

    @task(queue=HEAVY_QUEUE, execution_timeout=HEAVY_TIMEOUT, retries=HEAVY_RETRIES,
          retry_delay=HEAVY_RETRY_DELAY)
    def retrain_model(recipe: str) -> dict[str, Any]:
        """Train one recipe's candidate on the data selected by the run conf."""
        from mlops_airflow.tasks import train_recipe

        return train_recipe(get_current_context(), recipe)

    @task(pool=REGISTRY_POOL, trigger_rule="none_failed_min_one_success")
    def evaluate_new_model(candidates: list[dict[str, Any]]) -> dict[str, Any]:
        """Keep the best recipe on the validation week; compare it with the champion."""
        from mlops_airflow.tasks import evaluate_recipes

        return evaluate_recipes(list(candidates), get_current_context())

    @task.branch
    def compare_models(evaluation: dict[str, Any]) -> str:
        """Deploy proposed: the approval gate (which then picks deploy_new_model or
        rollback_model); otherwise rollback_model."""
        return (["approve_new_model", "rollback_model"] if evaluation["decision"]["deploy"]
                else "rollback_model")

    @task(pool=REGISTRY_POOL, outlets=[CHAMPION])
    def deploy_new_model() -> dict[str, Any]:
        """Make the candidate the champion."""
        from mlops_airflow.tasks import deploy_retrained

        return deploy_retrained(get_current_context())

    @task(pool=REGISTRY_POOL, outlets=[CHAMPION], trigger_rule="none_failed_min_one_success")
    def rollback_model() -> dict[str, Any]:
        """Keep the backed-up champion and record why the candidate lost (or was rejected)."""
        from mlops_airflow.tasks import rollback_candidate

        return rollback_candidate(get_current_context())

    models = retrain_model.expand(recipe=RECIPES)
    backup_current_model() >> models
    approve = DeployApprovalOperator(task_id="approve_new_model", deploy_task_id="deploy_new_model",
                                     reject_task_id="rollback_model", drift_from="conf",
                                     evaluate_task_id="evaluate_new_model")
    rollback = rollback_model()
    compare_models(evaluate_new_model(models)) >> [approve, rollback]
    approve >> [deploy_new_model(), rollback]


model_retraining_dag()
