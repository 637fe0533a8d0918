"""
### stack_preload_probe: what a task process finds already imported (test-only DAG, bundle `stack-probe`)

Loaded only by the test stack of `tests/stack`. One task per queue reports what its worker
preloaded (`mlops_airflow.preload`), its process ids and the modules the task process still had
to import itself after the fork (nothing heavy, when the worker is warm). It reads no data and
touches nothing of the product DAGs. The test: `tests/stack/test_stack_8_warm.py`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import dag, task

from mlops_airflow import HEAVY_QUEUE, LIGHT_QUEUE
from mlops_airflow.config import default_args

DAG_ID = "stack_preload_probe"


def _report() -> dict:
    import os
    import sys

    from mlops_airflow import preload

    return {"preloaded": list(preload.preloaded), "pid": os.getpid(), "ppid": os.getppid(),
            "imported_since_preload": preload.imported_since_preload(),
            "heavy_in_sys_modules": sorted(m for m in ("pandas", "sklearn", "mlflow", "evidently")
                                           if m in sys.modules)}


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args=default_args(),
    tags=["test"],
    doc_md=__doc__,
)
def stack_preload_probe() -> None:
    """One task per queue: what its process found imported."""

    @task(queue=LIGHT_QUEUE)
    def on_light() -> dict:
        """Report the light worker's preload."""
        return _report()

    @task(queue=HEAVY_QUEUE)
    def on_heavy() -> dict:
        """Report the heavy worker's preload."""
        return _report()

    on_light()
    on_heavy()


stack_preload_probe()
