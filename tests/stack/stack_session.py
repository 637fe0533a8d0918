"""Session fixture: a separate native stack (own STACK_HOME under /tmp, own ports) for tests/stack
and tests/faults (registered for both by tests/conftest.py; the fault suite runs last).

It captures StatsD on its UDP port (no exporter here), replays a few weeks of data, brings the
stack up with `python -m stack.ctl up` and tears it down at the end, checking no process is left.
Its root folder stays mode 700 (as mkdtemp makes it): `up` must grant the stack's users traversal.
The env file adds the test-only DAG bundle tests/stack/dags (stack_security_probe).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]

from stack import config as stack_config
from stack import envfile
from stack.ctl import stack_processes

PYTHON = str(REPO / ".venv" / "bin" / "python")
# Ports of the test stack: never the defaults, so a developer's `make up` keeps running.
# MLOPS_TEST_PORT_OFFSET (default 0) shifts all of them, so two checkouts can run the suite at once.
PORT_OFFSET = int(os.environ.get("MLOPS_TEST_PORT_OFFSET", "0"))
TEST_PORTS = {name: str(port + PORT_OFFSET) for name, port in {
    "AIRFLOW_API_PORT": 28080,
    "FLOWER_PORT": 25555,
    "MLFLOW_PORT": 25000,
    "MLFLOW_METRICS_PORT": 25001,
    "PROMETHEUS_PORT": 29090,
    "GRAFANA_PORT": 23000,
    "STATSD_EXPORTER_PORT": 29102,
    "STATSD_PORT": 29125,
    "POSTGRES_PORT": 25432,
    "REDIS_PORT": 26379,
    "AIRFLOW_LOG_SERVER_PORT": 28793,
}.items()}
# Three winter weeks, then a summer week: its weather drifts against the winter training data.
REPLAY_UNTIL = "2013-W03"
DRIFT_WEEK = "2013-W27"
# Share of drifted columns that counts as drift (Airflow Variable read by check_drift): reached by
# the summer week against winter data, not between two winter weeks.
DRIFT_SHARE = "0.2"
PRODUCT_DAGS = ("data_validation_dag", "ml_pipeline_dag", "model_retraining_dag")
PROBE_DAGS = REPO / "tests" / "stack" / "dags"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"


class StatsdCapture:
    """Receives every StatsD datagram sent to <host>:<port> (UDP) in a background thread."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.5)
        self.lines: list[tuple[float, str]] = []
        self.senders: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            now = time.time()
            for line in data.decode(errors="replace").splitlines():
                self.lines.append((now, line))
                self.senders.setdefault(sender[0], set()).add(line.split(":", 1)[0])

    def start(self) -> None:
        """Start receiving."""
        self._thread.start()

    def stop(self) -> None:
        """Stop receiving and close the socket."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def names(self, since: float = 0.0) -> set[str]:
        """Metric names (without value and type) received at or after `since`."""
        return {line.split(":", 1)[0] for t, line in list(self.lines) if t >= since}


@dataclass
class StackHandle:
    """Handle on the running test stack."""

    root: Path
    env_file: Path
    cfg: stack_config.StackConfig
    statsd: StatsdCapture
    up_s: float = 0.0
    _tokens: dict[str, str] = field(default_factory=dict)

    def ctl(self, *args: str, timeout: float = 600, env_file: Path | None = None) -> subprocess.CompletedProcess:
        """Run `python -m stack.ctl --env-file <test env> ARGS` and return the result."""
        return subprocess.run([PYTHON, "-m", "stack.ctl", "--env-file", str(env_file or self.env_file), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=timeout)

    def login(self, role: str) -> tuple[str, str]:
        """(user, password) of admin / op / ml / viewer from the test env file."""
        key = {"admin": "ADMIN", "op": "OP", "ml": "ML", "viewer": "VIEWER"}[role]
        return self.cfg.env[f"AIRFLOW_{key}_USER"], self.cfg.env[f"AIRFLOW_{key}_PASSWORD"]

    def token(self, role: str) -> str:
        """A JWT from POST /auth/token for the given role's user (cached)."""
        if role not in self._tokens:
            user, password = self.login(role)
            resp = requests.post(f"{self.cfg.api_url}/auth/token", json={"username": user, "password": password},
                                 timeout=30)
            assert resp.status_code in (200, 201), resp.text
            self._tokens[role] = resp.json()["access_token"]
        return self._tokens[role]

    def api(self, method: str, path: str, role: str | None = "admin", **kwargs) -> requests.Response:
        """Call /api/v2<path> as `role` (None: anonymous)."""
        headers = kwargs.pop("headers", {})
        if role:
            headers["Authorization"] = f"Bearer {self.token(role)}"
        return requests.request(method, f"{self.cfg.api_url}/api/v2{path}", headers=headers, timeout=30, **kwargs)

    def component_env(self, name: str = "scheduler") -> dict[str, str]:
        """The environment the stack gives one of its components (default: the scheduler's, for
        CLI checks that need the metadata database)."""
        from stack.ctl import component_env

        return component_env(self.cfg, name)

    def mlflow_login(self, account: str) -> tuple[str, str]:
        """(user, password) of the MLflow account admin / pipeline / viewer."""
        key = account.upper()
        return self.cfg.env[f"MLFLOW_{key}_USER"], self.cfg.env[f"MLFLOW_{key}_PASSWORD"]

    def trigger(self, dag_id: str, conf: dict | None = None, role: str = "admin") -> str:
        """Trigger `dag_id` through the REST API; return the run id."""
        resp = self.api("POST", f"/dags/{dag_id}/dagRuns", role=role, json={"logical_date": None, "conf": conf or {}})
        assert resp.status_code == 200, f"trigger {dag_id}: {resp.status_code} {resp.text}"
        return resp.json()["dag_run_id"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 420) -> dict:
        """Poll the run until it ends; return its JSON."""
        deadline = time.monotonic() + timeout
        while True:
            resp = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if resp.status_code == 200 and resp.json()["state"] in ("success", "failed"):
                return resp.json()
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id} {run_id} not finished after {timeout} s: {resp.text[:300]}")
            time.sleep(2)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Task instances of one run."""
        resp = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        assert resp.status_code == 200, resp.text
        return resp.json()["task_instances"]


def _logs_tail(cfg: stack_config.StackConfig, lines: int = 15) -> str:
    """Last lines of every log of the test stack, for failure messages."""
    out = []
    for log in sorted(cfg.logs.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(out)


@pytest.fixture(scope="session")
def stack() -> StackHandle:
    """Bring up the test stack once for tests/stack; stop it and check nothing is left at the end."""
    root = Path(tempfile.mkdtemp(prefix="mlops-stack-test-", dir="/tmp"))
    env_file = root / "stack.env"
    bundles = [{"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {}},
               {"name": "stack-probe", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(PROBE_DAGS)}}]
    envfile.ensure(env_file, stack_config.EXAMPLE_ENV, overrides={
        **TEST_PORTS,
        "STACK_HOME": str(root / "stack"),
        "MLOPS_DATA_DIR": str(root / "data"),
        # Only the runs the tests trigger: no scheduled run competing for the replayed batches.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
    })
    cfg = stack_config.load(env_file)
    statsd = StatsdCapture(cfg.ports["STATSD_PORT"])
    statsd.start()
    ts = StackHandle(root, env_file, cfg, statsd)
    started = time.monotonic()
    result = ts.ctl("up")
    ts.up_s = time.monotonic() - started
    (root / "up.log").write_text(result.stdout + result.stderr)
    try:
        if result.returncode != 0:
            pytest.fail(f"stack up failed:\n{result.stdout}\n{result.stderr}\n{_logs_tail(cfg)}")
        yield ts
    finally:
        down = ts.ctl("down", timeout=180)
        statsd.stop()
        left = stack_processes(cfg)
        keep = os.environ.get("STACK_TEST_KEEP")
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not left, f"processes left after down: {left}"


@pytest.fixture(scope="session")
def dags_ready(stack: StackHandle) -> StackHandle:
    """Wait until the dag-processor has parsed the three product DAGs without import errors."""
    deadline = time.monotonic() + 180
    while True:
        resp = stack.api("GET", "/dags", params={"limit": 100})
        ids = {d["dag_id"] for d in resp.json().get("dags", [])} if resp.status_code == 200 else set()
        if set(PRODUCT_DAGS) <= ids:
            break
        if time.monotonic() > deadline:
            errors = stack.api("GET", "/importErrors").text
            pytest.fail(f"product DAGs not parsed within 180 s (have {sorted(ids)}); import errors: {errors[:2000]}")
        time.sleep(2)
    errors = stack.api("GET", "/importErrors").json()
    assert errors["total_entries"] == 0, errors
    return stack


@pytest.fixture(scope="session")
def replayed(stack: StackHandle) -> list[str]:
    """Replay the first weeks into the test stack's landing folder with the mlops CLI."""
    env = {**os.environ, "MLOPS_DATA_DIR": str(stack.cfg.data_dir)}
    for args in (["--until", REPLAY_UNTIL], ["--from", DRIFT_WEEK, "--until", DRIFT_WEEK]):
        proc = subprocess.run([str(REPO / ".venv" / "bin" / "mlops"), "data", "replay", *args],
                              env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    weeks = sorted(p.stem for p in (stack.cfg.data_dir / "landing").glob("*.csv"))
    assert weeks, f"replay wrote no batch: {proc.stdout}"
    return weeks


@pytest.fixture(scope="session")
def runs(dags_ready, replayed) -> dict:
    """ml_pipeline_dag (triggered by the ML engineer), the retraining its drift check triggers and
    data_validation_dag (triggered by the Op) on the replayed weeks; returns their final JSON."""
    stack = dags_ready
    resp = stack.api("POST", "/variables", json={"key": "mlops_drift_share", "value": DRIFT_SHARE})
    assert resp.status_code in (200, 201), resp.text
    t0 = time.time()
    ml_run = stack.trigger("ml_pipeline_dag", role="ml")
    ml = stack.wait_run("ml_pipeline_dag", ml_run)
    val_run = stack.trigger("data_validation_dag", conf={"weeks": [replayed[-1]]}, role="op")
    retrain_run = None
    deadline = time.monotonic() + (60 if ml["state"] == "success" else 0)
    while retrain_run is None and time.monotonic() < deadline:
        listed = stack.api("GET", "/dags/model_retraining_dag/dagRuns").json()["dag_runs"]
        retrain_run = next((r["dag_run_id"] for r in listed if r["dag_run_id"] == f"drift__{ml_run}"), None)
        time.sleep(1)
    retrain = stack.wait_run("model_retraining_dag", retrain_run) if retrain_run else None
    validation = stack.wait_run("data_validation_dag", val_run)
    return {"t0": t0, "ml": ml, "retrain": retrain, "validation": validation, "weeks": replayed,
            "drift_week": DRIFT_WEEK, "drift_share": DRIFT_SHARE}
