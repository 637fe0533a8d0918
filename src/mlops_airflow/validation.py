"""Task bodies of data_validation_dag: which batches a run covers, and one check on one batch."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlops_airflow.runstate import data_dir

log = logging.getLogger("mlops_airflow")


def landing_dir() -> Path:
    """``$MLOPS_DATA_DIR/landing``: where replayed weekly batches arrive."""
    return data_dir() / "landing"


def arrived_between(start: datetime, end: datetime) -> list[str]:
    """Landing batches whose file modification time lies in ``[start, end)``, sorted."""
    folder = landing_dir()
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("*.csv"):
        mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
        if start <= mtime < end:
            found.append(str(path))
    return sorted(found)


def batches_for_run(context: Any) -> list[str]:
    """The weeks this run checks: conf ``weeks`` if given, else the data interval's arrivals.

    No batch: the task is skipped (and with it the whole run), a normal outcome.
    """
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    weeks = context["params"].get("weeks")
    if weeks:
        paths = [landing_dir() / f"{week}.csv" for week in weeks]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise AirflowFailException(f"requested batches are not in landing: {', '.join(missing)}")
        return list(weeks)
    start = context["data_interval_start"]
    end = context["data_interval_end"]
    batches = arrived_between(start, end)
    if not batches:
        raise AirflowSkipException(f"no batch arrived in {landing_dir()} between {start} and {end}")
    log.info("Batches that arrived between %s and %s: %s", start, end, ", ".join(batches))
    return [Path(b).stem for b in batches]


def locate_batch(week: str) -> Path:
    """Where a batch is now: ``landing/<week>.csv``, or ``quarantine/<week>.csv`` when a check
    running in parallel has already rejected it (validating a quarantined file never moves it)."""
    quarantined = data_dir() / "quarantine" / f"{week}.csv"
    landing = landing_dir() / f"{week}.csv"
    return landing if landing.exists() or not quarantined.exists() else quarantined


def run_check(week: str, check: str) -> dict[str, Any]:
    """Run one validation check (``mlops.validate`` names: schema, quality, distribution,
    anomalies) on one batch; fail the task at once, naming file, check and columns, if it fails.

    A failing check quarantines the batch. The three parallel checks may find the batch already
    moved by a sibling: they then check the quarantined copy, so each still reports its verdict.
    """
    from mlops.errors import BatchValidationError
    from mlops.validate import validate_batch

    from mlops_airflow.config import threshold_kwargs
    from mlops_airflow.tasks import _fail

    thresholds = threshold_kwargs("validate")
    for attempt in (1, 2):
        path = locate_batch(week)
        try:
            result = validate_batch(str(path), checks=[check], **thresholds)
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
                "warnings": result.get("warnings") or [],
                "report_json": result.get("report_json"),
            }
    raise AssertionError("unreachable")
