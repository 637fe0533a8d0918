"""
### stack_upkeep_probe: a long training and a worker-recycling probe (test-only DAG, bundle `stack-probe`)

Loaded only by the test stack of `tests/stack`. `tests/stack/test_stack_6_upkeep.py` drives it:

* `training` (queue `heavy`) stands for a training: it keeps the heavy slot for `conf.seconds`
  (default 35 s, longer than the 30 s a worker used to get on `make down`) and returns the ids of
  its worker processes. The warm-shutdown test stops the heavy worker while it runs.
* `pool_process` (queue `recycle`, which only the recycling test's own worker consumes) returns
  the pid of the pool process that ran it and that process' parent (the Celery worker): the test
  maps it over `conf.tasks` instances on a worker that replaces its pool process after every task.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import Param, dag, get_current_context, task

from mlops_airflow import HEAVY_QUEUE
from mlops_airflow.config import default_args

DAG_ID = "stack_upkeep_probe"


def _processes() -> dict[str, int]:
    """The task process, the pool process that supervises it and the Celery worker above."""
    import os

    import psutil

    pool = psutil.Process(os.getppid())
    return {"task": os.getpid(), "pool": pool.pid, "worker": pool.ppid()}


@task(queue=HEAVY_QUEUE, retries=0)
def training() -> dict[str, int]:
    """Hold the heavy slot for conf.seconds, as a training would."""
    import time

    seconds = float(get_current_context()["params"]["seconds"])
    time.sleep(seconds)
    return {**_processes(), "seconds": int(seconds)}


RECYCLE_QUEUE = "recycle"


@task(queue=RECYCLE_QUEUE, retries=0)
def pool_process(index: int) -> dict[str, int]:
    """Where this task ran."""
    return {**_processes(), "index": index}


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args=default_args(),
    tags=["test", "upkeep"],
    doc_md=__doc__,
    params={"seconds": Param(35, type="number", minimum=0), "mode": Param("training", enum=["training", "recycle"]), "tasks": Param(3, type="integer", minimum=1)},
)
def stack_upkeep_probe() -> None:
    """`training` or the mapped `pool_process`, as conf.mode says (the other is skipped)."""
    from airflow.sdk import task as sdk_task

    @sdk_task.branch(retries=0)
    def mode() -> str:
        return "training" if get_current_context()["params"]["mode"] == "training" else "indexes"

    @sdk_task(retries=0)
    def indexes() -> list[int]:
        return list(range(int(get_current_context()["params"]["tasks"])))

    chosen = mode()
    numbers = indexes()
    chosen >> [training(), numbers]
    pool_process.expand(index=numbers)


stack_upkeep_probe()
