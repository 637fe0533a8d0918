"""The data set of a DAG run: the Param ``dataset`` of every DAG that reads batches or the registry,
and the wrapper that runs a task body under it (``mlops.dataset.use_dataset``: a context variable
of this task, never a process-wide setting)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

PARAM = "dataset"
DEFAULT = "flights"
F = TypeVar("F", bound=Callable[..., Any])


def default_name() -> str:
    """The stack's default data set: ``MLOPS_DATASET``, else the flights."""
    return (os.environ.get("MLOPS_DATASET") or "").strip() or DEFAULT


def dataset_param() -> Any:
    """The DAG Param ``dataset``: a name of ``configs/`` or a configuration file's path."""
    from airflow.sdk import Param

    return Param(default_name(), type="string", minLength=1,
                 description="data set of this run: a name (configs/NAME.yaml) or a configuration "
                             "file path; its own data folder, MLflow experiment and model")


def run_dataset_name(context: Any) -> str:
    """The ``dataset`` of this run's params (the stack's default when the DAG has no such Param)."""
    params = (context or {}).get("params") or {}
    return str(params.get(PARAM) or default_name())


@contextlib.contextmanager
def run_dataset(context: Any) -> Iterator[Any]:
    """Make this run's data set the active one for the block; an unknown one fails the task at
    once (no retries: the run's conf is wrong)."""
    from mlops.dataset import DatasetError, use_dataset

    name = run_dataset_name(context)
    with contextlib.ExitStack() as stack:
        try:
            dataset = stack.enter_context(use_dataset(name))
        except DatasetError as err:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"Param dataset: {err}") from None
        yield dataset


def in_run_dataset(fn: F) -> F:
    """Run the task body ``fn`` under its run's data set (the current task context)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from airflow.sdk import get_current_context

        with run_dataset(get_current_context()):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
