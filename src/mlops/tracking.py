"""MLflow connection: local SQLite store by default, ``MLFLOW_TRACKING_URI`` otherwise.

An unreachable server is an error, never an answer: MLflow's HTTP client retries a refused
connection a few times (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, here 3 unless set: about 15 s
instead of MLflow's 4 minutes, so that an Airflow task fails and is retried by Airflow) and then
raises, and nothing here catches that.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from mlops import config
from mlops.util import file_lock

#: MLflow's own HTTP retry settings used unless the environment sets them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


def setup() -> Any:
    """Point MLflow at the configured store, make sure the experiment exists; return a client."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = config.tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # The first use of a local SQLite store creates its schema; two processes doing that at
    # once can collide, so local set-up is serialised (a server needs no lock).
    local = uri.startswith("sqlite:")
    with (file_lock("mlflow-setup") if local else contextlib.nullcontext()):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        name = config.experiment_name()
        if client.get_experiment_by_name(name) is None:  # None only when it does not exist
            try:
                client.create_experiment(name, artifact_location=config.artifact_location())
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # created concurrently
                    raise
        mlflow.set_experiment(name)
    return client


def experiment_id(client: Any) -> str:
    return client.get_experiment_by_name(config.experiment_name()).experiment_id
