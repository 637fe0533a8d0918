"""Task bodies shared by the DAG files. Every mlops import happens inside a function: this module
is imported only when a task runs, never while a DAG file is parsed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from mlops_airflow.config import configure_mlflow, threshold_kwargs
from mlops_airflow.dataset import in_run_dataset
from mlops_airflow.runstate import run_once

log = logging.getLogger("mlops_airflow")

APPROVAL_TASK_RETRAINING = "approve_new_model"


def _fail(message: str) -> None:
    """Fail the task without retries: the input is wrong, retrying cannot help."""
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """Turn the mlops package's deliberate errors (bad batch, bad conf, nothing to roll back to)
    into an immediate task failure: they are deterministic, so retries would only repeat them.
    Anything else keeps the normal retries: an MLflow outage raises MlflowException (the mlops
    package reads only RESOURCE_DOES_NOT_EXIST as "absent" and never wraps other MLflow errors
    in an MlopsError), a worker or database problem its own exception."""
    from mlops.errors import MlopsError

    try:
        yield
    except MlopsError as err:
        _fail(f"{type(err).__name__}: {err}")


def training_job(context: Any) -> str:
    """The task instance a training belongs to (``dag/run/task/map index``): its MLflow runs are
    tagged with it, so a retry marks a run its killed predecessor left RUNNING as failed."""
    ti = context["ti"]
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{getattr(ti, 'map_index', -1)}"


def run_key(ti: Any) -> str:
    """``dag_id/run_id``: whom a training run and a recorded decision belong to."""
    return f"{ti.dag_id}/{ti.run_id}"


def _claimed(ti: Any) -> list[str]:
    from mlops.batches import new_batches

    return run_once(ti.dag_id, ti.run_id, "new_batches", lambda: sorted(new_batches()))


def claimed_weeks(context: Any) -> list[str]:
    """The weeks this DAG run claimed (``check_new_data``'s memo, kept in the data folder, not in
    an editable XCom)."""
    from mlops.util import week_of

    return sorted({week_of(p) for p in _claimed(context["ti"])})


def accepted_weeks(context: Any) -> list[str]:
    """The claimed weeks whose batch is in ``accepted/`` (rebuilt from week ids, never taken
    from an XCom)."""
    from mlops.batches import accepted_path

    return [w for w in claimed_weeks(context) if accepted_path(w).is_file()]


@in_run_dataset
def claim_new_batches(context: Any) -> list[str]:
    """Paths of the landing batches not yet processed, memoised for this DAG run."""
    ti = context["ti"]
    batches = _claimed(ti)
    if batches:
        log.info("New batches: %s", ", ".join(batches))
    else:
        log.info("No new batch since the last run: skipping the rest of the run")
        push_run_success(ti.dag_id)  # the run ends here, successfully
    return batches


def push_run_success(dag_id: str) -> None:
    """Record that a run of ``dag_id`` reached its end successfully (Pushgateway job
    ``mlops_dag_run``; the "no successful run for too long" alert reads it)."""
    from mlops import metrics

    metrics.push("dag_run", [], grouping={"dag_id": dag_id})


@in_run_dataset
def validate_new_batches(context: Any) -> dict[str, Any]:
    """Validate and accept each batch this run claimed; bad ones end in quarantine and in the
    result. The paths are rebuilt from the claimed week ids (``landing/<week>.csv``).

    Fails without retries when no batch passed (nothing to train on). Rejected batches are added
    to the watermark at once (they are handled); accepted ones after training. One
    ``accepted_batches`` asset event per accepted week (extra ``week``).
    """
    from mlops.batches import landing_path, mark_processed
    from mlops.errors import BatchValidationError
    from mlops.validate import accept_batch, validate_batch

    thresholds = threshold_kwargs("validate")
    accepted: list[str] = []
    rejected: list[dict[str, Any]] = []
    for path in (str(landing_path(w)) for w in claimed_weeks(context)):
        try:
            validate_batch(path, **thresholds)
        except BatchValidationError as err:
            log.error("Batch rejected: %s", err)
            rejected.append(
                {"batch": err.path, "check": err.check, "columns": err.columns, "line": err.line,
                 "quarantined_to": err.quarantined_to, "error": str(err)}
            )
            continue
        with fail_fast():
            accepted.append(accept_batch(path))
    if rejected:
        mark_processed([r["batch"] for r in rejected])
    if not accepted:
        _fail(
            "no new batch passed validation: "
            + "; ".join(r["error"] for r in rejected)
        )
    from mlops.util import week_of

    from mlops_airflow import assets

    weeks = sorted({week_of(p) for p in accepted})
    assets.accepted_events(context["outlet_events"], weeks)
    return {"accepted": accepted, "rejected": rejected, "weeks": weeks}


@in_run_dataset
def train_and_mark(table: dict[str, Any], context: Any) -> dict[str, Any]:
    """Train the weekly recipe on the accepted weeks (newest held out), then add this run's
    accepted weeks (rebuilt from its claim, not from the XCom) to the watermark: from now on they
    count as processed. The model is logged and tagged as trained for this run, not yet
    registered: registering is the job of ``evaluate`` (pool ``model_registry``)."""
    configure_mlflow()
    from mlops.batches import accepted_path, mark_processed
    from mlops.train import mark_trained_for, train_model

    ti = context["ti"]
    weeks = accepted_weeks(context)
    with fail_fast():
        result = train_model(register=False, job=training_job(context))
        mark_trained_for(result["run_id"], ti.dag_id, ti.run_id)
        if weeks:
            mark_processed(weeks)
    return {**result, "batches": [str(accepted_path(w)) for w in weeks]}


@in_run_dataset
def evaluate_candidate(model: dict[str, Any], context: Any) -> dict[str, Any]:
    """Register the candidate this run trained (rebuilt from its MLflow run, which must be tagged
    as trained for this run: an edited ``run_id`` is refused) once per fingerprint, evaluate it
    against the champion on its holdout week and record the promotion decision on the version
    in MLflow (``result["decision"]``; margin from ``mlops_deploy_margin``). The deploying task
    acts on that record only. Runs in the ``model_registry`` pool."""
    configure_mlflow()
    from mlops.promotion import evaluate_candidate as evaluate
    from mlops.promotion import record_decision
    from mlops.train import register_candidate, trained_run

    ti = context["ti"]
    with fail_fast():
        trained = trained_run(str(model["run_id"]), ti.dag_id, ti.run_id)
        version = register_candidate(trained)["version"]
        result = evaluate(version, holdout_week=trained["holdout_week"],
                          **threshold_kwargs("deploy"))
        result = {**result, "run_id": trained["run_id"]}
        record_decision(result, run_key(ti))
    return result


@in_run_dataset
def deploy_if_better(evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """Deploy the candidate when the decision this run's ``evaluate`` recorded in MLflow says so,
    else skip the task. The XCom only tells whether an evaluation ran at all."""
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowSkipException

    context = get_current_context()
    dag_id = context["ti"].dag_id
    if not evaluation:
        push_run_success(dag_id)
        raise AirflowSkipException("no evaluation result: nothing to deploy")
    result = deploy_candidate(context)
    push_run_success(dag_id)
    if not result["acted"]:
        raise AirflowSkipException(f"keeping the champion: {result['reason']}")
    return result


def deploy_candidate(context: Any) -> dict[str, Any]:
    """Move ``champion`` to the candidate of the decision this run recorded in MLflow
    (idempotent; evaluated again first if the champion changed since the decision). Any MLflow
    error propagates: the task is retried and nothing is deployed meanwhile. A ``champion``
    asset event names the version and the decision."""
    configure_mlflow()
    from mlops.promotion import deploy_recorded

    from mlops_airflow import assets

    with fail_fast():
        result = deploy_recorded(run_key(context["ti"]), **threshold_kwargs("deploy"))
    if result["acted"]:
        assets.champion_event(context["outlet_events"], result, "deploy" if result["deployed"] else "kept")
    return result


def _push_retraining(deployed: bool, candidate: str) -> None:
    """The retraining's outcome (Pushgateway job ``mlops_retraining``)."""
    from mlops import metrics

    metrics.push("retraining", [metrics.Sample("mlops_retraining_deployed", 1 if deployed else 0),
                                metrics.Sample("mlops_retraining_candidate_version", float(candidate))])


@in_run_dataset
def deploy_retrained(context: Any) -> dict[str, Any]:
    """``deploy_candidate`` for model_retraining_dag, recording the retraining's outcome."""
    result = deploy_candidate(context)
    if not result["acted"]:
        _fail(f"nothing to deploy: {result['reason']}")
    _push_retraining(bool(result.get("deployed")), str(result["version"]))
    return result


@in_run_dataset
def rollback_candidate(context: Any) -> dict[str, Any]:
    """Restore the backed-up champion and record on the candidate version why it lost (the
    decision's reason, or the approver's rejection).

    The candidate is the one of the decision this run's evaluation recorded in MLflow. When the
    champion never moved (the usual case: the candidate was not deployed) the alias stays where
    it is and only the candidate is tagged ``rejected_reason``.
    """
    configure_mlflow()
    from mlops.promotion import recorded_decision
    from mlops.registry import rollback

    from mlops_airflow import assets
    from mlops_airflow.approval import APPROVAL_XCOM_KEY

    ti = context["ti"]
    with fail_fast():
        decision = recorded_decision(run_key(ti))
    if decision is None:
        _fail(f"no decision recorded by {run_key(ti)}: nothing to roll back")
    approval = ti.xcom_pull(task_ids=APPROVAL_TASK_RETRAINING, key=APPROVAL_XCOM_KEY) or {}
    reason = (approval.get("reason") if approval.get("approved") is False else None) or decision["reason"]
    candidate = str(decision["version"])
    log.warning("Rolling back: %s", reason)
    with fail_fast():
        result = rollback(reason, candidate=candidate)
    _push_retraining(False, candidate)
    result = {**result, "reason": reason, "candidate_version": candidate}
    assets.champion_event(context["outlet_events"],
                          {"champion_version": result.get("champion_version"), "candidate_version": candidate,
                           "reason": reason}, "rollback")
    return result


@in_run_dataset
def backup_champion_once(context: Any) -> dict[str, Any] | None:
    """backup_champion() on the first attempt of this run; the same answer on any rerun."""
    configure_mlflow()
    from mlops.registry import backup_champion

    ti = context["ti"]
    with fail_fast():
        return run_once(ti.dag_id, ti.run_id, "backup", backup_champion)


@in_run_dataset
def train_recipe(context: Any, recipe: str) -> dict[str, Any]:
    """Train one recipe on the data selection of the retraining run's conf (``train_weeks``,
    ``holdout_week``, ``max_rows``, ``shuffle_labels`` apply to every recipe) and score it on
    its validation week. Skipped when the conf's ``recipes`` leaves it out. Logged, not
    registered (``evaluate_new_model`` registers the chosen one)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from mlops.config import load_recipes, recipes_path

    params = context["params"]
    chosen = params.get("recipes")
    with fail_fast():
        known = list(load_recipes())
    if chosen:
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            _fail(f"conf recipes {unknown} are not in the recipes file (known: {known})")
        if recipe not in chosen:
            raise AirflowSkipException(f"recipe {recipe} not in this run's conf recipes {chosen}")
    if recipe not in known:
        raise AirflowSkipException(f"recipe {recipe} is not one of this run's data set ({recipes_path()})")
    configure_mlflow()
    from mlops.train import mark_trained_for, train_model

    ti = context["ti"]
    max_rows = params.get("max_rows")
    with fail_fast():
        result = train_model(
            train_weeks=params.get("train_weeks") or None,
            holdout_week=params.get("holdout_week") or None,
            max_rows=int(max_rows) if max_rows else None,
            shuffle_labels=bool(params.get("shuffle_labels")),
            recipe=recipe, validate=True, register=False, job=training_job(context),
        )
        mark_trained_for(result["run_id"], ti.dag_id, ti.run_id)
    return result


def candidate_summary(trained: dict[str, Any]) -> dict[str, Any]:
    """Recipe, run id and scores of one retraining candidate (for the XCom and the demo)."""
    validation = trained.get("validation") or {}
    return {"recipe": trained["recipe"], "run_id": trained["run_id"],
            "validation_week": validation.get("week"),
            "validation_roc_auc": (validation.get("metrics") or {}).get("roc_auc"),
            "holdout_week": trained["holdout_week"],
            "holdout_roc_auc": trained["metrics"]["roc_auc"],
            "train_weeks": len(trained["train_weeks"]), "reused": trained.get("reused")}


@in_run_dataset
def evaluate_recipes(candidates: list[dict[str, Any]], context: Any) -> dict[str, Any]:
    """Choose the recipe with the best validation score, register its candidate and evaluate it
    against the champion on the holdout week (``result["decision"]``, recorded in MLflow). The
    candidates are rebuilt from their MLflow runs (each tagged as trained for this run). Runs in
    the ``model_registry`` pool."""
    configure_mlflow()
    from mlops.promotion import select_best
    from mlops.train import trained_run

    ti = context["ti"]
    with fail_fast():
        # "reused" only informs (the summary); everything else comes from MLflow.
        trained = [{**trained_run(str(c["run_id"]), ti.dag_id, ti.run_id), "reused": c.get("reused")}
                   for c in candidates if c]
    if not trained:
        _fail("no recipe produced a candidate")
    best = select_best(trained)
    log.info("Recipes by validation ROC AUC: %s", ", ".join(
        f"{c['recipe']} {c['validation_roc_auc']}" for c in map(candidate_summary, trained)))
    evaluation = evaluate_candidate(best, context)
    return {**evaluation, "recipe": best["recipe"],
            "candidates": [candidate_summary(c) for c in trained]}


@in_run_dataset
def preprocess_accepted(context: Any) -> dict[str, Any]:
    """Rebuild the training table (``dvc repro``) now that new batches are accepted; a
    ``training_table`` asset event names the weeks."""
    from mlops.batches import accepted_path
    from mlops.preprocess import run_preprocess

    from mlops_airflow import assets

    weeks = accepted_weeks(context)
    with fail_fast():
        result = run_preprocess()
    assets.table_event(context["outlet_events"], weeks)
    return {**result, "batches": [str(accepted_path(w)) for w in weeks]}
