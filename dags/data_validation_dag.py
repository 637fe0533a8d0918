"""
### data_validation_dag: daily checks of newly arrived batches

`validate_schema` → [`check_data_quality`, `check_distributions`, `detect_anomalies`] (in parallel)

The run looks at the landing batches (`$MLOPS_DATA_DIR/landing/<week>.csv`) that **arrived in the
run's data interval** (file modification time in `[data_interval_start, data_interval_end)`), or at
the weeks listed in the run conf `{"weeks": ["2013-W07"]}` for a manual re-check. The schedule is
`@daily` as a `CronTriggerTimetable` with a one-day interval, so each run covers the day before it.
No batch in the interval: every task is skipped and the run succeeds.

* **validate_schema**: readable CSV (format, NUL bytes, encoding, structure), the header (no
  duplicate names, no undeclared column), required columns and dtypes of `configs/flights.yaml`,
  and the temporal integrity (every row in the ISO week the file name states and in the data
  set's dates, real calendar dates that agree with the time column).
* **check_data_quality**: null shares, value ranges, unknown categories.
* **check_distributions**: row count and delayed rate against the recently accepted batches,
  then Evidently drift against them (a massive shift means a broken feed); writes Evidently's
  report into `validation.html`.
* **detect_anomalies**: duplicate rows, the row key (each flight once, also across accepted
  batches) and extreme outliers.

Every limit is a keyword argument of `mlops.validate.validate_batch`, overridable by the Airflow
Variable `mlops_<limit>` (e.g. `mlops_max_null_share`, `mlops_max_drift_share`).

A failing check moves the batch to `quarantine/` with its `validation.json` / `.html` report, and
the task fails at once (no retries: bad data does not get better) with an error naming the file,
the check and the columns. This DAG only inspects and quarantines; accepting batches into
`accepted/` is `ml_pipeline_dag`'s job (a quarantined batch never reaches it).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task

from mlops_airflow import WEEK_PATTERN
from mlops_airflow.config import default_args
from mlops_airflow.dataset import dataset_param

DAG_ID = "data_validation_dag"


@dag(
    dag_id=DAG_ID,
    schedule=CronTriggerTimetable("@daily", timezone="UTC", interval=timedelta(days=1)),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["mlops", "data-quality", "daily"],
    doc_md=__doc__,
    params={
        "dataset": dataset_param(),
        "weeks": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "pattern": WEEK_PATTERN},
            description="check these landing weeks instead of the data interval's arrivals",
        ),
    },
)
def data_validation_dag() -> None:
    """Validate the batches that arrived in the run's data interval."""

    @task
    def validate_schema() -> list[str]:
        """Find the batches of this run and check their schema; return their weeks."""
        from mlops_airflow.validation import batches_for_run, run_check

        weeks = batches_for_run(get_current_context())
        for week in weeks:
            run_check(week, "schema")
        return weeks

    @task
    def check_data_quality(weeks: list[str]) -> list[dict[str, Any]]:
        """Missing values, value ranges, unknown categories."""
        from mlops_airflow.validation import run_check

        return [run_check(week, "quality") for week in weeks]

    @task
    def check_distributions(weeks: list[str]) -> list[dict[str, Any]]:
        """Distribution drift against the recently accepted batches."""
        from mlops_airflow.validation import run_check

        return [run_check(week, "distribution") for week in weeks]

    @task
    def detect_anomalies(weeks: list[str]) -> list[dict[str, Any]]:
        """Duplicate rows and extreme outliers."""
        from mlops_airflow.validation import run_check

        return [run_check(week, "anomalies") for week in weeks]

    weeks = validate_schema()
    [check_data_quality(weeks), check_distributions(weeks), detect_anomalies(weeks)]


data_validation_dag()
