"""Task body of ``served_monitoring_dag``: monitor what the prediction service served for the
weeks whose labelled batch was just accepted (``mlops.monitoring``)."""

from __future__ import annotations

import logging
import re
from typing import Any

from mlops_airflow import WEEK_PATTERN
from mlops_airflow.dataset import in_run_dataset, run_dataset_name

log = logging.getLogger("mlops_airflow")


def weeks_of_run(context: Any) -> list[str]:
    """The weeks to monitor: the run's ``week`` param when given, else the ``week`` (or
    ``weeks``) of every triggering ``accepted_batches`` event of the run's data set (an event's
    extra ``dataset``, the flights without one); empty when neither names one (the task then
    monitors the newest accepted batch). Skips the task when every triggering event belongs to
    another data set."""
    from airflow.sdk.exceptions import AirflowSkipException

    from mlops_airflow.dataset import DEFAULT
    from mlops_airflow.assets import ACCEPTED_BATCHES

    given = (context.get("params") or {}).get("week")
    if given:
        return [given]
    try:
        events = list(context["triggering_asset_events"][ACCEPTED_BATCHES])
    except (KeyError, TypeError):
        events = []
    weeks: set[str] = set()
    ours = run_dataset_name(context)
    mine = [e for e in events if str((getattr(e, "extra", None) or {}).get("dataset") or DEFAULT) == ours]
    if events and not mine:
        raise AirflowSkipException(f"every triggering accepted_batches event is of another data set than {ours}")
    for event in mine:
        extra = getattr(event, "extra", None) or {}
        for week in [extra.get("week"), *(extra.get("weeks") or [])]:
            if isinstance(week, str) and re.fullmatch(WEEK_PATTERN, week):
                weeks.add(week)
            elif week is not None:
                log.warning("Ignoring an accepted_batches event with week %r", week)
    return sorted(weeks)


@in_run_dataset
def monitor_run(context: Any) -> list[dict[str, Any]]:
    """Monitor each week of the run; skip (not fail) when no prediction log is configured."""
    from airflow.sdk.exceptions import AirflowSkipException

    from mlops_airflow.config import configure_mlflow, configure_predictions_db
    from mlops_airflow.tasks import fail_fast

    configure_mlflow()
    if configure_predictions_db() is None:
        raise AirflowSkipException("no prediction log: neither the Connection predictions_db nor "
                                   "MLOPS_PREDICTIONS_DB_URL is set")
    from mlops.monitoring import monitor_served

    weeks = weeks_of_run(context) or [None]
    results = []
    with fail_fast():
        for week in weeks:
            result = monitor_served(week=week)
            log.info("Served for %s: %s", result["week"], {
                v: (r["rows_served"], r["rows_labelled"], r["roc_auc"])
                for v, r in result["versions"].items()} or "nothing")
            results.append(result)
    return results
