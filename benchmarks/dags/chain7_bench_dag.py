"""Benchmark-only DAG (bundle `benchmarks`, enabled by `stack.ctl --bench-bundle`): a chain of seven
trivial tasks on mixed queues, used by benchmarks/stack_latency.py to measure scheduling latency."""

from __future__ import annotations

import time
from datetime import datetime

from airflow.sdk import chain, dag, task

QUEUES = ["light", "heavy", "light", "light", "heavy", "light", "light"]


@task
def step() -> None:
    """Sleep 0.1 s. Returns nothing: a return value is an XCom write through the api-server (some
    70 ms here), task work rather than the scheduling latency this DAG measures."""
    time.sleep(0.1)


@dag(
    dag_id="bench_chain7",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["benchmark"],
)
def bench_chain7() -> None:
    """Seven 0.1 s tasks in a chain, alternating the light and heavy queues."""
    chain(*[step.override(task_id=f"t{i + 1}", queue=q)() for i, q in enumerate(QUEUES)])


bench_chain7()
