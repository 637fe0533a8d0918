"""DAG integrity: the product DAGs (three of the ML lifecycle and maintenance_dag) parse without errors and have exactly the structure, schedules,
queues and defaults the project agreed on."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from testkit.dag_harness import AIRFLOW_ENV_FILE, DAG_IDS, DAGS_DIR, TEST_ENV, report

EDGES = {
    "ml_pipeline_dag": {
        ("check_new_data", "validate_data"),
        ("validate_data", "preprocess"),
        ("preprocess", "train"),
        ("train", "evaluate"),
        ("evaluate", "check_drift"),
        ("check_drift", "approve_deploy"),
        ("approve_deploy", "deploy"),
    },
    "data_validation_dag": {
        ("validate_schema", "check_data_quality"),
        ("validate_schema", "check_distributions"),
        ("validate_schema", "detect_anomalies"),
    },
    "model_retraining_dag": {
        ("backup_current_model", "retrain_model"),
        ("retrain_model", "evaluate_new_model"),
        ("evaluate_new_model", "compare_models"),
        ("compare_models", "approve_new_model"),
        ("compare_models", "rollback_model"),
        ("approve_new_model", "deploy_new_model"),
        ("approve_new_model", "rollback_model"),
    },
    "served_monitoring_dag": set(),
}
# Tasks without upstream or downstream (maintenance_dag's four run side by side; served_monitoring_dag
# is a single task).
ISOLATED = {"maintenance_dag": {"prune_task_logs", "prune_reports", "clean_metadata_db", "prune_mlflow_runs"},
            "served_monitoring_dag": {"monitor_served"}}
# The metadata database's cleaner and the MLflow run prune run on the maintenance worker
# (mlops_airflow.policy): it alone holds their logins.
MAINTENANCE_TASKS = {("maintenance_dag", "clean_metadata_db"), ("maintenance_dag", "prune_mlflow_runs")}
HEAVY_TASKS = {("ml_pipeline_dag", "train"), ("model_retraining_dag", "retrain_model")}
# Tasks that register, delete model versions or move registry aliases: the one-slot pool.
REGISTRY_TASKS = {("ml_pipeline_dag", "evaluate"), ("ml_pipeline_dag", "deploy"), ("maintenance_dag", "prune_mlflow_runs"),
                  *(("model_retraining_dag", t) for t in ("backup_current_model", "evaluate_new_model",
                                                          "deploy_new_model", "rollback_model"))}
DEPRECATED = ("schedule_interval", "provide_context", "apply_defaults", "days_ago")
HEAVY_MODULES = ("sklearn", "mlflow", "pandas", "evidently", "dvc")
# The retraining DAG reads the recipe names of the data sets of configs/ with mlops.config and
# mlops.dataset only.
PARSE_TIME_MLOPS = {"mlops", "mlops.config", "mlops.dataset", "mlops.errors"}


def _tasks(edges: set[tuple[str, str]]) -> set[str]:
    return {t for edge in edges for t in edge}


def test_no_import_errors_and_exactly_the_product_dags(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == DAG_IDS
    files = {Path(dagbag.dags[d].fileloc).name for d in DAG_IDS}
    assert files == {f"{d}.py" for d in DAG_IDS}, "one DAG per file, named after its dag_id"
    assert sorted(p.name for p in DAGS_DIR.glob("*.py")) == sorted(files)


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_tasks_and_edges_exactly(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    expected = EDGES.get(dag_id, set())
    assert set(dag.task_dict) == _tasks(expected) | ISOLATED.get(dag_id, set())
    actual = {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}
    assert actual == expected


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_no_cycles(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    indegree = {t: len(dag.task_dict[t].upstream_task_ids) for t in dag.task_dict}
    ready = [t for t, n in indegree.items() if n == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for child in dag.task_dict[node].downstream_task_ids:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    assert seen == len(dag.task_dict), f"{dag_id} has a cycle"


def test_schedules(dagbag) -> None:
    from airflow.sdk import CronTriggerTimetable
    from airflow.sdk.definitions.timetables._cron import CRON_PRESETS

    weekly = dagbag.dags["ml_pipeline_dag"]
    daily = dagbag.dags["data_validation_dag"]
    assert weekly.schedule == "@weekly"
    assert weekly.timetable.expression == CRON_PRESETS["@weekly"]
    # @daily with a one-day interval: each run covers the day before it (its data interval)
    assert isinstance(daily.timetable, CronTriggerTimetable)
    assert daily.timetable.expression == CRON_PRESETS["@daily"]
    assert daily.timetable.interval == timedelta(days=1)
    assert dagbag.dags["model_retraining_dag"].schedule is None
    # runs when ml_pipeline_dag accepts a week's labelled batch (its outlet)
    from mlops_airflow.assets import ACCEPTED_BATCHES

    served = dagbag.dags["served_monitoring_dag"]
    assert list(served.timetable.asset_condition.objects) == [ACCEPTED_BATCHES]
    assert served.catchup is False
    assert weekly.catchup is False and daily.catchup is False
    assert dagbag.dags["maintenance_dag"].schedule == "@daily" and dagbag.dags["maintenance_dag"].catchup is False


def test_queues_heavy_for_training_light_for_the_rest(dagbag) -> None:
    for dag_id in DAG_IDS:
        for task in dagbag.dags[dag_id].tasks:
            want = ("heavy" if (dag_id, task.task_id) in HEAVY_TASKS
                    else "maintenance" if (dag_id, task.task_id) in MAINTENANCE_TASKS else "light")
            assert task.queue == want, f"{dag_id}.{task.task_id} is on queue {task.queue!r}"


def test_shared_config_default_queue_is_light() -> None:
    lines = AIRFLOW_ENV_FILE.read_text().splitlines()
    assert "AIRFLOW__OPERATORS__DEFAULT_QUEUE=light" in lines
    assert TEST_ENV["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == "light"


def test_default_args_retries_timeouts_callbacks_owner_tags_docs(dagbag) -> None:
    for dag_id in DAG_IDS:
        dag = dagbag.dags[dag_id]
        assert dag.owner == "mlops"
        assert "mlops" in dag.tags and len(dag.tags) >= 2
        module_doc = ast.get_docstring(ast.parse(Path(dag.fileloc).read_text()))
        assert dag.doc_md and dag.doc_md.strip() == (module_doc or "").strip()
        assert dag_id in dag.doc_md
        for task in dag.tasks:
            name = f"{dag_id}.{task.task_id}"
            assert task.retries >= 1, name
            assert task.retry_exponential_backoff and task.retry_exponential_backoff > 1, name
            assert task.retry_delay >= timedelta(seconds=10), name
            assert task.execution_timeout is not None, name
            assert task.owner == "mlops", name
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(getattr(c, "__name__", "") == "log_failure" for c in callbacks), name
    heavy = dagbag.dags["ml_pipeline_dag"].task_dict["train"].execution_timeout
    light = dagbag.dags["ml_pipeline_dag"].task_dict["evaluate"].execution_timeout
    assert heavy > light


def test_nothing_deprecated_and_airflow_3_sdk_only() -> None:
    for path in DAGS_DIR.glob("*.py"):
        source = path.read_text()
        for word in DEPRECATED:
            assert word not in source, f"{path.name} uses deprecated {word}"
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("airflow"):
                assert node.module == "airflow.sdk" or node.module.startswith(
                    "airflow.providers.standard"
                ), f"{path.name} imports from {node.module}"


PARSE_PROBE = r"""
import json, sys, time
import airflow.sdk  # not part of the DAG-file parse cost: the dag-processor has it loaded
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
total = time.perf_counter() - start
print(json.dumps({
    "total_s": total,
    "files": {s.file.split("/")[-1]: s.duration.total_seconds() for s in bag.dagbag_stats},
    "dags": sorted(bag.dag_ids),
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "new_modules": sorted(set(sys.modules) - before),
}))
"""


def test_parse_time_and_no_heavy_imports(airflow_db) -> None:
    """Parse all three files in a fresh interpreter: report the time, assert nothing heavy loads."""
    proc = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(DAGS_DIR)],
        capture_output=True, text=True, timeout=180, check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert set(result["dags"]) == DAG_IDS
    heavy = sorted({m.split(".")[0] for m in result["new_modules"]} & set(HEAVY_MODULES))
    assert heavy == [], f"parsing the DAG files imported {heavy}"
    ml = sorted(m for m in result["new_modules"] if m.split(".")[0] == "mlops")
    assert set(ml) <= PARSE_TIME_MLOPS, f"parsing the DAG files imported {ml}"
    per_file = ", ".join(f"{f} {s * 1000:.0f} ms" for f, s in sorted(result["files"].items()))
    report(f"DAG parse time, all three files: {result['total_s'] * 1000:.0f} ms ({per_file})")


def test_registry_tasks_share_the_one_slot_pool(dagbag) -> None:
    """Every task that registers a version or moves an alias runs in the pool model_registry,
    declared with one slot in airflow/pools.yaml (applied by both stacks' bootstrap)."""
    import yaml

    pools = yaml.safe_load((AIRFLOW_ENV_FILE.parent / "pools.yaml").read_text())["pools"]
    assert pools["model_registry"]["slots"] == 1
    for dag_id in DAG_IDS:
        for task in dagbag.dags[dag_id].tasks:
            want = "model_registry" if (dag_id, task.task_id) in REGISTRY_TASKS else "default_pool"
            assert task.pool == want, f"{dag_id}.{task.task_id} is in pool {task.pool!r}"


def test_retrain_model_is_mapped_over_the_recipes(dagbag) -> None:
    from mlops.config import load_recipes
    from mlops.dataset import resolve

    task = dagbag.dags["model_retraining_dag"].task_dict["retrain_model"]
    assert type(task).__name__.endswith("MappedOperator")
    # The flights' recipes in file order, then those of the other data sets of configs/ (a run
    # skips the recipes its data set lacks).
    mapped = task._get_specified_expand_input().value["recipe"]
    flights = list(load_recipes())
    assert mapped[:len(flights)] == flights
    assert set(mapped) == set(flights) | set(resolve("synthetic_drift").recipes)
    assert len(mapped) == len(set(mapped))
    assert task.queue == "heavy"
    evaluate = dagbag.dags["model_retraining_dag"].task_dict["evaluate_new_model"]
    assert evaluate.trigger_rule == "none_failed_min_one_success"  # skipped recipes are fine
