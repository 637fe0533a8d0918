"""Task bodies of data_validation_dag: which batches a run covers, and one check on one batch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlops_airflow.dataset import in_run_dataset

log = logging.getLogger("mlops_airflow")


@in_run_dataset
def batches_for_run(context: Any) -> list[str]:
    """The weeks this run checks: conf ``weeks`` if given, else the data interval's arrivals.

    No batch: the task is skipped (and with it the whole run), a normal outcome.
    """
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from mlops import batches

    weeks = context["params"].get("weeks")
    if weeks:
        paths = [batches.landing_path(week) for week in weeks]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise AirflowFailException(f"requested batches are not in landing: {', '.join(missing)}")
        return list(weeks)
    start = context["data_interval_start"]
    end = context["data_interval_end"]
    arrived = batches.arrived_between(start, end)
    if not arrived:
        raise AirflowSkipException(
            f"no batch arrived in {batches.landing_dir()} between {start} and {end}")
    log.info("Batches that arrived between %s and %s: %s", start, end,
             ", ".join(str(p) for p in arrived))
    return [Path(p).stem for p in arrived]


@in_run_dataset
def run_check(week: str, check: str) -> dict[str, Any]:
    """Run one validation check (``mlops.validate`` names: schema, quality, distribution,
    anomalies) on one batch; fail the task at once, naming file, check and columns, if it fails.

    A failing check quarantines the batch. The three parallel checks may find the batch already
    moved by a sibling: they then check the quarantined copy, so each still reports its verdict.
    """
    from mlops import batches
    from mlops.errors import BatchValidationError
    from mlops.validate import validate_batch

    from mlops_airflow.config import threshold_kwargs
    from mlops_airflow.tasks import _fail

    thresholds = threshold_kwargs("validate")
    # The distribution task writes Evidently's report into validation.html for the operators.
    html = True if check == "distribution" else None
    for attempt in (1, 2):
        path = batches.locate(week)
        try:
            result = validate_batch(str(path), checks=[check], html=html, **thresholds)
        except BatchValidationError as err:
            if err.check == "readable" and attempt == 1:
                continue  # moved to quarantine by a sibling between locate and read
            log.error("Batch %s failed check %s: %s", week, check, err)
            _fail(f"{err} (report: {err.report})")
        else:
            for warning in result.get("warnings") or []:
                log.warning("Batch %s, check %s: %s", week, check, warning)
            return {
                "batch": week,
                "check": check,
                "path": result["path"],
                "status": result["status"],
                "report_status": result.get("report_status"),
                "warnings": result.get("warnings") or [],
                "report_json": result.get("report_json"),
            }
    raise AssertionError("unreachable")
