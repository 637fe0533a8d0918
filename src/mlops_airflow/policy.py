"""Cluster policy (entry point `airflow.policy`, pyproject.toml): the `maintenance` queue runs
`maintenance_dag.clean_metadata_db` and `maintenance_dag.prune_mlflow_runs`, nothing else.

The worker of that queue holds the metadata database's login (it runs `airflow db clean`) and an
MLflow login that may delete runs; every other worker holds neither (docs/security.md). A task of any other DAG or task id routed to the queue
would run with that login: the DAG processor refuses such a DAG (an import error naming the task),
so it never reaches the scheduler."""

from __future__ import annotations

from typing import Any

from airflow.policies import hookimpl

MAINTENANCE_QUEUE = "maintenance"
# (dag_id, task_id) allowed on the maintenance queue.
ALLOWED = {("maintenance_dag", "clean_metadata_db"), ("maintenance_dag", "prune_mlflow_runs")}


def check_queue(dag_id: str, task_id: str, queue: str) -> None:
    """Raise AirflowClusterPolicyViolation when a task other than the allowed ones uses the queue."""
    from airflow.exceptions import AirflowClusterPolicyViolation

    if queue == MAINTENANCE_QUEUE and (dag_id, task_id) not in ALLOWED:
        raise AirflowClusterPolicyViolation(
            f"task {dag_id}.{task_id}: queue {MAINTENANCE_QUEUE!r} is reserved for "
            f"{', '.join(f'{d}.{t}' for d, t in sorted(ALLOWED))} (its worker holds the metadata database login and an MLflow login that deletes runs)")


@hookimpl
def task_policy(task: Any) -> None:
    """Airflow calls this for every task of every parsed DAG."""
    dag = getattr(task, "dag", None)
    check_queue(getattr(dag, "dag_id", "?"), task.task_id, task.queue)
