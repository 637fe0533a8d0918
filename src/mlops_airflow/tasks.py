"""Task bodies shared by the DAG files. Every mlops import happens inside a function: this module
is imported only when a task runs, never while a DAG file is parsed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from mlops_airflow.config import configure_mlflow, threshold_kwargs
from mlops_airflow.runstate import run_once

log = logging.getLogger("mlops_airflow")


def _fail(message: str) -> None:
    """Fail the task without retries: the input is wrong, retrying cannot help."""
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """Turn the mlops package's deliberate errors (bad batch, bad conf, nothing to roll back to)
    into an immediate task failure: they are deterministic, so retries would only repeat them.
    Anything else (MLflow unreachable, worker trouble) keeps the normal retries."""
    from mlops.errors import MlopsError

    try:
        yield
    except MlopsError as err:
        _fail(f"{type(err).__name__}: {err}")


def claim_new_batches(context: Any) -> list[str]:
    """Paths of the landing batches not yet processed, memoised for this DAG run."""
    from mlops.batches import new_batches

    ti = context["ti"]
    batches = run_once(ti.dag_id, ti.run_id, "new_batches", lambda: sorted(new_batches()))
    if batches:
        log.info("New batches: %s", ", ".join(batches))
    else:
        log.info("No new batch since the last run: skipping the rest of the run")
    return batches


def validate_new_batches(batches: list[str]) -> dict[str, Any]:
    """Validate and accept each new batch; bad ones end in quarantine and in the result.

    Fails without retries when no batch passed (nothing to train on). Rejected batches are added
    to the watermark at once (they are handled); accepted ones after training.
    """
    from mlops.batches import mark_processed
    from mlops.errors import BatchValidationError
    from mlops.validate import accept_batch, validate_batch

    thresholds = threshold_kwargs("validate")
    accepted: list[str] = []
    rejected: list[dict[str, Any]] = []
    for path in batches:
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
    return {"accepted": accepted, "rejected": rejected}


def train_and_mark(table: dict[str, Any]) -> dict[str, Any]:
    """Train on the accepted weeks (newest held out), then add this run's batches to the
    watermark: from now on they count as processed."""
    configure_mlflow()
    from mlops.batches import mark_processed
    from mlops.train import train_model

    with fail_fast():
        result = train_model()
        mark_processed(table["batches"])
    return {**result, "batches": table["batches"]}


def evaluate_candidate(model: dict[str, Any]) -> dict[str, Any]:
    """evaluate_model on the candidate's holdout week, margin from ``mlops_deploy_margin``."""
    configure_mlflow()
    from mlops.evaluate import evaluate_model

    kwargs: dict[str, Any] = {"holdout_week": model.get("holdout_week"), **threshold_kwargs("deploy")}
    with fail_fast():
        result = evaluate_model(str(model["model_version"]), **kwargs)
    return {**result, "model_version": str(model["model_version"])}


def deploy_if_better(evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """Deploy the evaluated candidate when it beats the champion, else skip the task."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not evaluation:
        raise AirflowSkipException("no evaluation result: nothing to deploy")
    if not evaluation.get("beats_champion"):
        raise AirflowSkipException(
            f"candidate v{evaluation.get('model_version')} does not beat champion "
            f"v{evaluation.get('champion_version')}: keeping the champion"
        )
    return deploy_candidate(evaluation)


def deploy_candidate(evaluation: dict[str, Any]) -> dict[str, Any]:
    """Move ``champion`` to the evaluated candidate (idempotent in mlops.registry)."""
    configure_mlflow()
    from mlops.registry import deploy

    kwargs: dict[str, Any] = {"evaluation": evaluation, **threshold_kwargs("deploy")}
    with fail_fast():
        return deploy(str(evaluation["model_version"]), **kwargs)


def rollback_reason(evaluation: dict[str, Any]) -> str:
    """One sentence saying why the candidate was rejected."""
    cand = (evaluation.get("metrics") or {}).get("roc_auc")
    champ = (evaluation.get("champion_metrics") or {}).get("roc_auc")
    fmt = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "n/a"  # noqa: E731
    return (
        f"candidate v{evaluation.get('model_version')} (roc_auc {fmt(cand)}) did not beat "
        f"champion v{evaluation.get('champion_version')} (roc_auc {fmt(champ)}) by margin "
        f"{evaluation.get('margin')}"
    )


def rollback_candidate(evaluation: dict[str, Any]) -> dict[str, Any]:
    """Restore the backed-up champion and record on the candidate version why it lost.

    When the champion never moved (the usual case: the candidate was not deployed) the alias
    stays where it is and only the candidate is tagged ``rejected_reason``.
    """
    configure_mlflow()
    from mlops.registry import rollback

    reason = rollback_reason(evaluation)
    log.warning("Rolling back: %s", reason)
    with fail_fast():
        result = rollback(reason, candidate=str(evaluation["model_version"]))
    return {**result, "reason": reason, "candidate_version": str(evaluation["model_version"])}


def backup_champion_once(context: Any) -> dict[str, Any] | None:
    """backup_champion() on the first attempt of this run; the same answer on any rerun."""
    configure_mlflow()
    from mlops.registry import backup_champion

    ti = context["ti"]
    with fail_fast():
        return run_once(ti.dag_id, ti.run_id, "backup", backup_champion)


def train_from_params(params: Any) -> dict[str, Any]:
    """train_model with the data selection of the retraining run's conf."""
    configure_mlflow()
    from mlops.train import train_model

    max_rows = params.get("max_rows")
    with fail_fast():
        return train_model(
            train_weeks=params.get("train_weeks") or None,
            holdout_week=params.get("holdout_week") or None,
            max_rows=int(max_rows) if max_rows else None,
            shuffle_labels=bool(params.get("shuffle_labels")),
        )


def preprocess_accepted(validated: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the training table (``dvc repro``) now that new batches are accepted."""
    from mlops.preprocess import run_preprocess

    with fail_fast():
        result = run_preprocess()
    return {**result, "batches": validated["accepted"]}
