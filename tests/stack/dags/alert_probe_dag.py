"""
### stack_alert_probe: a task that always fails (test-only DAG, bundle `stack-probe`)

Loaded only by the test stack of `tests/stack` (its env file adds this folder as a DAG bundle).
`always_fails` raises on every attempt; with 2 retries one second apart, one run makes three
failed attempts (two `up_for_retry`, then `failed`) and a failed DAG run within seconds: the live
alert test (`tests/stack/test_stack_9_alerts.py`) drives AirflowTaskFailingRepeatedly and
AirflowDagRunFailed with it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import dag, task

from mlops_airflow.config import default_args

DAG_ID = "stack_alert_probe"


@task
def always_fails() -> None:
    """Fail, as a broken task would."""
    raise RuntimeError("stack_alert_probe: this task always fails (test-only DAG)")


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args=default_args(retries=2, retry_delay=timedelta(seconds=1), retry_exponential_backoff=0,
                              max_retry_delay=timedelta(seconds=1)),
    tags=["test", "alerts"],
    doc_md=__doc__,
)
def stack_alert_probe() -> None:
    """One task, on the light queue, failing every attempt."""
    always_fails()


stack_alert_probe()
