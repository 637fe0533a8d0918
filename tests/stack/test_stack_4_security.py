"""Fernet-encrypted connections, Flower's basic auth and /metrics, Prometheus targets, MLflow /metrics."""

from __future__ import annotations

import json
import subprocess
import time

import psycopg2
import requests
from cryptography.fernet import Fernet

from stack.config import VENV_BIN
from stack.ctl import mlflow_metrics_available


def test_connection_password_is_fernet_encrypted_in_postgres(stack) -> None:
    secret = "probe-" + stack.cfg.env["AIRFLOW_API_SECRET_KEY"][:16]
    body = {"connection_id": "stack_fernet_probe", "conn_type": "http", "host": "example.invalid",
            "login": "probe", "password": secret}
    resp = stack.api("POST", "/connections", json=body)
    assert resp.status_code == 201, resp.text
    conn = psycopg2.connect(host="127.0.0.1", port=stack.cfg.ports["POSTGRES_PORT"],
                            user=stack.cfg.env["POSTGRES_USER"], password=stack.cfg.env["POSTGRES_PASSWORD"],
                            dbname=stack.cfg.env["POSTGRES_DB"])
    with conn, conn.cursor() as cur:
        cur.execute("SELECT password, is_encrypted FROM connection WHERE conn_id = %s", ("stack_fernet_probe",))
        raw, encrypted = cur.fetchone()
    conn.close()
    assert encrypted is True and secret not in raw
    assert Fernet(stack.cfg.env["AIRFLOW_FERNET_KEY"].encode()).decrypt(raw.encode()).decode() == secret
    # Airflow itself decrypts it again.
    out = subprocess.run([str(VENV_BIN / "airflow"), "connections", "get", "stack_fernet_probe", "-o", "json"],
                         env=stack.component_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)[0]["password"] == secret


def test_flower_needs_its_password(stack) -> None:
    url = f"{stack.cfg.flower_url}/api/workers"
    user, password = stack.cfg.env["FLOWER_USER"], stack.cfg.env["FLOWER_PASSWORD"]
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, auth=(user, password + "x"), timeout=30).status_code == 401
    resp = requests.get(url, auth=(user, password), params={"refresh": 1}, timeout=30)
    assert resp.status_code == 200
    assert {name.split("@")[0] for name in resp.json()} == {"light1", "light2", "heavy1", "maintenance1"}


def test_flower_metrics_have_worker_and_task_series(stack, runs) -> None:
    text = requests.get(f"{stack.cfg.flower_url}/metrics", timeout=30).text
    online = [line for line in text.splitlines() if line.startswith("flower_worker_online{")]
    assert {line.split('worker="')[1].split("@")[0] for line in online} == {"light1", "light2", "heavy1", "maintenance1"}
    assert all(line.endswith(" 1.0") for line in online), online
    assert "flower_events_total{" in text and 'task="execute_workload"' in text and "task-succeeded" in text
    assert "flower_task_runtime_seconds_bucket{" in text


def test_prometheus_targets_up(stack) -> None:
    """Every target answers (MLflow's metrics through the stack's exporter, no login; the Airflow
    metrics through the statsd-exporter test double of the test stack; the stack's own health
    through Debian's postgres-, redis- and process-exporter)."""
    expected = {"prometheus", "flower", "pushgateway", "alertmanager", "statsd-exporter", "postgres-exporter",
                "redis-exporter", "process-exporter", "serving"} | (
        {"mlflow"} if mlflow_metrics_available() else set())
    deadline = time.monotonic() + 45  # one scrape interval (15 s) plus slack
    while True:
        targets = requests.get(f"{stack.cfg.prometheus_url}/api/v1/targets", timeout=30).json()["data"]
        health = {t["labels"]["job"]: t["health"] for t in targets["activeTargets"]}
        if set(health) == expected and all(h == "up" for h in health.values()):
            break
        assert time.monotonic() < deadline, health
        time.sleep(2)


def test_mlflow_metrics_endpoint(stack) -> None:
    """MLflow's own /metrics: 401 anonymous, 403 for a non-admin login (MLflow's auth is fail-closed
    for routes without a permission check), 200 for the admin; the stack's exporter serves the same
    series on 127.0.0.1 without a login, for Prometheus."""
    url = f"{stack.cfg.mlflow_url}/metrics"
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, auth=stack.mlflow_login("viewer"), timeout=30).status_code == 403
    resp = requests.get(url, auth=stack.mlflow_login("admin"), timeout=30)
    exporter = requests.get(f"http://127.0.0.1:{stack.cfg.ports['MLFLOW_METRICS_PORT']}/metrics", timeout=30)
    if mlflow_metrics_available():
        assert resp.status_code == 200 and "mlflow_http_request_total" in resp.text
        assert exporter.status_code == 200 and "mlflow_http_request_total" in exporter.text
    else:
        # Without prometheus-flask-exporter the server runs without --expose-prometheus.
        assert "mlflow_http_request_total" not in resp.text
