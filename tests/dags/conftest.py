"""Fixtures of the DAG tests. Importing dag_harness first sets the throw-away Airflow home, ML data
folder and MLflow store in the environment, before anything imports airflow."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit import dag_harness
from testkit.dag_harness import AIRFLOW_HOME, DAGS_DIR, REPO, ROOT, airflow_cli, ml_env, report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the measurements collected by the DAG tests (visible without -s)."""
    if dag_harness.REPORT_LINES:
        terminalreporter.section("DAG tests: measurements")
        for line in dag_harness.REPORT_LINES:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove the throw-away Airflow home, data folder and MLflow store."""
    shutil.rmtree(ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database (`airflow db migrate`, once per session)."""
    start = time.monotonic()
    airflow_cli("db", "migrate", timeout=300)
    report(f"airflow db migrate (SQLite): {time.monotonic() - start:.1f} s")
    # The pools of airflow/pools.yaml, as both stacks' bootstrap applies them. dag.test() runs
    # tasks in-process without the scheduler's pool accounting, but the tasks name the pool.
    bootstrap = _load_bootstrap()
    bootstrap.sync_pools(bootstrap.load_pools())
    return AIRFLOW_HOME / "airflow.db"


def _load_bootstrap():
    """airflow/bootstrap.py, loaded by path (it is a script, not a package module)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("airflow_bootstrap", REPO / "airflow" / "bootstrap.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def dagbag(airflow_db: Path):
    """The three DAGs parsed from dags/ with Airflow's own DagBag."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.fixture()
def ml_data(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh ML data folder and registered-model name for one test."""
    with ml_env(tmp_path, f"model_{request.node.name}") as data:
        yield data


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """skops (used by MLflow's sklearn flavour) walks every loaded module, which makes airflow emit
    a FutureWarning per legacy attribute: ~1000 lines of noise in the report. Silence only those,
    only for the DAG tests."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore::FutureWarning:skops.io._utils"))
