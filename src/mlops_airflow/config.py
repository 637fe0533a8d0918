"""default_args, the failure callback, thresholds from Airflow Variables and the MLflow tracking
URI from the Airflow Connection ``mlflow_default`` (or the environment)."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from mlops_airflow import LIGHT_QUEUE, OWNER

log = logging.getLogger("mlops_airflow")

MLFLOW_CONN_ID = "mlflow_default"
# The prediction log with the read-only login predictions_reader (airflow/bootstrap.py).
PREDICTIONS_CONN_ID = "predictions_db"

LIGHT_TIMEOUT = timedelta(minutes=20)
HEAVY_TIMEOUT = timedelta(hours=2)
# A training's first retry follows 10-20 s after its failure (exponential backoff with jitter:
# 10-20 s, 20-40 s, then 40-80 s) instead of 30-60 s: a training whose worker died is failed by
# the scheduler's heartbeat timeout (airflow/airflow.env) and starts again on the next free heavy
# slot within about a minute of the death. With the shorter delay a training gets three retries
# (the other tasks two), so that they still span a minute of MLflow outage plus its restart on a
# loaded machine (tests/faults): two were not always enough.
HEAVY_RETRY_DELAY = timedelta(seconds=10)
HEAVY_RETRIES = 3


class ConfigurationError(ValueError):
    """An Airflow Variable or Connection holds a value the DAGs cannot use."""


def log_failure(context: Any) -> None:
    """on_failure_callback: log one line naming the DAG, task, run, try and error."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(ti, "run_id", None) or context.get("run_id", "?")
    try_number = getattr(ti, "try_number", "?")
    max_tries = getattr(getattr(ti, "task", None), "retries", None)
    tries = f"{try_number}/{max_tries + 1}" if isinstance(max_tries, int) else str(try_number)
    error = context.get("exception")
    message = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
    first_line = message.strip().splitlines()[0] if message.strip() else message
    log.error(
        "TASK FAILED dag=%s task=%s run=%s try=%s error=%s", dag_id, task_id, run_id, tries, first_line
    )


def default_args(**overrides: Any) -> dict[str, Any]:
    """The default_args shared by the three DAGs (queue ``light`` unless a task says otherwise)."""
    args: dict[str, Any] = {
        "owner": OWNER,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": LIGHT_TIMEOUT,
        "queue": LIGHT_QUEUE,
        "on_failure_callback": log_failure,
    }
    args.update(overrides)
    return args


def float_variable(name: str) -> float | None:
    """The Airflow Variable ``name`` as a float, or None when it is not defined."""
    from airflow.sdk import Variable

    raw = Variable.get(name, default=None)
    if raw is None or str(raw).strip() == "":
        return None
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"Airflow Variable {name!r} must be a number, got {raw!r}; fix it with "
            f"`airflow variables set {name} <number>` or delete it to use the package default"
        ) from None


def threshold_kwargs(step: str) -> dict[str, float]:
    """Keyword arguments of an mlops step from the Airflow Variables ``mlops_<name>`` of its
    thresholds (``mlops.config.THRESHOLDS``) that are defined; the others are left out, so the
    package's environment or default applies. Read at every call (inside the task)."""
    from mlops.config import ThresholdError, thresholds_of

    kwargs: dict[str, float] = {}
    for spec in thresholds_of(step):
        value = float_variable(spec.variable)
        if value is not None:
            try:
                kwargs[spec.name] = spec.check(value, f"Airflow Variable {spec.variable}")
            except ThresholdError as exc:
                raise ConfigurationError(f"{exc}; fix it with `airflow variables set {spec.variable} <number>` "
                                         "or delete it to use the package default") from None
    return kwargs


def tracking_uri_from_connection(conn: Any) -> str:
    """The MLflow tracking URI described by an Airflow Connection.

    ``extra.tracking_uri`` wins (any scheme, e.g. ``sqlite:///...``); otherwise
    ``<scheme>://<host>[:<port>]`` with the scheme from ``schema`` or the connection type
    (http/https, default http).
    """
    extra = conn.extra_dejson or {}
    if extra.get("tracking_uri"):
        return str(extra["tracking_uri"])
    host = (conn.host or "").strip()
    if not host:
        raise ConfigurationError(
            f"Airflow Connection {conn.conn_id!r} has neither a host nor an extra 'tracking_uri'"
        )
    if "://" in host:
        base = host.rstrip("/")
    else:
        scheme = next(
            (s for s in (conn.schema, conn.conn_type) if s in ("http", "https")),
            "http",
        )
        base = f"{scheme}://{host}"
    return f"{base}:{conn.port}" if conn.port else base


def _origin(uri: str) -> tuple[str, str, int | None, str]:
    from urllib.parse import urlsplit

    parts = urlsplit(uri.strip())
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default,
            parts.path.rstrip("/"))


def check_own_tracking_uri(uri: str) -> None:
    """Refuse a Connection that points the pipeline's MLflow login anywhere but the stack's own
    server: the workers' environment ``MLFLOW_TRACKING_URI`` (set by the stack, not editable in
    the UI) is the reference. Fails the task at once, before any credential is sent."""
    own = os.environ.get("MLFLOW_TRACKING_URI")
    if own and _origin(own) != _origin(uri):
        from mlops_airflow.tasks import _fail

        _fail(f"Airflow Connection {MLFLOW_CONN_ID!r} points at {uri!r}, not at this stack's MLflow "
              f"server {own!r}: refusing to send the pipeline login there (restore it with "
              "`make up`, which resets the connection)")


def configure_mlflow() -> str | None:
    """Point this task process at the MLflow server before any mlops call.

    Order: Airflow Connection ``mlflow_default`` when defined, else ``MLFLOW_TRACKING_URI`` from
    the environment, else None (the mlops package default store). Returns the URI in use.
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(MLFLOW_CONN_ID)
    except AirflowNotFoundException:
        conn = None
    if conn is not None:
        uri = tracking_uri_from_connection(conn)
        check_own_tracking_uri(uri)
        os.environ["MLFLOW_TRACKING_URI"] = uri
        if conn.login:
            os.environ["MLFLOW_TRACKING_USERNAME"] = conn.login
            os.environ["MLFLOW_TRACKING_PASSWORD"] = conn.password or ""
        log.info("MLflow tracking URI from Connection %s: %s", MLFLOW_CONN_ID, uri)
        return uri
    uri = os.environ.get("MLFLOW_TRACKING_URI") or None
    log.info("MLflow tracking URI from the environment: %s", uri or "(mlops package default)")
    return uri


def configure_predictions_db() -> str | None:
    """Point this task process at the prediction log (``MLOPS_PREDICTIONS_DB_URL``) from the
    Airflow Connection ``predictions_db`` when defined, else keep the environment's. Returns the
    URL in use (None: served predictions are not looked at)."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(PREDICTIONS_CONN_ID)
    except AirflowNotFoundException:
        conn = None
    if conn is not None:
        from sqlalchemy.engine import URL

        url = URL.create("postgresql+psycopg2", username=conn.login, password=conn.password,
                         host=conn.host, port=conn.port, database=conn.schema)
        os.environ["MLOPS_PREDICTIONS_DB_URL"] = url.render_as_string(hide_password=False)
        log.info("Prediction log from Connection %s: %s", PREDICTIONS_CONN_ID,
                 url.render_as_string(hide_password=True))
    return os.environ.get("MLOPS_PREDICTIONS_DB_URL") or None
