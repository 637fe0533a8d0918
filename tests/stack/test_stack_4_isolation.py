"""Who runs what, and who can see which secret, on the live test stack.

- no stack process runs as root except supervisord (it starts each program as its user);
- the Celery workers' environment holds neither the metadata-DB password nor the Fernet key nor any
  other control-plane key: checked on what supervisord starts them with (their rendered environment
  file) and from inside real tasks on both queues (Celery retitles its processes, which blanks
  /proc/<pid>/environ of the workers themselves: reading that would prove nothing);
- a task cannot read the control plane's /proc/<pid>/environ or the rendered secret files;
- every TCP listener is on 127.0.0.1 and declared in the component table;
- no secret of the env file appears in any log, in `status` or on a command line;
- the test stack's private root folder (mode 700) was made traversable by ACL, nothing more.
"""

from __future__ import annotations

import json
import pwd
import stat
import time
from pathlib import Path
from urllib.parse import quote

import psutil

from stack import access, envfile, health
from stack.components import NO_DATABASE_URL, components
from stack.config import CONTROL_USER, SERVING_USER, SHARED_GROUP, WORKER_USER
from stack.ctl import is_running
from stack.procs import stack_process_list
from stack.render import env_file

PROBE_DAG = "stack_security_probe"


def _secrets(stack, keep: tuple[str, ...] = ()) -> dict[str, str]:
    """Every generated secret of the env file (name -> value), except `keep`."""
    return {k: v for k, v in stack.cfg.env.items() if envfile.is_secret(k) and k not in keep and v}


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """Names of the secrets whose value (or URL-encoded value) occurs in `text`."""
    return sorted(name for name, value in secrets.items() if value in text or quote(value, safe="") in text)


def _component_of(stack) -> dict[int, str]:
    """pid -> component name for every process supervisord started and all their descendants."""
    owner = {}
    for info in health.supervisor(stack.cfg).supervisor.getAllProcessInfo():
        if not info["pid"]:
            continue
        proc = psutil.Process(info["pid"])
        owner[proc.pid] = info["name"]
        owner.update({child.pid: info["name"] for child in proc.children(recursive=True)})
    return owner


def test_no_stack_process_runs_as_root_but_supervisord(stack) -> None:
    expected = {c.name: c.user for c in components(stack.cfg) if c.present}
    owner = _component_of(stack)
    supervisord = is_running(stack.cfg)
    seen: dict[str, set[str]] = {}
    for proc in stack_process_list(stack.cfg):
        try:
            uids = set(proc.uids())
        except psutil.NoSuchProcess:
            continue
        names = {pwd.getpwuid(uid).pw_name for uid in uids}
        if proc.pid == supervisord:
            assert names == {"root"}, names
            continue
        name = owner.get(proc.pid)
        if name is None and proc.ppid() == supervisord:
            continue  # a program supervisord is (re)starting right now
        assert name is not None, f"pid {proc.pid} ({proc.name()}) belongs to no component"
        # Real, effective and saved uid: nothing can switch back to root.
        assert names == {expected[name]}, (name, proc.pid, proc.cmdline()[:3], names)
        seen.setdefault(expected[name], set()).add(name)
    assert seen["postgres"] == {"postgres"}
    assert seen[WORKER_USER] == {"worker-light1", "worker-light2", "worker-heavy1"}
    assert {"api-server", "scheduler", "dag-processor", "triggerer", "log-server", "flower", "mlflow",
            "prometheus", "redis"} <= seen[CONTROL_USER]
    assert "root" not in seen


def test_worker_environment_files_hold_no_key(stack) -> None:
    """What supervisord starts each worker with (stack/launch.py applies exactly this file)."""
    forbidden = _secrets(stack, keep=("REDIS_PASSWORD",))
    for comp in components(stack.cfg):
        if not comp.name.startswith("worker-"):
            continue
        path = env_file(stack.cfg, comp)
        assert path.stat().st_uid == pwd.getpwnam(WORKER_USER).pw_uid and stat.S_IMODE(path.stat().st_mode) == 0o600
        env = json.loads(path.read_text())
        assert not _leaks(json.dumps(env), forbidden), (comp.name, _leaks(json.dumps(env), forbidden))
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == NO_DATABASE_URL.format(port=stack.cfg.ports["POSTGRES_PORT"])
        assert "AIRFLOW__CORE__FERNET_KEY" not in env and "AIRFLOW__API__SECRET_KEY" not in env
        assert not {k for k in env if k.startswith("AIRFLOW__API_AUTH__")}, env
        assert not {k for k in env if k.startswith("MLFLOW_TRACKING_")} - {"MLFLOW_TRACKING_URI"}
        # The broker, with the Redis password, is all a worker holds.
        assert env["AIRFLOW__CELERY__BROKER_URL"] == stack.cfg.broker_url
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == stack.cfg.result_backend_url
        assert env["USER"] == WORKER_USER and env["HOME"] == str(stack.cfg.worker_home)


def _control_plane_secrets(stack) -> list[str]:
    """Files and /proc/<pid>/environ entries a task must not be able to read."""
    cfg = stack.cfg
    files = [cfg.supervisord_conf, cfg.jwt_private_key, cfg.mlflow_auth_config, cfg.redis_conf,
             cfg.home / "prometheus" / "prometheus.yml", cfg.home / "alertmanager" / "alertmanager.yml",
             stack.env_file, cfg.pgdata / "PG_VERSION",
             cfg.airflow_home / "airflow.cfg"]
    files += [env_file(cfg, c) for c in components(cfg) if c.present and not c.name.startswith("worker-")]
    pids = [info["pid"] for info in health.supervisor(cfg).supervisor.getAllProcessInfo()
            if info["pid"] and not info["name"].startswith("worker-")]
    return [str(f) for f in files] + [f"/proc/{pid}/environ" for pid in pids]


def _read_running_log(stack, run_id: str) -> str:
    """The log of probe_served_log read through the REST API while the task runs; then release it."""
    release = stack.cfg.data_dir / "security-probe" / f"{run_id}.release"
    path = f"/dags/{PROBE_DAG}/dagRuns/{run_id}/taskInstances/probe_served_log/logs/1"
    deadline = time.monotonic() + 240
    text = ""
    try:
        while time.monotonic() < deadline:
            ti = stack.api("GET", f"/dags/{PROBE_DAG}/dagRuns/{run_id}/taskInstances/probe_served_log")
            if ti.status_code == 200 and ti.json()["state"] == "running":
                resp = stack.api("GET", path, params={"full_content": "true"}, headers={"Accept": "application/json"})
                text = resp.text
                if resp.status_code == 200 and "SECURITY-PROBE-MARKER" in text:
                    return text
            elif ti.status_code == 200 and ti.json()["state"] in ("success", "failed"):
                break
            time.sleep(0.5)
        return text
    finally:
        release.parent.mkdir(parents=True, exist_ok=True)
        release.touch()


def test_tasks_hold_no_key_and_cannot_read_the_control_plane(dags_ready) -> None:
    stack = dags_ready
    paths = _control_plane_secrets(stack)
    for path in paths:
        assert Path(path).exists(), path
    deadline = time.monotonic() + 180
    while stack.api("GET", f"/dags/{PROBE_DAG}").status_code != 200:
        assert time.monotonic() < deadline, f"{PROBE_DAG} not parsed"
        time.sleep(1)
    run_id = stack.trigger(PROBE_DAG, conf={"paths": paths})
    served = _read_running_log(stack, run_id)
    run = stack.wait_run(PROBE_DAG, run_id, timeout=300)
    states = {t["task_id"]: (t["state"], t["queue"]) for t in stack.task_instances(PROBE_DAG, run_id)}
    assert run["state"] == "success", states
    assert states == {"probe_light": ("success", "light"), "probe_heavy": ("success", "heavy"),
                      "probe_served_log": ("success", "light")}
    # The api-server read the running task's log from the log server on 127.0.0.1 (the tasks'
    # hostname is the bind address: stack/hostname.py).
    assert f"SECURITY-PROBE-MARKER {run_id}" in served, served[-2000:]
    assert f"http://127.0.0.1:{stack.cfg.ports['AIRFLOW_LOG_SERVER_PORT']}/log/" in served, served[-2000:]
    forbidden = _secrets(stack, keep=("REDIS_PASSWORD",))
    for task_id in ("probe_light", "probe_heavy"):
        record = json.loads((stack.cfg.data_dir / "security-probe" / f"{run_id}.{task_id}.json").read_text())
        assert record["user"] == WORKER_USER and record["euid"] != 0, record["user"]
        assert set(record["groups"]) == {WORKER_USER, SHARED_GROUP}, record["groups"]
        environ = record["environ"]
        assert len(environ) > 20 and "AIRFLOW__CELERY__BROKER_URL" in environ, sorted(environ)
        text = json.dumps(environ) + json.dumps(record["proc_environ"])
        assert not _leaks(text, forbidden), (task_id, _leaks(text, forbidden))
        # The worker's URL without password, or what Airflow's task runner puts in its place.
        assert environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] in (
            NO_DATABASE_URL.format(port=stack.cfg.ports["POSTGRES_PORT"]), "airflow-db-not-allowed:///")
        # MLflow credentials reach a task only through the Connection, when it asks for them.
        assert "MLFLOW_TRACKING_USERNAME" not in environ and "MLFLOW_TRACKING_PASSWORD" not in environ
        readable = {p: r for p, r in record["readable"].items() if r is True}
        assert not readable, f"{task_id} could read {sorted(readable)}"
        assert all("PermissionError" in r for r in record["readable"].values()), record["readable"]


def test_every_listener_is_on_loopback_and_declared(stack) -> None:
    declared = {lst.port for c in components(stack.cfg) if c.present for lst in c.listeners if lst.proto == "tcp"}
    seen: dict[int, set[str]] = {}
    for proc in stack_process_list(stack.cfg):
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN:
                seen.setdefault(conn.laddr.port, set()).add(conn.laddr.ip)
    assert set(seen) == declared, (sorted(seen), sorted(declared))
    assert all(ips == {"127.0.0.1"} for ips in seen.values()), seen


def test_secret_files_are_private(stack) -> None:
    cfg = stack.cfg
    for path, owner in ((cfg.supervisord_conf, "root"), (cfg.redis_conf, CONTROL_USER),
                        (cfg.mlflow_auth_config, CONTROL_USER), (cfg.home / "prometheus" / "prometheus.yml", CONTROL_USER),
                        (cfg.home / "alertmanager" / "alertmanager.yml", CONTROL_USER),
                        (cfg.jwt_private_key, CONTROL_USER), (stack.env_file, "root")):
        st = path.stat()
        assert (pwd.getpwuid(st.st_uid).pw_name, stat.S_IMODE(st.st_mode)) == (owner, 0o600), path
    for comp in components(cfg):
        if comp.present:
            st = env_file(cfg, comp).stat()
            assert (pwd.getpwuid(st.st_uid).pw_name, stat.S_IMODE(st.st_mode)) == (comp.user, 0o600), comp.name
    # The folders that hold them are closed to other users.
    for folder in (cfg.airflow_home, cfg.home / "mlflow", cfg.home / "redis", cfg.home / "prometheus",
                   cfg.home / "alertmanager", cfg.home / "pushgateway", cfg.pgdata):
        assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0, folder


def test_no_secret_in_logs_status_or_command_lines(stack, runs) -> None:
    secrets = _secrets(stack)
    status = stack.ctl("status")
    assert status.returncode == 0 and not _leaks(status.stdout + status.stderr, secrets)
    leaks = {}
    for path in sorted(p for p in stack.cfg.logs.rglob("*") if p.is_file()):
        found = _leaks(path.read_text(errors="replace"), secrets)
        if found:
            leaks[str(path)] = found
    assert not leaks, leaks
    assert any(stack.cfg.task_logs.rglob("*.log")), "no task log to check"
    for proc in stack_process_list(stack.cfg):
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        assert not _leaks(cmdline, secrets), (proc.pid, cmdline[:200], _leaks(cmdline, secrets))


def test_private_root_made_traversable_by_acl_only(stack) -> None:
    """The test stack's root is mode 700 (mkdtemp): `up` granted each stack user traversal by ACL."""
    root = stack.root
    assert stat.S_IMODE(root.stat().st_mode) & 0o007 == 0, oct(root.stat().st_mode)
    up_log = (root / "up.log").read_text()
    assert f"traversal (ACL, nothing else) of {root}" in up_log, up_log[:3000]
    users = {pwd.getpwnam(u).pw_uid: u for u in ("postgres", CONTROL_USER, WORKER_USER, SERVING_USER)}
    named = {ident: perm for tag, ident, perm in access.acl_entries(root) if tag == "user"}
    assert {users.get(ident): perm for ident, perm in named.items()} == {u: 0o1 for u in users.values()}, named
