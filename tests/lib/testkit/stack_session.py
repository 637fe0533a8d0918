"""Session fixture: a separate native stack (own STACK_HOME under /tmp, own ports) for tests/stack
and tests/faults (registered for both by tests/conftest.py; the fault suite runs last).

It replays a few weeks of data, brings the stack up with `python -m stack.ctl up` and tears it down
at the end, checking no process is left. Its root folder stays mode 700 (as mkdtemp makes it): `up`
must grant the stack's users traversal. The env file adds the test-only DAG bundle tests/stack/dags
(stack_security_probe, stack_alert_probe) and the benchmark bundle (bench_fanout for the load
test), runs two light workers, and sets two TEST-ONLY switches of the stack: the
statsd-exporter test double (testkit/statsd_double.py) runs in place of the exporter,
which has no build here, so the stack's Prometheus scrapes the Airflow metrics the stack really
sends (the double also records every line: `stack.statsd`); and the alert clock is compressed
(tests/lib/testkit/alert_clock.py), so alerts fire and resolve within seconds. Alertmanager sends to a
webhook receiver the session runs from before `up` (`stack.alerts`).
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[3]

from stack import config as stack_config
from stack import envfile
from stack.components import statsd_double_record
from stack.ctl import stack_processes
from testkit import alert_clock

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
    "PUSHGATEWAY_PORT": 29091,
    "ALERTMANAGER_PORT": 29093,
    "GRAFANA_PORT": 23000,
    "STATSD_EXPORTER_PORT": 29102,
    "STATSD_PORT": 29125,
    "POSTGRES_PORT": 25432,
    "REDIS_PORT": 26379,
    "AIRFLOW_LOG_SERVER_PORT": 28793,
    "SERVING_PORT": 28000,
    "POSTGRES_EXPORTER_PORT": 29187,
    "REDIS_EXPORTER_PORT": 29121,
    "PROCESS_EXPORTER_PORT": 29256,
}.items()}
# The session's webhook receiver (ALERT_WEBHOOK_URL of the test stack).
ALERT_WEBHOOK_PORT = 29094 + PORT_OFFSET
STATSD_DOUBLE = REPO / "tests" / "lib" / "testkit" / "statsd_double.py"
# Three winter weeks, then a summer week: its weather drifts against the winter training data.
REPLAY_UNTIL = "2013-W03"
DRIFT_WEEK = "2013-W27"
# Share of drifted columns that counts as drift (Airflow Variable read by check_drift): reached by
# the summer week against winter data, not between two winter weeks.
DRIFT_SHARE = "0.2"
PRODUCT_DAGS = ("data_validation_dag", "ml_pipeline_dag", "model_retraining_dag")
PROBE_DAGS = REPO / "tests" / "stack" / "dags"
# The benchmark bundle: bench_fanout for the load test.
BENCH_DAGS = REPO / "benchmarks" / "dags"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"


class StatsdRecord:
    """Every StatsD line the stack's StatsD port received, as the statsd-exporter test double
    recorded it (`<unix time> <line>` per line)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def lines(self) -> list[tuple[float, str]]:
        """(arrival time, line) of every line so far."""
        if not self.path.exists():
            return []
        out = []
        for row in self.path.read_text(errors="replace").splitlines():
            stamp, _, line = row.partition(" ")
            try:
                out.append((float(stamp), line))
            except ValueError:
                continue  # a line being written
        return out

    def names(self, since: float = 0.0) -> set[str]:
        """Metric names (without value and type) received at or after `since`."""
        return {line.split(":", 1)[0] for t, line in self.lines if t >= since}


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


class AlertReceiver:
    """The webhook receiver of the test stack's Alertmanager: records every notification (its
    receiver, and each alert's name, status, labels and annotations) with the time it arrived."""

    def __init__(self, port: int) -> None:
        self.notifications: list[tuple[float, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    receiver.notifications.append((time.time(), json.loads(body)))
                    self.send_response(200)
                except ValueError:
                    self.send_response(400)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/alertmanager"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening."""
        self.server.shutdown()
        self.server.server_close()

    def events(self, alertname: str | None = None, since: float = 0.0) -> list[dict]:
        """Each alert of each notification since `since`: t, receiver, status, labels, annotations."""
        out = []
        for t, note in list(self.notifications):
            if t < since:
                continue
            for alert in note.get("alerts", []):
                if alertname is None or alert["labels"].get("alertname") == alertname:
                    out.append({"t": t, "receiver": note.get("receiver"), "status": alert["status"],
                                "labels": alert["labels"], "annotations": alert.get("annotations", {})})
        return out

    def wait(self, alertname: str, status: str, since: float = 0.0, timeout: float = 240,
             **labels: str) -> dict:
        """The first `status` (firing/resolved) notice of `alertname` with `labels` since `since`."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events(alertname, since):
                if event["status"] == status and all(event["labels"].get(k) == v for k, v in labels.items()):
                    return event
            if time.monotonic() > deadline:
                seen = [(e["labels"].get("alertname"), e["status"], e["labels"]) for e in self.events(since=since)]
                raise AssertionError(f"no {status} {alertname} {labels} at the webhook within {timeout:.0f} s; "
                                     f"received: {seen[-20:]}")
            time.sleep(0.5)


@dataclass
class StackHandle:
    """Handle on the running test stack."""

    root: Path
    env_file: Path
    cfg: stack_config.StackConfig
    statsd: StatsdRecord | StatsdCapture
    alerts: AlertReceiver
    up_s: float = 0.0
    _tokens: dict[str, str] = field(default_factory=dict)

    def ctl(self, *args: str, timeout: float = 600, env_file: Path | None = None,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run `python -m stack.ctl --env-file <test env> ARGS` (this process' environment plus
        `extra_env`) and return the result."""
        return subprocess.run([PYTHON, "-m", "stack.ctl", "--env-file", str(env_file or self.env_file), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **extra_env} if extra_env else None)

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
               {"name": "stack-probe", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(PROBE_DAGS)}},
               {"name": "benchmarks", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(BENCH_DAGS)}}]
    clock_file = alert_clock.write(root / "alert-clock")
    envfile.ensure(env_file, stack_config.EXAMPLE_ENV, overrides={
        **TEST_PORTS,
        "STACK_HOME": str(root / "stack"),
        "MLOPS_DATA_DIR": str(root / "data"),
        # Only the runs the tests trigger: no scheduled run competing for the replayed batches.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        # Queued/running task counts every 5 s (default 30 s): the queue alerts see them sooner.
        "AIRFLOW__SCHEDULER__TI_METRICS_INTERVAL": "5",
        # Two light workers of four slots (the default: one of eight): the tests see the light
        # queue shared by two workers, as the compose stack's two light replicas share it.
        "LIGHT_WORKERS": "2",
        "LIGHT_WORKER_CONCURRENCY": "4",
        # TEST-ONLY switches (stack/components.py, stack/render.py); .env.example has neither.
        "MLOPS_TEST_STATSD_DOUBLE": str(STATSD_DOUBLE),
        "MLOPS_TEST_FAST_ALERTS": str(clock_file),
        "ALERT_WEBHOOK_URL": f"http://127.0.0.1:{ALERT_WEBHOOK_PORT}/alertmanager",
        # The prediction service checks the champion alias every second (default 5 s).
        "SERVING_POLL_S": "1",
        # A stopped heavy worker lets its training finish for this long (default 7200 s): longer than
        # the upkeep test's 35 s training, short enough for the session's own `down` after the
        # fault suite, which may leave a long training running.
        "HEAVY_WORKER_STOP_GRACE_S": "90",
        # `mlflow gc` collects what was soft-deleted at its next pass (default: 7 days later): the gc
        # test deletes runs and signals a pass at once.
        "MLFLOW_GC_RETENTION_DAYS": "0",
    })
    cfg = stack_config.load(env_file)
    alerts = AlertReceiver(ALERT_WEBHOOK_PORT)
    ts = StackHandle(root, env_file, cfg, StatsdRecord(statsd_double_record(cfg)), alerts)
    started = time.monotonic()
    result = ts.ctl("up")
    ts.up_s = time.monotonic() - started
    (root / "up.log").write_text(result.stdout + result.stderr)
    try:
        if result.returncode != 0:
            pytest.fail(f"stack up failed:\n{result.stdout}\n{result.stderr}\n{_logs_tail(cfg)}")
        yield ts
    finally:
        # Up to every worker's stop grace in turn (light 30 s each, heavy 90 s, maintenance 120 s),
        # then the rest: after the fault suite a training may still be running.
        down = ts.ctl("down", timeout=600)
        alerts.stop()
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
