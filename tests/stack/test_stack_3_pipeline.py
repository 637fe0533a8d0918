"""The three product DAGs on the running stack: REST-triggered runs, drift-triggered retraining,
queue routing (Flower's task API and the workers' logs) and StatsD from scheduler and workers
(recorded by the statsd-exporter test double the test stack runs)."""

from __future__ import annotations

import re
import time

import requests

HEAVY_TASKS = {("ml_pipeline_dag", "train"), ("model_retraining_dag", "retrain_model")}


def _states(stack, run: dict) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in stack.task_instances(run["dag_id"], run["dag_run_id"])}


def test_ml_pipeline_succeeds_through_rest(dags_ready, runs) -> None:
    states = _states(dags_ready, runs["ml"])
    assert runs["ml"]["state"] == "success", states
    for task in ("check_new_data", "validate_data", "preprocess", "train", "evaluate", "check_drift"):
        assert states[task] == "success", states
    assert states["deploy"] in ("success", "skipped"), states


def test_drift_triggered_retraining_succeeds(dags_ready, runs) -> None:
    retrain = runs["retrain"]
    assert retrain is not None, "check_drift did not trigger model_retraining_dag"
    drift = retrain["conf"]["drift"]
    assert drift["drift_detected"] is True and drift["week"] == runs["drift_week"], drift
    assert drift["fired"] and set(drift["fired"]) <= {"data", "model", "label"}, drift
    for name in drift["fired"]:
        assert drift["signals"][name]["fired"] is True, drift
    if "data" in drift["fired"]:
        assert drift["signals"]["data"]["share"] >= float(runs["drift_share"]), drift
    states = _states(dags_ready, retrain)
    assert retrain["state"] == "success", states
    # retrain_model is mapped: one task instance per recipe, all on the heavy queue.
    fan = [t for t in dags_ready.task_instances(retrain["dag_id"], retrain["dag_run_id"])
           if t["task_id"] == "retrain_model"]
    from mlops.config import load_recipes
    from mlops_airflow import recipe_names

    # The flights' recipes train; those only other data sets have (mapped after them) are skipped.
    flights = len(load_recipes())
    assert sorted(t["map_index"] for t in fan) == list(range(len(recipe_names())))
    assert all(t["state"] == ("success" if t["map_index"] < flights else "skipped") and t["queue"] == "heavy"
               for t in fan), fan
    assert states["evaluate_new_model"] == "success", states
    # compare_models branches: exactly one of deploy / rollback runs.
    assert {states["deploy_new_model"], states["rollback_model"]} == {"success", "skipped"}, states


def test_data_validation_succeeds(dags_ready, runs) -> None:
    states = _states(dags_ready, runs["validation"])
    assert runs["validation"]["state"] == "success", states
    assert states and all(s == "success" for s in states.values()), states


def test_routing_heavy_tasks_on_heavy_worker_only(dags_ready, runs) -> None:
    stack = dags_ready
    auth = (stack.cfg.env["FLOWER_USER"], stack.cfg.env["FLOWER_PASSWORD"])
    tasks = requests.get(f"{stack.cfg.flower_url}/api/tasks", auth=auth, timeout=30).json()
    run_ids = {runs[k]["dag_run_id"] for k in ("ml", "retrain", "validation")}
    seen: dict[tuple[str, str], set[str]] = {}
    for task in tasks.values():
        # args holds the Airflow workload (truncated by Celery); its log_path names the task.
        found = re.search(r"dag_id=([^/]+)/run_id=([^/]+)/task_id=([^/]+)/", task.get("args") or "")
        if not found or found.group(2) not in run_ids:
            continue
        dag_id, _, task_id = found.groups()
        queue = "heavy" if (dag_id, task_id) in HEAVY_TASKS else "light"
        assert task["routing_key"] == queue, task
        seen.setdefault((dag_id, task_id), set()).add(task["worker"].split("@")[0])
    ran = {(r["dag_id"], t["task_id"], t["queue"]) for k in ("ml", "retrain", "validation") for r in [runs[k]]
           for t in stack.task_instances(r["dag_id"], r["dag_run_id"]) if t["state"] == "success"}
    assert HEAVY_TASKS <= {(d, t) for d, t, _ in ran}
    for dag_id, task_id, queue in ran:
        expected_heavy = (dag_id, task_id) in HEAVY_TASKS
        assert queue == ("heavy" if expected_heavy else "light"), (dag_id, task_id, queue)
        workers = seen.get((dag_id, task_id))
        assert workers, f"Flower has no record of {dag_id}.{task_id}"
        allowed = {"heavy1"} if expected_heavy else {"light1", "light2"}
        assert workers <= allowed, f"{dag_id}.{task_id} (queue {queue}) ran on {workers}"
    # The workers' own logs agree: the heavy worker ran only heavy tasks.
    heavy_log = (stack.cfg.logs / "worker-heavy1.log").read_text()
    heavy_ran = set(re.findall(r"dag_id=([\w.-]+)/run_id=[^/]+/task_id=([\w.-]+)/", heavy_log))
    assert heavy_ran and heavy_ran <= HEAVY_TASKS, heavy_ran
    for name in ("light1", "light2"):
        light_log = (stack.cfg.logs / f"worker-{name}.log").read_text()
        assert not set(re.findall(r"dag_id=([\w.-]+)/run_id=[^/]+/task_id=([\w.-]+)/", light_log)) & HEAVY_TASKS


def test_one_log_server_serves_every_workers_task_logs(dags_ready, runs) -> None:
    """On one host one log server (its own program, not a worker: it holds the key that signs UI
    sessions) serves every worker's task logs from the shared folder, to signed requests only,
    on 127.0.0.1 (Airflow's own log server binds every interface)."""
    import jwt

    stack = dags_ready
    base = stack.cfg.logs / "airflow"
    log_file = next(base.glob(f"dag_id=ml_pipeline_dag/run_id={runs['ml']['dag_run_id']}/task_id=train/attempt=*.log"))
    rel = log_file.relative_to(base).as_posix()
    url = f"http://127.0.0.1:{stack.cfg.ports['AIRFLOW_LOG_SERVER_PORT']}/log/{rel}"
    now = int(time.time())
    claims = {"filename": rel, "aud": "task-instance-logs", "iat": now, "nbf": now, "exp": now + 30}
    token = jwt.encode(claims, stack.cfg.env["AIRFLOW_API_SECRET_KEY"], algorithm="HS512")
    resp = requests.get(url, headers={"Authorization": token}, timeout=30)
    assert resp.status_code == 200, resp.text[:500]
    assert resp.text == log_file.read_text() and "train" in resp.text
    assert requests.get(url, timeout=30).status_code == 403
    forged = jwt.encode(claims, "not-the-secret-key-of-this-stack-" * 3, algorithm="HS512")
    assert requests.get(url, headers={"Authorization": forged}, timeout=30).status_code == 403


def test_statsd_from_scheduler_and_workers(dags_ready, runs) -> None:
    names = dags_ready.statsd.names(since=runs["t0"])
    # Sent by the scheduler loop and its executor.
    assert {"airflow.scheduler_heartbeat", "airflow.executor.open_slots"} <= names, sorted(names)[:50]
    assert "airflow.dagrun.duration.success.ml_pipeline_dag" in names
    # Sent by the task runner inside the Celery workers (airflow/sdk/execution_time/task_runner.py).
    for name in ("airflow.ti.start.ml_pipeline_dag.train", "airflow.ti.finish.ml_pipeline_dag.train.success",
                 "airflow.ti.finish.model_retraining_dag.retrain_model.success", "airflow.task.duration"):
        assert name in names, (name, sorted(n for n in names if ".ti." in n)[:40])
    # The ML results go to the Pushgateway, not to StatsD.
    assert not any(n.startswith("mlops.") for n in names), sorted(n for n in names if n.startswith("mlops"))


def test_every_emitted_statsd_name_is_mapped_or_dropped(dags_ready, runs) -> None:
    """Every StatsD name this running stack sent is matched by observability/statsd/mapping.yml,
    by a mapping rule or by a drop rule on purpose: nothing reaches Prometheus unmapped."""
    from testkit import statsd_mapping as mapping
    sent: set[tuple[str, str]] = set()
    for _, line in list(dags_ready.statsd.lines):
        sent.update(mapping.parse_statsd_packet(line))
    assert len(sent) > 30, sorted(sent)
    unmatched = sorted(f"{name}|{kind}" for name, kind in sent if mapping.match(name, kind) is None)
    assert not unmatched, unmatched
