"""The stack's own health on the native path, and no false alarm on a healthy stack.

The exporters are Debian's binaries (prometheus-postgres-exporter with the queries of
observability/postgres-exporter/queries.yml, prometheus-redis-exporter,
prometheus-process-exporter), scraped by the session stack's Prometheus: the figures are checked
against what the REST API and supervisord say. The Airflow dashboard's stack-health row answers
with data.

No false alarm: after the session's pipeline run and retraining (`runs`) and the lifecycle's
retrainings (test_stack_6_lifecycle, just before in file order), the stack stays idle. The test
stack runs the production rules on a compressed clock (tests/lib/testkit/alert_clock.py: every window at
most 30 s, every `for:` at most 5 s, evaluation every 2 s, scrape every 5 s), so any condition that
holds on an idle stack fires within about 42 s: an idle minute gives every rule its chance. During
it no alert may be pending or firing at Prometheus, nor reach the webhook, except the ML alerts the
data justifies (the summer week's drift and the champion's AUC on it) and MlPipelineRunOverdue
(this stack schedules nothing, and on the compressed clock 30 s stand for the 8 days it allows).
The alerts that earlier tests provoked on purpose (a restart, MLflow down) must have resolved
first, within a bounded settle time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from stack.health import supervisor

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "observability" / "grafana" / "dashboards" / "airflow.json"
# Alerts the session's data justifies (see the module docstring).
JUSTIFIED = {"MlDriftDetected", "MlChampionAucBelowFloor", "MlPipelineRunOverdue"}
# Longest window 30 s + for 5 s + one scrape 5 s + one evaluation 2 s, with margin.
IDLE_S = 60
SETTLE_S = 90
EXPORTER_JOBS = ("postgres-exporter", "redis-exporter", "process-exporter")


def _query(stack, expr: str) -> list[dict]:
    resp = requests.get(f"{stack.cfg.prometheus_url}/api/v1/query", params={"query": expr}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]["result"]


def _value(stack, expr: str) -> float | None:
    result = _query(stack, expr)
    return float(result[0]["value"][1]) if result else None


def _wait_value(stack, expr: str, check, timeout: float = 60) -> float:
    """The value of `expr` once `check(value)` holds (the exporters are scraped every 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        value = _value(stack, expr)
        if value is not None and check(value):
            return value
        assert time.monotonic() < deadline, f"{expr} = {value} after {timeout} s"
        time.sleep(1)


def _unjustified(stack) -> list[tuple[str, str, dict]]:
    resp = requests.get(f"{stack.cfg.prometheus_url}/api/v1/alerts", timeout=30)
    assert resp.status_code == 200, resp.text
    found = [(a["labels"]["alertname"], a["state"], a["labels"]) for a in resp.json()["data"]["alerts"]
             if a["labels"]["alertname"] not in JUSTIFIED]
    return found


def test_exporters_are_scraped_with_data(dags_ready, runs) -> None:
    stack = dags_ready
    assert runs["ml"]["state"] == "success" and runs["retrain"] is not None
    for job in EXPORTER_JOBS:
        _wait_value(stack, f'up{{job="{job}"}}', lambda v: v == 1)
    # The metadata database, through the exporter's read-only login: the same counts as the API.
    for dag_id in ("ml_pipeline_dag", "model_retraining_dag"):
        listed = stack.api("GET", f"/dags/{dag_id}/dagRuns", params={"state": "success", "limit": 1}).json()
        _wait_value(stack, f'airflow_db_dag_runs_count{{dag_id="{dag_id}", state="success"}}',
                    lambda v, n=listed["total_entries"]: v == n)
        assert _value(stack, f'airflow_db_dag_run_last_duration_seconds{{dag_id="{dag_id}", state="success"}}') > 0
    heavy = stack.api("GET", "/dags/~/dagRuns/~/taskInstances", params={"queue": "heavy", "state": "success",
                                                                        "limit": 1}).json()["total_entries"]
    assert heavy >= 1
    _wait_value(stack, 'airflow_db_task_instances_count{queue="heavy", state="success"}', lambda v: v >= heavy)
    age = _value(stack, 'time() - airflow_db_job_latest_heartbeat_seconds{job_type="SchedulerJob"}')
    assert age is not None and age < 30, age
    # Nothing waits in the broker on an idle stack; the lists are watched (0 when empty).
    for queue in ("light", "heavy"):
        assert _value(stack, f'redis_key_size{{key="{queue}"}}') == 0
    # Every long-lived component is a process group with memory and CPU.
    for group in ("scheduler", "api-server", "dag-processor", "triggerer", "worker-light", "worker-heavy",
                  "worker-light-pool", "postgres", "redis", "mlflow"):
        assert _value(stack, f'namedprocess_namegroup_num_procs{{groupname="{group}"}}') >= 1, group
        assert _value(stack, f'namedprocess_namegroup_memory_bytes{{groupname="{group}", memtype="resident"}}') > 0
    assert _value(stack, 'sum(namedprocess_namegroup_cpu_seconds_total{groupname="scheduler"})') > 0
    assert _value(stack, 'sum(namedprocess_namegroup_states{state="Zombie"})') is not None
    # The exporter's login reads what its queries need and nothing else.
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=stack.cfg.ports["POSTGRES_PORT"],
                            user=stack.cfg.env["POSTGRES_EXPORTER_USER"],
                            password=stack.cfg.env["POSTGRES_EXPORTER_PASSWORD"], dbname=stack.cfg.env["POSTGRES_DB"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM dag_run")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("SELECT count(*) FROM connection")
    finally:
        conn.close()


def test_the_airflow_dashboards_stack_health_row_shows_data(dags_ready, runs) -> None:
    """Each query of the row has values over the time since the session's runs started, as Grafana
    draws it (the oldest-queued panel has a series only while a task waits: see test_stack_8)."""
    stack = dags_ready
    dashboard = json.loads(DASHBOARD.read_text())
    row = [p for p in dashboard["panels"] if 100 < p["id"] < 110]
    assert len(row) == 9
    empty = []
    for panel in row:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$dag_id", ".*")
            resp = requests.get(f"{stack.cfg.prometheus_url}/api/v1/query_range", timeout=30,
                                params={"query": expr, "start": runs["t0"], "end": time.time(), "step": 5})
            assert resp.status_code == 200, resp.text
            if not resp.json()["data"]["result"] and panel["id"] != 103:
                empty.append((panel["title"], expr))
    assert not empty, empty


def test_no_false_alarm_on_an_idle_stack(dags_ready, runs) -> None:
    stack = dags_ready
    rpc = supervisor(stack.cfg).supervisor
    assert all(p["statename"] == "RUNNING" for p in rpc.getAllProcessInfo()), rpc.getAllProcessInfo()
    settle = time.monotonic() + SETTLE_S
    while _unjustified(stack):
        assert time.monotonic() < settle, f"still pending/firing after {SETTLE_S} s: {_unjustified(stack)}"
        time.sleep(2)
    t_idle, seen = time.time(), []
    end = time.monotonic() + IDLE_S
    while time.monotonic() < end:
        seen += _unjustified(stack)
        time.sleep(2)
    notices = [(e["labels"]["alertname"], e["status"]) for e in stack.alerts.events(since=t_idle)
               if e["status"] == "firing" and e["labels"]["alertname"] not in JUSTIFIED]
    assert not seen and not notices, (seen, notices)
    # The rules were live: every rule evaluated without error, on exporters that answered.
    groups = requests.get(f"{stack.cfg.prometheus_url}/api/v1/rules", timeout=30).json()["data"]["groups"]
    assert {r["name"]: r["health"] for g in groups for r in g["rules"] if r["health"] != "ok"} == {}
    for job in EXPORTER_JOBS:
        assert _value(stack, f'min_over_time(up{{job="{job}"}}[{IDLE_S}s])') == 1, job
    assert all(p["statename"] == "RUNNING" for p in rpc.getAllProcessInfo())
