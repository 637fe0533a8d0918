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
    """The batch files this run checks: conf ``weeks`` if given, else the data interval's arrivals.

    No batch: the task is skipped (and with it the whole run), a normal outcome.
    """
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    weeks = context["params"].get("weeks")
    if weeks:
        paths = [landing_dir() / f"{week}.csv" for week in weeks]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise AirflowFailException(f"requested batches are not in landing: {', '.join(missing)}")
        return [str(p) for p in paths]
    start = context["data_interval_start"]
    end = context["data_interval_end"]
    batches = arrived_between(start, end)
    if not batches:
        raise AirflowSkipException(f"no batch arrived in {landing_dir()} between {start} and {end}")
    log.info("Batches that arrived between %s and %s: %s", start, end, ", ".join(batches))
    return batches
