"""Test-only DAG of the fault suite (bundle `faults`, loaded by tests/faults/conftest.py).

`long_training` (queue `heavy`) fits the weekly recipe's model on the stack's training table again
and again until `seconds` (run conf, default 130) have passed: a real CPU-bound training longer
than two minutes, to show that the scheduler never takes a live task for dead while the machine is
loaded. One retry: a false detection would show as a second try.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task


@dag(
    dag_id="fault_long_training",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "mlops", "retries": 1, "retry_delay": timedelta(seconds=10)},
    tags=["test", "faults"],
    doc_md=__doc__,
    params={"seconds": Param(130, type="integer", minimum=1, description="train at least this long")},
)
def fault_long_training() -> None:
    """One long CPU-bound training on the heavy queue."""

    @task(queue="heavy", execution_timeout=timedelta(minutes=20))
    def long_training() -> dict[str, Any]:
        """Fit the weekly recipe's pipeline repeatedly for the run's `seconds`."""
        import time

        from mlops import config
        from mlops.modeling import build_pipeline, limited_threads, load_table, model_input

        seconds = int(get_current_context()["params"]["seconds"])
        schema = config.load_schema()
        table = load_table()
        x = model_input(table, schema)
        y = table[schema.target_name].to_numpy()
        started, fits = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            pipe = build_pipeline(schema, config.recipe(None).model_params, x)
            with limited_threads():
                pipe.fit(x, y)
            fits += 1
        return {"fits": fits, "seconds": round(time.monotonic() - started, 1), "rows": int(len(x))}

    long_training()


fault_long_training()
