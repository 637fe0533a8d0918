"""ML results for Prometheus, pushed to its Pushgateway (the ML steps are batch jobs).

Each step pushes its figures as gauges under a stable grouping key (``job`` = one of
:data:`JOBS`, plus ``recipe`` for a training run), with ``mlops_last_success_timestamp_seconds``,
to ``$MLOPS_PUSHGATEWAY_URL`` (unset: metrics are off). Prometheus scrapes the Pushgateway with
``honor_labels``, so the series keep these ``job`` labels. With ``MLOPS_PUSHGATEWAY_USER`` (and
``MLOPS_PUSHGATEWAY_PASSWORD``) set, pushes log in with HTTP basic auth. Names and grouping keys are an interface:
docs/architecture.md ("ML metrics") lists them.

A push that fails (no gateway, refused, a timeout, an HTTP error) is logged and returns False: it
never fails a step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from mlops.config import pushgateway_login, pushgateway_url

log = logging.getLogger(__name__)

# One grouping-key `job` per kind of result (the step that pushes it: docs/architecture.md).
JOBS = {
    "validation": "mlops_validation",
    "training": "mlops_training",
    "evaluation": "mlops_evaluation",
    "drift": "mlops_drift",
    "deployment": "mlops_deployment",
    "rollback": "mlops_rollback",
    "champion": "mlops_champion",
    "retraining": "mlops_retraining",
    "dag_run": "mlops_dag_run",
    "serving_monitor": "serving_monitor",
}
LAST_SUCCESS = "mlops_last_success_timestamp_seconds"
# Seconds a push may take before it is given up (a task must never hang on its metrics).
PUSH_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Sample:
    """One gauge value: its metric name, value and labels (beyond the grouping key); ``help``
    overrides the metric's HELP of :data:`HELP` (e.g. one built from the drift signals' table)."""

    name: str
    value: float | None
    labels: dict[str, str] = field(default_factory=dict)
    help: str | None = None


def push(kind: str, samples: Iterable[Sample], grouping: dict[str, str] | None = None,
         replace: bool = True, success: bool = True) -> bool:
    """Push ``samples`` as gauges under the grouping key ``job=JOBS[kind]`` (+ ``grouping``).

    ``replace``: PUT, the group then holds exactly these metrics; otherwise POST, which replaces
    only the metrics of these names (the others pushed earlier to the group stay). ``success``
    adds ``mlops_last_success_timestamp_seconds`` (now). True when the Pushgateway accepted it.
    A data set other than the flights (the active one, mlops.dataset) adds the grouping label
    ``dataset``: two data sets never overwrite each other's results.
    """
    url = pushgateway_url()
    if url is None:
        return False
    job = JOBS[kind]
    grouping = {**(grouping or {}), **dataset_grouping()}
    values = [s for s in samples if s.value is not None]
    if success:
        values.append(Sample(LAST_SUCCESS, time.time()))
    try:
        from prometheus_client import CollectorRegistry, Gauge
        from prometheus_client.exposition import basic_auth_handler, default_handler, push_to_gateway, pushadd_to_gateway

        registry = CollectorRegistry()
        gauges: dict[str, Gauge] = {}
        for sample in values:
            gauge = gauges.get(sample.name)
            if gauge is None:
                gauge = Gauge(sample.name, sample.help or _help(sample.name), sorted(sample.labels),
                              registry=registry)
                gauges[sample.name] = gauge
            (gauge.labels(**sample.labels) if sample.labels else gauge).set(float(sample.value))
        send = push_to_gateway if replace else pushadd_to_gateway
        login = pushgateway_login()

        def handler(url, method, timeout, headers, data):  # noqa: ANN001, ANN202 (prometheus_client's signature)
            if login is None:
                return default_handler(url, method, timeout, headers, data)
            return basic_auth_handler(url, method, timeout, headers, data, *login)

        send(url, job=job, registry=registry, grouping_key=grouping or {}, timeout=PUSH_TIMEOUT_S, handler=handler)
        return True
    except Exception as exc:  # metrics are best effort: an outage of the gateway never fails a step
        log.warning("metrics: push of %s (%s) to %s failed: %s", job, ", ".join(sorted({s.name for s in values})),
                    url, exc)
        return False


def dataset_grouping() -> dict[str, str]:
    """``{"dataset": NAME}`` while a data set other than the flights is active, else nothing (the
    flights' grouping keys stay those of a single data set)."""
    from mlops.config import ACTIVE_DATASET

    dataset = ACTIVE_DATASET.get()
    return {"dataset": dataset.name} if dataset is not None and not dataset.is_default else {}


def _help(name: str) -> str:
    return HELP.get(name, name.replace("_", " "))


# The HELP text Prometheus shows; one entry per pushed metric name (docs/architecture.md).
HELP = {
    LAST_SUCCESS: "Unix time of the job's last successful run.",
    "mlops_validation_batch_rejected": "1 when the latest validated batch was rejected, else 0.",
    "mlops_validation_quarantined_batches": "Batch files in quarantine/.",
    "mlops_validation_last_rejection_timestamp_seconds": "Unix time of the latest rejected batch.",
    "mlops_validation_last_rejection_info": "The latest rejected batch (week) and the check it failed.",
    "mlops_training_holdout_roc_auc": "ROC AUC of the latest training run of the recipe on its holdout week.",
    "mlops_training_validation_roc_auc": "ROC AUC of the recipe on its validation week (retraining).",
    "mlops_training_rows": "Training rows of the latest training run of the recipe.",
    "mlops_evaluation_candidate_version": "Registry version of the latest evaluated candidate.",
    "mlops_evaluation_candidate_roc_auc": "ROC AUC of the latest candidate on its holdout week.",
    "mlops_evaluation_champion_roc_auc": "ROC AUC of the champion on the same holdout rows.",
    "mlops_evaluation_deploy": "1 when the promotion rule decided to deploy the candidate, else 0.",
    "mlops_drift_detected": "1 when a drift signal fired on the latest checked batch, else 0.",
    "mlops_drift_share": "Share of drifted decision columns in the latest checked batch (data signal).",
    "mlops_drift_signal_fired": "1 when the signal fired on the latest checked batch, else 0.",
    # mlops.drift pushes it with the HELP built from its signal table (mlops.drift_signals).
    "mlops_drift_signal_value": "Value the signal compares with its threshold.",
    "mlops_drift_signal_threshold": "Threshold of the signal.",
    "mlops_drift_champion_roc_auc": "ROC AUC of the champion on the latest checked batch.",
    "mlops_deployment_candidate_version": "Registry version the latest deployment acted on.",
    "mlops_deployment_deployed": "1 when the latest deployment moved the champion, else 0.",
    "mlops_rollback_rolled_back": "1 when the latest rollback moved the champion back, else 0.",
    "mlops_rollback_candidate_version": "Registry version of the candidate the latest rollback rejected.",
    "mlops_champion_version": "Registry version behind the alias champion.",
    "mlops_champion_holdout_roc_auc": "ROC AUC of the champion on its own holdout week at training time.",
    "mlops_retraining_deployed": "1 when the latest retraining deployed its candidate, 0 when it rolled back.",
    "mlops_retraining_candidate_version": "Registry version of the latest retraining's candidate.",
    "mlops_served_week_rows": "Predictions logged for rows of the latest monitored week.",
    "mlops_served_roc_auc": "Realised ROC AUC of what the version served for the latest monitored week.",
    "mlops_served_rows": "Predictions the version served for rows of the latest monitored week.",
    "mlops_served_labelled_rows": "Distinct served rows of the version joined with a label.",
    "mlops_served_score_drifted": "1 when the version's served scores drifted from the champion's "
                                  "holdout scores (Evidently), else 0.",
    "mlops_served_score_drift_value": "Evidently's drift statistic of the version's served scores "
                                      "against the champion's holdout scores.",
}
