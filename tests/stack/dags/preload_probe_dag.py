"""
### stack_preload_probe: what a task process finds already imported (test-only DAG, bundle `stack-probe`)

Loaded only by the test stack of `tests/stack`. One task per queue reports what its worker
preloaded (`mlops_airflow.preload`), its process ids and the modules the task process still had
to import itself after the fork, after it ran that queue's kind of work through the mlops
functions on fixed synthetic data (light: Evidently drift; heavy: fitting the model pipeline).
The test runs the same work in a fresh, cold interpreter and compares the results. It reads no
batch and touches nothing of the product DAGs. The test: `tests/stack/test_stack_8_warm.py`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import dag, task

from mlops_airflow import HEAVY_QUEUE, LIGHT_QUEUE
from mlops_airflow.config import default_args

DAG_ID = "stack_preload_probe"
HEAVY = ("numpy", "pandas", "pyarrow", "sklearn", "scipy", "mlflow", "evidently", "skops")


def _frame(seed: int, rows: int, shift: float) -> Any:
    """Rows with the schema's feature columns, drawn from a fixed seed."""
    import numpy as np
    import pandas as pd

    from mlops.config import load_schema

    schema = load_schema()
    rng = np.random.default_rng(seed)
    data = {}
    for c in schema.features:
        if c in schema.categorical:
            known = list(schema.columns[c].categories or []) or ["A", "B", "C", "D"]
            data[c] = rng.choice(known[:8], size=rows)
        else:
            data[c] = rng.normal(loc=shift if c in ("temp", "distance") else 0.0, size=rows)
    return pd.DataFrame(data)


def work(kind: str) -> dict:
    """The queue's kind of work on fixed data: 'light' (drift of a shifted sample through
    mlops.column_drift.evidently_drift) or 'heavy' (mlops.modeling.build_pipeline fitted, then scored)."""
    import hashlib

    from mlops.config import load_schema

    schema = load_schema()
    if kind == "light":
        from mlops.column_drift import drift_columns, evidently_drift

        current, reference = _frame(1, 600, 0.8), _frame(2, 600, 0.0)
        columns = drift_columns(schema, list(current.columns))
        _, drift = evidently_drift(current, reference, schema, columns, 0.2)
        return {"share": drift["share"], "drifted_columns": drift["drifted_columns"],
                "scores": {c: round(float(v["score"]), 9) for c, v in sorted(drift["columns"].items())}}
    import numpy as np
    from threadpoolctl import threadpool_limits

    from mlops.modeling import build_pipeline, model_input, score

    rows = _frame(3, 1500, 0.0)
    target = ((rows["temp"] + rows["distance"]) > 0.3).astype("int8").to_numpy()
    x = model_input(rows, schema)
    with threadpool_limits(limits=1):
        pipe = build_pipeline(schema, {"max_iter": 40, "random_state": 0}, train=x).fit(x[:1000], target[:1000])
        proba = pipe.predict_proba(x[1000:])[:, 1]
    rounded = np.round(proba, 9)
    return {"proba_sha256": hashlib.sha256(rounded.tobytes()).hexdigest(),
            "scores": {k: round(float(v), 9) for k, v in score(target[1000:], proba).items()}}


def _report(kind: str) -> dict:
    import os
    import sys

    import psutil

    from mlops_airflow import preload

    result = work(kind)
    # Read now: the pool process may be recycled (worker_max_tasks_per_child) once the task ends.
    grandparent_pid = psutil.Process(os.getppid()).ppid()
    since = preload.imported_since_preload()
    return {"preloaded": list(preload.preloaded), "preload_pid": preload.preload_pid, "pid": os.getpid(), "ppid": os.getppid(),
            "grandparent_pid": grandparent_pid,
            "result": result, "imported_since_preload": since,
            "heavy_imported_since_preload": sorted(m for m in since if m.split(".")[0] in HEAVY),
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
    """One task per queue: its work's result and what its process found imported."""

    @task(queue=LIGHT_QUEUE)
    def on_light() -> dict:
        """Drift on the light worker."""
        return _report("light")

    @task(queue=HEAVY_QUEUE)
    def on_heavy() -> dict:
        """A fit on the heavy worker."""
        return _report("heavy")

    on_light()
    on_heavy()


stack_preload_probe()
