"""The test stack comes up healthy, `status` lists every component, supervisord restarts a crash."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

import requests
from cryptography.fernet import Fernet

from stack import config as stack_config
from stack import envfile, health

REPO = Path(__file__).resolve().parents[2]


def test_status_lists_every_component_healthy(stack) -> None:
    result = stack.ctl("status")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    ports = stack.cfg.ports
    for name, port in (("postgres", ports["POSTGRES_PORT"]), ("redis", ports["REDIS_PORT"]),
                       ("prometheus", ports["PROMETHEUS_PORT"]), ("pushgateway", ports["PUSHGATEWAY_PORT"]),
                       ("alertmanager", ports["ALERTMANAGER_PORT"]), ("mlflow", ports["MLFLOW_PORT"]),
                       ("api-server", ports["AIRFLOW_API_PORT"]), ("flower", ports["FLOWER_PORT"]),
                       ("log-server", ports["AIRFLOW_LOG_SERVER_PORT"]), ("worker-light1", "-"),
                       ("worker-light2", "-"), ("worker-heavy1", "-"), ("triggerer", "-"),
                       ("serving", ports["SERVING_PORT"])):
        assert lines[name].split()[1] == str(port), lines[name]
        assert "RUNNING" in lines[name] and "healthy" in lines[name], lines[name]
    for name in ("scheduler", "dag-processor", "triggerer"):
        assert "RUNNING" in lines[name] and "heartbeat healthy" in lines[name], lines[name]
    # The test stack runs the statsd-exporter test double (no statsd_exporter binary here); no
    # Grafana binary either: status says so plainly.
    assert "RUNNING" in lines["statsd-exporter"] and "healthy" in lines["statsd-exporter"]
    assert "absent" in lines["grafana"] and "compose" in lines["grafana"]
    # Alertmanager says where alerts go (the session's webhook), without the URL itself.
    assert "receivers critical: webhook; warning: webhook" in lines["alertmanager"], lines["alertmanager"]
    assert stack.cfg.env["ALERT_WEBHOOK_URL"] not in result.stdout


def test_workers_have_their_own_names_and_queues(stack) -> None:
    from celery import Celery

    app = Celery(broker=stack.cfg.broker_url)
    try:
        queues = app.control.inspect(timeout=5).active_queues() or {}
    finally:
        app.close()
    by_worker = {name.split("@")[0]: sorted(q["name"] for q in qs) for name, qs in queues.items()}
    assert by_worker == {"light1": ["light"], "light2": ["light"], "heavy1": ["heavy"]}


def test_the_heavy_queue_runs_at_a_lower_cpu_priority(stack) -> None:
    """The heavy worker and every process under it (its pool, its tasks) run at nice 10, the light
    workers at 0: a training yields the CPU to light tasks and the control plane."""
    import psutil

    sup = health.supervisor(stack.cfg).supervisor
    heavy = psutil.Process(sup.getProcessInfo("airflow:worker-heavy1")["pid"])
    # nice exec'd the worker: supervisord's process is Celery itself (its process title), no wrapper.
    assert heavy.cmdline()[0].startswith("[celeryd: heavy1@"), heavy.cmdline()
    for program, nice in (("airflow:worker-heavy1", 10), ("airflow:worker-light1", 0), ("airflow:scheduler", 0)):
        root = psutil.Process(sup.getProcessInfo(program)["pid"])
        assert {p.nice() for p in [root, *root.children(recursive=True)]} == {nice}, program


def test_supervisord_restarts_a_crashed_component(stack) -> None:
    rpc = health.supervisor(stack.cfg)
    before = rpc.supervisor.getProcessInfo("prometheus")["pid"]
    os.kill(before, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        info = rpc.supervisor.getProcessInfo("prometheus")
        if info["statename"] == "RUNNING" and info["pid"] not in (0, before):
            try:
                if requests.get(f"{stack.cfg.prometheus_url}/-/ready", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
        assert time.monotonic() < deadline, f"prometheus not restarted within 60 s: {info}"
        time.sleep(0.5)
    assert re.search(r"exited: prometheus \(terminated by SIGKILL", (stack.cfg.logs / "supervisord.log").read_text())


def test_env_file_has_generated_private_secrets(stack) -> None:
    env = stack.cfg.env
    assert stat.S_IMODE(stack.env_file.stat().st_mode) == 0o600
    secrets = {k: v for k, v in env.items() if envfile.is_secret(k)}
    assert {"AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "FLOWER_PASSWORD",
            "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_OP_PASSWORD", "AIRFLOW_ML_PASSWORD",
            "AIRFLOW_VIEWER_PASSWORD", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
            "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_VIEWER_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= set(secrets)
    assert all(len(v) >= 20 for v in secrets.values()), "a secret is empty or short"
    # HS512 signing keys: 64 bytes or more, or PyJWT warns on every token in every component.
    assert len(env["AIRFLOW_JWT_SECRET"]) >= 64 and len(env["AIRFLOW_API_SECRET_KEY"]) >= 64
    assert len(set(secrets.values())) == len(secrets), "two secrets share a value"
    Fernet(env["AIRFLOW_FERNET_KEY"].encode())  # raises when not a valid Fernet key
    assert envfile.ensure(stack.env_file, stack_config.EXAMPLE_ENV) == env, "a later run changed .env"


def test_bad_env_file_is_refused_naming_file_and_line(stack, tmp_path) -> None:
    bad = tmp_path / "bad.env"
    text = stack.env_file.read_text()
    bad.write_text(text + "this line is not KEY=VALUE\n")
    result = stack.ctl("status", env_file=bad)
    assert result.returncode == 1
    assert f"{bad}:{len(text.splitlines()) + 1}" in result.stderr and "KEY=VALUE" in result.stderr
    bad.write_text(text.replace(f"REDIS_PORT={stack.cfg.ports['REDIS_PORT']}", "REDIS_PORT=6379"))
    result = stack.ctl("up", env_file=bad)
    assert result.returncode == 1 and "REDIS_PORT=6379" in result.stderr and str(bad) in result.stderr
    assert bad.read_text().count("REDIS_PORT=6379") == 1, "the env file must not be rewritten"


def _airflow_env_value(key: str) -> str:
    for line in (REPO / "airflow" / "airflow.env").read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1]
    raise KeyError(key)


def test_scheduler_is_the_wake_on_work_runner(stack) -> None:
    """The scheduler runs mlops_airflow.scheduler with the shared settings, and its work-state
    query runs as a prepared statement in autocommit (never idle in a transaction)."""
    pid = health.supervisor(stack.cfg).supervisor.getProcessInfo("airflow:scheduler")["pid"]
    assert b"mlops_airflow.scheduler" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    longest = float(_airflow_env_value("AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"))
    poll = float(_airflow_env_value("MLOPS_SCHEDULER_WAKE_POLL_S"))
    log = (stack.cfg.logs / "scheduler.log").read_text()
    assert f"Scheduler idle sleep: at most {longest:.2f} s" in log and f"within {poll:.2f} s" in log, log[-2000:]

    env = stack.cfg.env
    conn = psycopg2.connect(host="127.0.0.1", port=stack.cfg.ports["POSTGRES_PORT"], dbname=env["POSTGRES_DB"],
                            user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"])
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            deadline = time.monotonic() + 30
            while True:
                cur.execute("SELECT state FROM pg_stat_activity WHERE query = 'EXECUTE mlops_work_state'")
                states = [row[0] for row in cur.fetchall()]
                if states or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    finally:
        conn.close()
    assert states and set(states) <= {"idle", "active"}, states


def test_mlflow_is_one_process(stack) -> None:
    """MLflow's CLI prepared the server and exec'd it (stack/mlflow_server.py): supervisord's
    `mlflow` program is the uvicorn server itself, no launcher beside it, and it answers."""
    import psutil

    pid = health.supervisor(stack.cfg).supervisor.getProcessInfo("mlflow")["pid"]
    proc = psutil.Process(pid)
    assert proc.cmdline()[1:3] == ["-m", "uvicorn"], proc.cmdline()
    assert proc.children(recursive=True) == []
    assert requests.get(f"{stack.cfg.mlflow_url}/health", timeout=10).status_code == 200


def test_work_state_matches_the_metadata_database(stack) -> None:
    """WorkStateProbe on the stack's PostgreSQL: prepared, and its counts are the database's."""
    script = """
import json
from sqlalchemy import text
from airflow import settings
from mlops_airflow.scheduler import WorkStateProbe
probe = WorkStateProbe()
state = probe.read()
with settings.engine.connect() as conn:
    direct = conn.execute(text(
        "SELECT (SELECT count(*) FROM dag_run WHERE state = 'queued'),"
        " (SELECT count(*) FROM dag_run WHERE state = 'running'),"
        " (SELECT count(*) FROM task_instance WHERE state = 'scheduled'),"
        " (SELECT count(*) FROM task_instance WHERE state IN ('queued', 'running')),"
        " (SELECT count(*) FROM task_instance WHERE state = 'deferred')")).one()
print(json.dumps({"query": probe.query, "state": list(state), "again": list(probe.read()), "direct": list(direct)}))
"""
    proc = subprocess.run([sys.executable, "-c", script], env=stack.component_env(), capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["query"] == "EXECUTE mlops_work_state"
    assert len(out["state"]) == 7 and all(isinstance(v, bool) for v in out["state"][5:]), out
    # Nothing runs on the idle test stack between the two reads.
    assert out["state"][:5] == out["again"][:5] == out["direct"], out


def test_declared_pools_exist(stack) -> None:
    """airflow/bootstrap.py applied airflow/pools.yaml: the registry pool serialises across hosts."""
    import yaml

    declared = yaml.safe_load((REPO / "airflow" / "pools.yaml").read_text())["pools"]
    assert "model_registry" in declared
    for name, body in declared.items():
        resp = stack.api("GET", f"/pools/{name}")
        assert resp.status_code == 200, resp.text
        assert resp.json()["slots"] == body["slots"], resp.json()
    assert "pool model_registry: created with 1 slot(s)" in (stack.cfg.logs / "bootstrap.log").read_text()
