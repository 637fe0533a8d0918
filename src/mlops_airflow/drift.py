"""``check_drift``: a TriggerDagRunOperator that first measures the three drift signals (data,
model, label; ``mlops.drift``) and triggers the retraining DAG only when one of them fires.

Airflow 3 runs the trigger through the Execution API (the task raises DagRunTriggerException and
the task runner asks the API server to create the run), so it works unchanged on Celery workers,
which have no metadata-database access.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

from mlops_airflow import RETRAINING_DAG_ID

log = logging.getLogger("mlops_airflow")

DRIFT_XCOM_KEY = "drift"


def retraining_run_id(source_run_id: str) -> str:
    """The run id of the retraining run triggered by one pipeline run (deterministic, so a cleared
    ``check_drift`` cannot trigger a second retraining run)."""
    return f"drift__{source_run_id}"


class DriftTriggerOperator(TriggerDagRunOperator):
    """Measure drift on the newest batch of this run; trigger ``trigger_dag_id`` only if a signal
    fired (thresholds from the Variables ``mlops_drift_share``, ``mlops_auc_drop``,
    ``mlops_label_shift``).

    :param evaluation: the upstream ``evaluate`` result (templated/XComArg); its ``batches`` list
        names the weeks of this run, the newest one is checked.
    The drift result is pushed as XCom ``drift`` and, when drift is found, sent as
    ``conf["drift"]`` of the triggered run.
    """

    template_fields: Sequence[str] = (*TriggerDagRunOperator.template_fields, "evaluation")

    def __init__(
        self,
        *,
        evaluation: Any = None,
        trigger_dag_id: str = RETRAINING_DAG_ID,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("skip_when_already_exists", True)
        kwargs.setdefault("logical_date", None)
        super().__init__(trigger_dag_id=trigger_dag_id, **kwargs)
        self.evaluation = evaluation

    def execute(self, context: Any) -> Any:
        """Run drift detection on the run's data set, then hand over to TriggerDagRunOperator
        when drift is detected (the triggered run's conf carries the data set)."""
        from mlops_airflow.dataset import run_dataset, run_dataset_name

        with run_dataset(context):
            return self._check(context, run_dataset_name(context))

    def _check(self, context: Any, dataset: str) -> Any:
        from mlops_airflow.config import configure_mlflow, configure_predictions_db, threshold_kwargs
        from mlops_airflow.tasks import fail_fast

        configure_mlflow()
        configure_predictions_db()  # the model signal then uses what was served, when it can
        from mlops.drift import detect_drift

        from mlops_airflow import assets
        from mlops_airflow.tasks import accepted_weeks

        # The weeks of this run, rebuilt from its claim (not from the evaluation's XCom).
        weeks = accepted_weeks(context)
        kwargs: dict[str, Any] = {"week": max(weeks) if weeks else None,
                                  **threshold_kwargs("drift")}
        with fail_fast():
            result = detect_drift(**kwargs)
        context["ti"].xcom_push(key=DRIFT_XCOM_KEY, value=result)
        if not result["drift_detected"]:
            log.info("No drift signal fired on %s: %s", result["week"], result["summary"])
            # A drift event only when a signal fired: the outlet stays declared for the asset
            # graph, but this success reports none.
            self.outlets = []
            return result
        assets.drift_event(context["outlet_events"], result)
        dag_run = context["dag_run"]
        self.conf = {
            **(self.conf or {}),
            "drift": result,
            "dataset": dataset,
            "triggered_by": {"dag_id": dag_run.dag_id, "run_id": dag_run.run_id},
        }
        self.trigger_run_id = retraining_run_id(dag_run.run_id)
        log.warning(
            "Drift on %s (%s fired: %s): triggering %s run %s",
            result["week"], ", ".join(result["fired"]), result["summary"],
            self.trigger_dag_id, self.trigger_run_id,
        )
        return super().execute(context)
