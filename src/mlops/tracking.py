"""MLflow connection: local SQLite store by default, ``MLFLOW_TRACKING_URI`` otherwise."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from mlops import config
from mlops.util import file_lock


def setup() -> Any:
    """Point MLflow at the configured store, make sure the experiment exists; return a client."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow
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
        exp = client.get_experiment_by_name(name)
        if exp is None:
            from mlflow.exceptions import MlflowException

            try:
                client.create_experiment(name, artifact_location=config.artifact_location())
            except MlflowException:
                pass  # created concurrently
        mlflow.set_experiment(name)
    return client


def experiment_id(client: Any) -> str:
    return client.get_experiment_by_name(config.experiment_name()).experiment_id
