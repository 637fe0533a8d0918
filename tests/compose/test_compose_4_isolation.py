"""Who runs what and who holds which secret, on the containers (the native stack's claims of
tests/stack/test_stack_4_isolation.py, where they apply):

- every Airflow container's environment (`docker inspect`) holds exactly the secrets of its grants
  in the native component table (stack/components.py), and no other secret of the env file; each
  Celery worker container holds the broker's password and nothing else (also read with
  `docker exec env`);
- inside real tasks on both queues (the native stack's probe DAG, tests/stack/dags, copied into the
  running containers' DAG folder): no such secret, no MLflow login, not root, no signing key;
- the log of a task still running on a worker container is read through the api-server, from the
  shared airflow-logs volume (no worker serves logs);
- no process of a long-running container runs as root (real, effective or saved uid); the one
  root container is the one-shot airflow-init;
- MLflow's auth config, written at start, is mode 600.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

from stack import envfile, grants
from stack.components import CONTROL_GRANTS, WORKER_GRANTS

from testkit.compose_stack import ONE_SHOT, WORKER_SECRETS, ComposeStack

PROBE_DAG_FILE = Path(__file__).resolve().parents[1] / "stack" / "dags" / "security_probe_dag.py"
PROBE_DAG = "stack_security_probe"
DAG_FOLDER = "/opt/mlops/dags"
SIGNING_KEY = "/opt/airflow/jwt-signing-key/jwt-signing.pem"
NO_DATABASE_URL = "postgresql+psycopg2://no-database-access@postgres:5432/no-database-access"
WORKERS = ("airflow-worker-light", "airflow-worker-heavy")
# Compose service -> the native component whose grants it has (the api-server also stands in for
# the native log server: no service here serves logs).
GRANTS = {
    "airflow-apiserver": CONTROL_GRANTS["api-server"],
    "airflow-scheduler": CONTROL_GRANTS["scheduler"],
    "airflow-dag-processor": CONTROL_GRANTS["dag-processor"],
    "airflow-triggerer": CONTROL_GRANTS["triggerer"],
    "flower": CONTROL_GRANTS["flower"],
    "airflow-worker-light": WORKER_GRANTS,
    "airflow-worker-heavy": WORKER_GRANTS,
}
# The env-file secret (or setting) that shows a container holds a grant.
GRANT_EVIDENCE = {
    "metadata-db": ("secret", "AIRFLOW_DB_PASSWORD"),
    "fernet-key": ("secret", "AIRFLOW_FERNET_KEY"),
    "api-secret-key": ("secret", "AIRFLOW_API_SECRET_KEY"),
    "ui-secret-key": ("secret", "AIRFLOW_UI_SECRET_KEY"),
    **{f"broker-{user.name}": ("secret", user.password_var) for user in grants.REDIS_USERS},
    "flower-login": ("secret", "FLOWER_PASSWORD"),
    "jwt-signing-key": ("setting", "AIRFLOW__API_AUTH__JWT_PRIVATE_KEY_PATH"),
    "jwt-public-key": ("setting", "AIRFLOW__API_AUTH__TRUSTED_JWKS_URL"),
}


def _secrets(stack: ComposeStack) -> dict[str, str]:
    """Every generated secret of the env file (name -> value)."""
    return {k: v for k, v in stack.env.items() if envfile.is_secret(k) and v}


def _leaks(text: str, secrets: dict[str, str]) -> set[str]:
    """Names of the secrets whose value (or URL-encoded value) occurs in `text`."""
    return {name for name, value in secrets.items() if value in text or quote(value, safe="") in text}


def _env(container: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container["Config"]["Env"])


def test_each_airflow_container_holds_exactly_its_grants(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    secrets = _secrets(stack)
    seen = set()
    for container in stack.containers(all_states=False):
        service = container["Config"]["Labels"]["com.docker.compose.service"]
        if service not in GRANTS:
            continue
        seen.add(service)
        env = _env(container)
        leaked = _leaks(json.dumps(env), secrets)
        held = {grant for grant, (kind, name) in GRANT_EVIDENCE.items()
                if (name in leaked if kind == "secret" else name in env)}
        assert held == GRANTS[service], (container["Name"], sorted(held), sorted(GRANTS[service]))
        allowed = {name for grant in GRANTS[service] for kind, name in [GRANT_EVIDENCE[grant]] if kind == "secret"}
        if service in WORKERS:
            allowed.add("PUSHGATEWAY_PUSH_PASSWORD")  # the ML steps' push login
        assert leaked <= allowed, (container["Name"], sorted(leaked - allowed))
        if "metadata-db" not in GRANTS[service]:
            assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == NO_DATABASE_URL, container["Name"]
    assert seen == set(GRANTS)


def test_worker_containers_hold_the_broker_and_nothing_else(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    forbidden = {k: v for k, v in _secrets(stack).items() if k not in WORKER_SECRETS}
    workers = [c for service in WORKERS for c in stack.containers(service, all_states=False)]
    assert len(workers) == 3
    for container in workers:
        for source, text in (("inspect", json.dumps(container["Config"])),
                             ("exec env", stack.docker("exec", container["Id"], "env").stdout)):
            assert "AIRFLOW__CELERY__BROKER_URL" in text, source
            assert not _leaks(text, forbidden), (container["Name"], source, sorted(_leaks(text, forbidden)))
        env = _env(container)
        assert not {k for k in env if k.startswith("AIRFLOW__API_AUTH__")}, container["Name"]
        assert "AIRFLOW__CORE__FERNET_KEY" not in env and "AIRFLOW__API__SECRET_KEY" not in env
        assert not {k for k in env if k.startswith("MLFLOW_TRACKING_")} - {"MLFLOW_TRACKING_URI"}
        password = stack.env["REDIS_WORKER_PASSWORD"]
        assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://worker:{password}@redis:6379/0"
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == f"redis://worker:{password}@redis:6379/1"
        # No signing key and no JWKS volume in a worker container.
        assert not [m for m in container["Mounts"] if m.get("Destination", "").startswith("/opt/airflow/j")]


def _install_probe_dag(stack: ComposeStack) -> None:
    """Copy the probe DAG into the DAG folder of the dag-processor and every worker container, then
    parse it at once (the dag-processor would find a new file only at its next folder scan)."""
    source = PROBE_DAG_FILE.read_text()
    for service in ("airflow-dag-processor", *WORKERS):
        for container in stack.containers(service, all_states=False):
            out = stack.docker_exec(container["Id"], "sh", "-c", f"cat > {DAG_FOLDER}/{PROBE_DAG_FILE.name}",
                                    input_text=source)
            assert out.returncode == 0, (container["Name"], out.stderr)
    out = stack.exec("airflow-dag-processor", "airflow", "dags", "reserialize", "--bundle-name", "dags-folder",
                     timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    stack.wait_for(f"{PROBE_DAG} in the API", lambda: stack.api("GET", f"/dags/{PROBE_DAG}").status_code == 200,
                   timeout=60)


def _read_running_log(stack: ComposeStack, run_id: str) -> str:
    """The log of probe_served_log read through the REST API while the task runs; then release it."""
    release = f"/opt/mlops/data/security-probe/{run_id}.release"
    path = f"/dags/{PROBE_DAG}/dagRuns/{run_id}/taskInstances/probe_served_log/logs/1"
    deadline = time.monotonic() + 240
    text = ""
    try:
        while time.monotonic() < deadline:
            ti = stack.api("GET", f"/dags/{PROBE_DAG}/dagRuns/{run_id}/taskInstances/probe_served_log")
            state = ti.json().get("state") if ti.status_code == 200 else None
            if state == "running":
                resp = stack.api("GET", path, params={"full_content": "true"}, headers={"Accept": "application/json"})
                text = resp.text
                if resp.status_code == 200 and "SECURITY-PROBE-MARKER" in text:
                    return text
            elif state in ("success", "failed"):
                break
            time.sleep(0.5)
        return text
    finally:
        out = stack.exec("airflow-worker-heavy", "sh", "-c",
                         f"mkdir -p /opt/mlops/data/security-probe && touch '{release}'")
        assert out.returncode == 0, out.stderr


def test_tasks_hold_no_key_and_a_running_log_is_read_through_the_api_server(dags_ready: ComposeStack,
                                                                            pipeline_run: dict, phases) -> None:
    stack = dags_ready
    with phases.phase("probe DAG copied in and parsed"):
        _install_probe_dag(stack)
    with phases.phase("probe DAG run (a task per queue, a running log read)"):
        run_id = stack.trigger(PROBE_DAG, conf={"paths": [SIGNING_KEY, "/tmp/mlflow-auth/basic_auth.ini"]})
        served = _read_running_log(stack, run_id)
        run = stack.wait_run(PROBE_DAG, run_id, timeout=300)
    tis = {t["task_id"]: t for t in stack.task_instances(PROBE_DAG, run_id)}
    states = {task_id: (t["state"], t["queue"]) for task_id, t in tis.items()}
    assert run["state"] == "success", states
    assert states == {"probe_light": ("success", "light"), "probe_heavy": ("success", "heavy"),
                      "probe_served_log": ("success", "light")}
    # A task still running on a light worker container: its log through the api-server, read from
    # the shared airflow-logs volume (the source list names the file).
    assert f"SECURITY-PROBE-MARKER {run_id}" in served, served[-2000:]
    assert f"/opt/airflow/logs/dag_id={PROBE_DAG}/" in served, served[-2000:]
    assert tis["probe_served_log"]["hostname"] in stack.hostnames("airflow-worker-light")
    assert tis["probe_heavy"]["hostname"] in stack.hostnames("airflow-worker-heavy")
    forbidden = {k: v for k, v in _secrets(stack).items() if k not in WORKER_SECRETS}
    for task_id in ("probe_light", "probe_heavy"):
        out = stack.exec("airflow-worker-heavy", "cat", f"/opt/mlops/data/security-probe/{run_id}.{task_id}.json")
        assert out.returncode == 0, out.stderr
        record = json.loads(out.stdout)
        assert record["user"] == "airflow" and record["euid"] == 50000, (record["user"], record["euid"])
        environ = record["environ"]
        assert len(environ) > 20 and "AIRFLOW__CELERY__BROKER_URL" in environ, sorted(environ)
        text = json.dumps(environ) + json.dumps(record["proc_environ"])
        assert not _leaks(text, forbidden), (task_id, sorted(_leaks(text, forbidden)))
        # The worker's URL without password, or what Airflow's task runner puts in its place.
        assert environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] in (NO_DATABASE_URL, "airflow-db-not-allowed:///")
        # MLflow credentials reach a task only through the Connection, when it asks for them.
        assert "MLFLOW_TRACKING_USERNAME" not in environ and "MLFLOW_TRACKING_PASSWORD" not in environ
        assert not [p for p, r in record["readable"].items() if r is True], record["readable"]


def test_no_long_running_container_runs_as_root(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    uids: dict[str, set[str]] = {}
    for container in stack.containers(all_states=False):
        service = container["Config"]["Labels"]["com.docker.compose.service"]
        assert service not in ONE_SHOT, f"{service} should have exited"
        # ps on the engine's host, filtered to the container's processes (no user namespace here,
        # so these are the uids inside the container too).
        top = stack.docker("top", container["Id"], "-eo", "pid,ruid,euid,suid,args")
        assert top.returncode == 0, top.stderr
        for line in top.stdout.splitlines()[1:]:
            pid, ruid, euid, suid, args = line.split(None, 4)
            assert "0" not in (ruid, euid, suid), (container["Name"], pid, ruid, euid, suid, args[:120])
            uids.setdefault(service, set()).add(euid)
    stack.say(f"compose test: process uids per service: { {s: sorted(u) for s, u in sorted(uids.items())} }")
    for service in ("airflow-apiserver", "airflow-scheduler", *WORKERS, "flower", "mlflow", "mlflow-metrics"):
        assert uids[service] == {"50000"}, (service, uids[service])
    for service in ("prometheus", "pushgateway", "alertmanager"):
        assert uids[service] == {"65534"}, (service, uids[service])
    # The root containers: the one-shots that hand files in fresh volumes to their owners.
    roots = {c["Config"]["Labels"]["com.docker.compose.service"] for c in stack.containers()
             if c["Config"].get("User") in ("0", "0:0", "root")}
    assert roots == {"airflow-init", "alertmanager-config", "logins-config"}, roots


def test_mlflow_auth_config_is_private(compose_stack: ComposeStack) -> None:
    out = compose_stack.exec("mlflow", "stat", "-c", "%a %U", "/tmp/mlflow-auth/basic_auth.ini")
    assert out.stdout.split() == ["600", "airflow"], out.stdout + out.stderr
