"""Benchmark-only DAG (bundle `benchmarks`): one planning task fanned out into many trivial mapped
tasks, most on the light queue and a few on the heavy one. benchmarks/load.py and the load test
(tests/stack/test_stack_9_load.py) trigger it as several concurrent runs to hold a burst of task
instances (each run has 2 + light + heavy of them)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, task


@task(queue="light")
def plan_light() -> list[int]:
    """The map indexes of the light items: conf `light` of them."""
    return list(range(int(get_current_context()["params"]["light"])))


@task(queue="light")
def plan_heavy() -> list[int]:
    """The map indexes of the heavy items: conf `heavy` of them."""
    return list(range(int(get_current_context()["params"]["heavy"])))


@task(queue="light")
def light_item(item: int) -> None:
    """Nothing: the cost measured is the stack's, from scheduling to the task's end. Returns
    nothing, so no XCom is written."""


@task(queue="heavy")
def heavy_item(item: int) -> None:
    """Nothing, on the heavy queue (the load test checks it runs on the heavy worker only)."""


@dag(
    dag_id="bench_fanout",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=32,
    tags=["benchmark"],
    params={"light": Param(48, type="integer", minimum=0, maximum=1000),
            "heavy": Param(1, type="integer", minimum=0, maximum=100)},
)
def bench_fanout() -> None:
    """`light` mapped light_item tasks and `heavy` mapped heavy_item tasks, each set planned by a
    task of its own (a mapped task expands over one upstream list)."""
    light_item.expand(item=plan_light())
    heavy_item.expand(item=plan_heavy())


bench_fanout()
