"""ml_pipeline_dag on the containers: success through the REST API, queue routing to the worker
containers (Flower's task API), a champion in the MLflow registry, the task log readable through
the api-server, Prometheus targets up, the run's StatsD series in Prometheus, the run's ML results
through the Pushgateway and Prometheus wired to Alertmanager."""

from __future__ import annotations

import requests
import yaml

from stack import grants

from testkit.compose_stack import ComposeStack, workload_ids

HEAVY_TASKS = {"train"}
ML_TASKS = {"check_new_data", "validate_data", "preprocess", "train", "evaluate", "check_drift", "approve_deploy", "deploy"}


def _states(stack: ComposeStack, run_id: str) -> dict[str, dict]:
    return {t["task_id"]: t for t in stack.task_instances("ml_pipeline_dag", run_id)}


def test_ml_pipeline_succeeds_through_rest(compose_stack: ComposeStack, pipeline_run: dict) -> None:
    tis = _states(compose_stack, pipeline_run["run_id"])
    assert pipeline_run["run"]["state"] == "success", {k: t["state"] for k, t in tis.items()}
    assert set(tis) == ML_TASKS
    # A real run: the replayed weeks were validated, a model trained and evaluated.
    for task_id in ("check_new_data", "validate_data", "preprocess", "train", "evaluate"):
        assert tis[task_id]["state"] == "success", (task_id, tis[task_id]["state"])
    assert pipeline_run["run"]["run_type"] == "manual"


def test_train_on_heavy_container_light_tasks_on_light_replicas(compose_stack: ComposeStack, pipeline_run: dict) -> None:
    stack = compose_stack
    heavy = {f"heavy@{h}" for h in stack.hostnames("airflow-worker-heavy")}
    light = {f"light@{h}" for h in stack.hostnames("airflow-worker-light")}
    assert len(heavy) == 1 and len(light) == 2
    resp = stack.flower("/api/tasks")
    assert resp.status_code == 200, resp.text
    ran: dict[str, set[str]] = {}
    for task in resp.json().values():
        ids = workload_ids(task.get("args") or "")
        if ids and ids[0] == "ml_pipeline_dag" and ids[1] == pipeline_run["run_id"]:
            ran.setdefault(ids[2], set()).add(task["worker"])
            assert task["routing_key"] == ("heavy" if ids[2] in HEAVY_TASKS else "light"), task
    executed = {t for t, ti in _states(stack, pipeline_run["run_id"]).items() if ti["state"] == "success"}
    assert executed <= set(ran), f"Flower has no record of {executed - set(ran)}"
    for task_id in executed:
        assert ran[task_id] <= (heavy if task_id in HEAVY_TASKS else light), (task_id, ran[task_id])
    used = set().union(*(ran[t] for t in executed if t not in HEAVY_TASKS))
    stack.say(f"compose test: light tasks ran on {sorted(used)} (replicas {sorted(light)})")
    # The task instances record the container that ran them.
    tis = _states(stack, pipeline_run["run_id"])
    assert {tis["train"]["hostname"]} == {w.split("@")[1] for w in heavy}
    assert {tis[t]["hostname"] for t in executed - HEAVY_TASKS} <= {w.split("@")[1] for w in light}


def test_registry_has_a_champion(compose_stack: ComposeStack, pipeline_run: dict) -> None:
    champion = compose_stack.champion()
    assert champion is not None, "no champion alias in the MLflow registry after the run"
    versions = compose_stack.mlflow("/api/2.0/mlflow/model-versions/search",
                                    filter=f"name='{compose_stack.env['MLOPS_MODEL_NAME']}'").json()["model_versions"]
    assert champion in {v["version"] for v in versions}


def test_task_log_from_a_worker_container_through_the_api_server(compose_stack: ComposeStack, pipeline_run: dict) -> None:
    stack = compose_stack
    resp = stack.api("GET", f"/dags/ml_pipeline_dag/dagRuns/{pipeline_run['run_id']}/taskInstances/train/logs/1",
                     headers={"Accept": "application/json"}, params={"full_content": "true"})
    assert resp.status_code == 200, resp.text[:500]
    events = [e for e in resp.json()["content"] if isinstance(e, dict)]
    # Lines the task itself logged on the heavy worker container (the project's own logger) ...
    ours = [e for e in events if e.get("task_id") == "train" and str(e.get("logger", "")).startswith("mlops")]
    assert ours, [e.get("event") for e in events][:40]
    # ... and the task instance names that container as where it ran.
    hostname = _states(stack, pipeline_run["run_id"])["train"]["hostname"]
    assert hostname in stack.hostnames("airflow-worker-heavy")


def test_prometheus_targets_up(compose_stack: ComposeStack) -> None:
    def targets() -> dict[str, str]:
        active = compose_stack.prometheus_get("/api/v1/targets")["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}

    compose_stack.wait_for("every Prometheus target up",
                           lambda: (lambda t: set(t.values()) == {"up"} and t)(targets()), timeout=90)
    assert set(targets()) == {"prometheus", "statsd-exporter", "flower", "mlflow", "pushgateway", "alertmanager",
                              "postgres-exporter", "redis-exporter", "process-exporter", "serving"}


def test_pushgateway_and_alertmanager_are_up_and_wired(compose_stack: ComposeStack, pipeline_run: dict) -> None:
    """The ML results of the run reach Prometheus through the Pushgateway (with the job of their
    grouping key), Prometheus sends its alerts to Alertmanager, which routes per severity."""
    stack = compose_stack
    # Both take logins only (stack/grants.py; test_compose_4_grants.py checks the 401s).
    scraper = grants.web_login(stack.env, "pushgateway", "prometheus")
    admin = grants.web_login(stack.env, "alertmanager", "admin")
    assert requests.get(f"{stack.url('PUSHGATEWAY_PORT')}/-/ready", auth=scraper, timeout=30).status_code == 200
    assert requests.get(f"{stack.url('ALERTMANAGER_PORT')}/-/ready", auth=admin, timeout=30).status_code == 200
    for query in ('mlops_training_holdout_roc_auc{job="mlops_training",recipe="weekly"}',
                  'mlops_champion_version{job="mlops_champion"}', 'mlops_drift_share{job="mlops_drift"}',
                  'mlops_last_success_timestamp_seconds{job="mlops_dag_run",dag_id="ml_pipeline_dag"}'):
        stack.wait_for(query, lambda: stack.prometheus_query(query), timeout=90)
    assert stack.prometheus_value('mlops_champion_version{job="mlops_champion"}') == float(stack.champion())
    managers = stack.prometheus_get("/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [m["url"] for m in managers] == ["http://alertmanager:9093/api/v2/alerts"], managers
    status = requests.get(f"{stack.url('ALERTMANAGER_PORT')}/api/v2/status", auth=admin, timeout=30).json()
    routes = yaml.safe_load(status["config"]["original"])["route"]["routes"]
    assert {r["receiver"] for r in routes} == {"critical", "warning"}


def test_run_series_reach_prometheus_through_the_statsd_double(compose_stack: ComposeStack, pipeline_run: dict) -> None:
    stack = compose_stack
    query = 'airflow_dagrun_duration_seconds_count{dag_id="ml_pipeline_dag",state="success"}'
    stack.wait_for(f"{query} above its value before the run ({pipeline_run['dagrun_success_before']})",
                   lambda: (stack.prometheus_value(query) or 0) > pipeline_run["dagrun_success_before"], timeout=90)
    for task_id in ("validate_data", "train", "evaluate"):
        q = f'airflow_ti_finish_total{{dag_id="ml_pipeline_dag",task_id="{task_id}",state="success"}}'
        stack.wait_for(q, lambda: stack.prometheus_value(q), timeout=60)
    # Task durations are sent from the worker containers (the task runner), not the scheduler.
    q = 'airflow_task_duration_seconds_count{dag_id="ml_pipeline_dag",task_id="train"}'
    stack.wait_for(q, lambda: stack.prometheus_value(q), timeout=60)
