"""Shared harness of the DAG tests (imported by conftest.py first): a throw-away Airflow home
with a SQLite metadata database (Airflow's development database), a throw-away ML data folder and
MLflow store, and helpers to run DAGs with dag.test() and read back their outcome.

The environment is set when this file is imported, i.e. before anything imports airflow: Airflow
reads its configuration once, at import. The tmp folders are removed when the session ends.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DAGS_DIR = REPO / "dags"
VENV_BIN = Path(sys.executable).parent
AIRFLOW_ENV_FILE = REPO / "airflow" / "airflow.env"
DAG_IDS = {"ml_pipeline_dag", "data_validation_dag", "model_retraining_dag", "served_monitoring_dag",
           "maintenance_dag"}

if "airflow" in sys.modules:
    raise pytest.UsageError(
        "tests/dags/conftest.py: airflow was imported before the DAG test harness set "
        "AIRFLOW_HOME; it would use the wrong metadata database. Do not import airflow in "
        "tests/conftest.py or in a plugin loaded before tests/dags."
    )


def _shared_setting(key: str) -> str:
    """A value from airflow/airflow.env (the settings shared with both stacks)."""
    for line in AIRFLOW_ENV_FILE.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip()
    raise KeyError(f"{key} is not set in {AIRFLOW_ENV_FILE}")


ROOT = Path(tempfile.mkdtemp(prefix="mlops-dag-tests-"))
AIRFLOW_HOME = ROOT / "airflow"
AIRFLOW_HOME.mkdir()
SESSION_DATA_DIR = ROOT / "data"

_ISOLATED_PREFIXES = ("AIRFLOW__", "AIRFLOW_VAR_", "AIRFLOW_CONN_", "MLOPS_", "MLFLOW_")
TEST_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    # dag.test() runs each task in-process through an in-process Execution API: no executor runs.
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    "AIRFLOW__OPERATORS__DEFAULT_QUEUE": _shared_setting("AIRFLOW__OPERATORS__DEFAULT_QUEUE"),
    "AIRFLOW__METRICS__STATSD_ON": "False",
    "MLOPS_DATA_DIR": str(SESSION_DATA_DIR),
    "MLFLOW_TRACKING_URI": f"sqlite:///{ROOT / 'mlflow.db'}",
}
# Settings from the developer's shell (a sourced .env, a stack's Variables or Connections as
# AIRFLOW_VAR_/AIRFLOW_CONN_) would leak into the tests and shadow what they set.
for _name in [k for k in os.environ if k.startswith(_ISOLATED_PREFIXES)]:
    del os.environ[_name]
os.environ.update(TEST_ENV)

REPORT_LINES: list[str] = []


def report(line: str) -> None:
    """Add a line to the DAG-test section of the terminal summary (shown without -s)."""
    REPORT_LINES.append(line)


def airflow_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run an `airflow` CLI command against the test Airflow home; fail with its output."""
    proc = subprocess.run(
        [str(VENV_BIN / "airflow"), *args],
        env={**os.environ, **{k: v for k, v in TEST_ENV.items() if k.startswith("AIRFLOW")}},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, (
        f"`airflow {' '.join(args)}` exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    return proc


def run_dag(dag_id: str, conf: dict | None = None, logical_date=None):
    """Run one DAG to completion with dag.test() against the test metadata DB; report its time."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS_DIR)).dags[dag_id]
    start = time.monotonic()
    kwargs = {"run_conf": conf}
    if logical_date is not None:
        kwargs["logical_date"] = logical_date
    dag_run = dag.test(**kwargs)
    report(
        f"dag.test {dag_id} {json_short(conf)}: {dag_run.state} in "
        f"{time.monotonic() - start:.1f} s ({task_durations(dag_run)})"
    )
    return dag_run


def task_durations(dag_run) -> str:
    """``task 1.2s, ...`` for the tasks of a run that ran (for the measurements summary)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        timed = sorted((ti.start_date, ti.task_id, ti.duration) for ti in rows if ti.start_date)
        return ", ".join(f"{task_id} {duration or 0:.1f}s" for _, task_id, duration in timed)


def json_short(value: object) -> str:
    """A compact rendering of a run conf for the report."""
    import json

    return json.dumps(value, separators=(",", ":")) if value else "{}"


def task_states(dag_run) -> dict[str, str | None]:
    """``{task_id: state}`` of a finished DAG run, read back from the metadata DB."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        return {ti.task_id: (str(ti.state) if ti.state else None) for ti in rows}


def xcom(dag_run, task_id: str, key: str = "return_value"):
    """The deserialised XCom ``key`` of ``task_id`` in a DAG run (None when absent)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def triggered_run(dag_id: str, run_id: str):
    """``(state, conf)`` of a DAG run created by a trigger, or None."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).first()
        return None if run is None else (str(run.state), dict(run.conf or {}))


def set_variable(key: str, value: str | None) -> None:
    """Set (or delete, with None) an Airflow Variable in the metadata DB."""
    from airflow.models.variable import Variable

    if value is None:
        Variable.delete(key)
    else:
        Variable.set(key, value)


@contextlib.contextmanager
def ml_env(root: Path, model_name: str) -> Iterator[Path]:
    """Point the in-process tasks at a fresh ML data folder under ``root`` and their own
    registered model (and experiment) ``model_name`` in the session's MLflow store: a new
    MLflow SQLite store costs seconds of schema migration, a new model name nothing."""
    from mlflow.tracking import MlflowClient

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    # With MLFLOW_TRACKING_URI set, mlops creates experiments without an artifact location and
    # MLflow would put artifacts under ./mlruns of the working directory: pre-create it here.
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    if client.get_experiment_by_name(model_name) is None:
        client.create_experiment(model_name, artifact_location=(root / "artifacts").as_uri())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_DATA_DIR", str(data))
        mp.setenv("MLOPS_MODEL_NAME", model_name)
        yield data


def age_files(*paths: Path, days: float = 3) -> None:
    """Backdate files' modification time: they 'arrived' before the run's data interval."""
    then = time.time() - days * 86400
    for path in paths:
        os.utime(path, (then, then))


def clear_and_rerun(dag_run, task_ids: list[str]) -> dict[str, str | None]:
    """Clear the given tasks of a finished run (as `airflow tasks clear` does) and run them again,
    in order, in-process the way dag.test() runs tasks. Returns the new task states."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.taskinstance import TaskInstance, clear_task_instances
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    dag = DagBag(dag_folder=str(DAGS_DIR)).dags[dag_run.dag_id]

    def load(session, task_id: str) -> list[TaskInstance]:
        """Every task instance of ``task_id`` in the run (one per map index when mapped)."""
        return session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id,
                TaskInstance.run_id == dag_run.run_id,
                TaskInstance.task_id == task_id,
            ).order_by(TaskInstance.map_index)
        ).all()

    with create_session() as session:
        clear_task_instances(
            [ti for t in task_ids for ti in load(session, t)], session,
            dag_run_state=DagRunState.RUNNING,
        )
    for task_id in task_ids:
        with create_session() as session:
            count = len(load(session, task_id))
        for index in range(count):
            with create_session() as session:
                ti = load(session, task_id)[index]
                ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
                session.commit()
                _run_task(ti=ti, task=dag.task_dict[task_id])
    return task_states(dag_run)


def retraining_runs() -> list[str]:
    """Run ids of model_retraining_dag runs triggered by drift (``drift__...``)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return sorted(
            session.scalars(
                select(DagRun.run_id).where(
                    DagRun.dag_id == "model_retraining_dag", DagRun.run_id.like("drift\\_\\_%", escape="\\")
                )
            ).all()
        )


def mapped(dag_run, task_id: str) -> dict[int, tuple[str | None, object]]:
    """``{map_index: (state, return value)}`` of a mapped task in a finished DAG run."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id,
                TaskInstance.task_id == task_id,
            )
        ).all()
        values = {
            row.map_index: XComModel.deserialize_value(row)
            for row in session.scalars(
                select(XComModel).where(
                    XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id,
                    XComModel.task_id == task_id, XComModel.key == "return_value",
                )
            ).all()
        }
        return {ti.map_index: (str(ti.state) if ti.state else None, values.get(ti.map_index))
                for ti in tis}


def model_versions(model_name: str) -> list[str]:
    """Registered versions of a model, sorted numerically."""
    from mlops import tracking

    client = tracking.setup()
    return sorted((mv.version for mv in client.search_model_versions(f"name = '{model_name}'")),
                  key=int)
