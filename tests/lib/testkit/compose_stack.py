"""Driver of the compose test: docker-compose.celery.yml on a real Docker engine.

`ComposeStack` wraps one compose project (own name, own env file, published ports 31xxx on
127.0.0.1) and the HTTP APIs of its containers; `Phases` times each phase and prints it.

Two runs at once on one engine (e.g. two checkouts) stay apart: MLOPS_COMPOSE_PROJECT names the
project (default mlops-compose-test; its volumes, networks and the test's project image are named
after it), MLOPS_COMPOSE_PORT_BASE moves the port range, and every port a run picks is reserved
in a file under /tmp/mlops-compose-test-ports until the run ends, so no other run picks it.

Adding to it:
- a check: a test taking the `compose_stack` fixture (or `pipeline_run` for after the pipeline)
  in a `test_compose_<n>_<what>.py`, using the helpers (`api`, `flower`, `mlflow`,
  `prometheus_query`, `exec`, `containers`, `hostnames`, `wait_for`); file order is run order and
  the restart test stays last;
- a service published on the host: its port variable in PREFERRED_PORTS, a `url()` helper;
- a service whose upstream image cannot be pulled here: a row in scripts/compose/images.py's
  STANDINS (built beside the others automatically); one that cannot run here at all: a profile in
  docker-compose.test.yml and an entry in LEFT_OUT.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import requests

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "scripts" / "compose"))
import engine as engine_mod  # noqa: E402  (scripts/compose/engine.py)
import images as images_mod  # noqa: E402  (scripts/compose/images.py)

from stack import envfile  # noqa: E402

COMPOSE_FILE = REPO / "docker-compose.celery.yml"
OVERRIDE_FILE = REPO / "tests" / "compose" / "docker-compose.test.yml"
PROJECT = os.environ.get("MLOPS_COMPOSE_PROJECT", "mlops-compose-test")
if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", PROJECT):
    raise SystemExit(f"MLOPS_COMPOSE_PROJECT={PROJECT!r}: lower-case letters, digits, - and _ only")
# The project image as the test builds it (never the production name: it may sit on a stand-in),
# one per project: another run's build never replaces the image this run's containers restart from.
TEST_IMAGE = f"mlops-flights-airflow:{PROJECT}"
# Published ports of the test project: preferred ports in a 1000-port range (31000-31999;
# MLOPS_COMPOSE_PORT_BASE moves it), off the native test stacks' ports (2xxxx + a multiple of 1000
# ending in 080, 555, 000, 090, ...); a port already in use moves to the next free one in range.
PORT_BASE = int(os.environ.get("MLOPS_COMPOSE_PORT_BASE", "31000"))
PREFERRED_PORTS = {
    "AIRFLOW_API_PORT": PORT_BASE + 181,
    "FLOWER_PORT": PORT_BASE + 656,
    "MLFLOW_PORT": PORT_BASE + 601,
    "PROMETHEUS_PORT": PORT_BASE + 191,
    "PUSHGATEWAY_PORT": PORT_BASE + 192,
    "ALERTMANAGER_PORT": PORT_BASE + 193,
    "GRAFANA_PORT": PORT_BASE + 301,
    "SERVING_PORT": PORT_BASE + 800,
}


PORT_RESERVATIONS = Path("/tmp/mlops-compose-test-ports")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reserve(port: int) -> bool:
    """Claim `port` for this process (a file naming its pid); a claim of a dead process is taken over."""
    PORT_RESERVATIONS.mkdir(mode=0o755, exist_ok=True)
    path = PORT_RESERVATIONS / str(port)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                owner = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner == os.getpid():
                return True
            if owner and Path(f"/proc/{owner}").exists():
                return False
            path.unlink(missing_ok=True)  # left by a run that died
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return True
    return False


def release_ports(ports: list[int]) -> None:
    """Drop this process' claims on `ports`."""
    for port in ports:
        path = PORT_RESERVATIONS / str(port)
        try:
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()
        except OSError:
            pass


def pick_ports() -> dict[str, int]:
    """The preferred ports, each moved to the next port of the range that is free and claimed by
    no other run; every chosen port stays claimed until release_ports()."""
    chosen: dict[str, int] = {}
    for name, port in PREFERRED_PORTS.items():
        while port in chosen.values() or not _port_free(port) or not _reserve(port):
            port = PORT_BASE + (port - PORT_BASE + 1) % 1000
            if port == PREFERRED_PORTS[name]:
                release_ports(list(chosen.values()))
                raise AssertionError(f"no free port in {PORT_BASE}-{PORT_BASE + 999} for {name}")
        chosen[name] = port
    return chosen


# Services the test runs (Grafana cannot run here: the override leaves it out).
LEFT_OUT = {"grafana": "no Grafana build exists for Debian, PyPI or npm"}
# Services that run once and exit 0 (the others stay up and healthy).
ONE_SHOT = {"airflow-init", "mlflow-init", "alertmanager-config", "logins-config"}
# Services whose upstream image has no shell or HTTP client for a health check (FROM scratch):
# running counts; Prometheus' `up` (ScrapeTargetDown) watches them.
NO_HEALTHCHECK = {"process-exporter"}
# The generated secrets of the env file that a Celery worker holds: its Redis user's password (the
# broker) and the Pushgateway's push login.
WORKER_SECRETS = {"REDIS_WORKER_PASSWORD", "PUSHGATEWAY_PUSH_PASSWORD"}


class Phases:
    """Wall time of each phase of the compose test, printed as it ends and in the summary.
    Details (image builds, some of them in parallel with a phase) are listed, not added up."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.done: list[tuple[str, float, bool]] = []  # (name, seconds, is_detail)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase `name` (recorded also when it fails)."""
        self.say(f"compose test: {name} ...")
        started = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            self._record(name if ok else f"{name} (FAILED)", time.monotonic() - started, False)

    def detail(self, name: str, seconds: float) -> None:
        """Record a step timed elsewhere (part of, or parallel to, a phase)."""
        self._record(name, seconds, True)

    def _record(self, name: str, seconds: float, is_detail: bool) -> None:
        self.done.append((name, seconds, is_detail))
        self.say(f"compose test: {name}: {seconds:.1f} s")

    def table(self) -> str:
        """Every phase (details indented) and the total of the phases."""
        width = max([len(n) + 4 for n, _, _ in self.done] + [5])
        lines = [f"  {('  - ' + n) if d else n:<{width}}  {s:7.1f} s" for n, s, d in self.done]
        lines.append(f"  {'total':<{width}}  {sum(s for _, s, d in self.done if not d):7.1f} s")
        return "\n".join(lines)


def compose_cli() -> list[str]:
    """The compose command: MLOPS_COMPOSE_CLI ("docker-compose" or "docker compose"), else Debian's
    docker-compose 1.29 when installed, else the v2 plugin."""
    chosen = os.environ.get("MLOPS_COMPOSE_CLI")
    if chosen:
        return chosen.split()
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


@dataclass
class ComposeStack:
    """One compose project of docker-compose.celery.yml and the test override."""

    root: Path
    engine: engine_mod.Engine
    say: Callable[[str], None]
    env: dict[str, str] = field(default_factory=dict)
    reserved_ports: list[int] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ set-up and compose
    @property
    def env_file(self) -> Path:
        """The project's env file (a filled .env with the test's ports and images)."""
        return self.root / "compose.env"

    def write_env(self, images: dict[str, str]) -> None:
        """Create the env file from .env.example with generated secrets, test ports and images."""
        ports = pick_ports()
        self.reserved_ports = list(ports.values())
        overrides = {k: str(v) for k, v in ports.items()}
        overrides.update(images)
        overrides.update({"AIRFLOW_IMAGE": TEST_IMAGE, "BIND_ADDRESS": "127.0.0.1"})
        self.env = envfile.ensure(self.env_file, REPO / ".env.example", overrides=overrides)

    def _process_env(self) -> dict[str, str]:
        # Only what the tools need: a variable of the caller's shell would override the env file.
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "SSL_CERT_FILE", "SSL_CERT_DIR")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env["DOCKER_HOST"] = self.engine.host
        env.setdefault("HOME", str(self.root))
        return env

    def compose(self, *args: str, timeout: float = 600, check: bool = True,
                log: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the compose CLI on this project; raise with its output when it fails and `check`."""
        cmd = [*compose_cli(), "--project-directory", str(REPO), "--project-name", PROJECT,
               "--env-file", str(self.env_file), "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE_FILE), *args]
        if log:
            with (self.root / log).open("a") as out:
                out.write("$ " + " ".join(cmd) + "\n")
                out.flush()
                result = subprocess.run(cmd, cwd=REPO, env=self._process_env(), stdout=out,
                                        stderr=subprocess.STDOUT, text=True, timeout=timeout)
            result.stdout = (self.root / log).read_text(errors="replace")[-6000:]
        else:
            result = subprocess.run(cmd, cwd=REPO, env=self._process_env(), capture_output=True,
                                    text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args[:2])} failed (exit {result.returncode}):\n"
                                 f"{result.stdout[-4000:]}\n{(result.stderr or '')[-4000:]}")
        return result

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI on the test's engine."""
        return subprocess.run([shutil.which("docker") or "docker", *args], env=self._process_env(),
                              capture_output=True, text=True, timeout=timeout)

    def docker_exec(self, container: str, *cmd: str, input_text: str | None = None,
                    timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in one container (by id or name, as the image's user), `input_text` on stdin."""
        return subprocess.run([shutil.which("docker") or "docker", "exec", "-i", container, *cmd],
                              env=self._process_env(), input=input_text, capture_output=True, text=True,
                              timeout=timeout)

    def exec(self, service: str, *cmd: str, timeout: float = 300, index: int = 1) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in the running container number `index` of `service` (as the service's user),
        like `compose exec --index`, through the docker CLI (the compose CLI costs a second of CPU)."""
        ids = self.docker("ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
                          "--filter", f"label=com.docker.compose.service={service}",
                          "--filter", f"label=com.docker.compose.container-number={index}").stdout.split()
        assert len(ids) == 1, f"no single running container {index} of {service}: {ids}"
        return self.docker_exec(ids[0], *cmd, timeout=timeout)

    def services(self) -> list[str]:
        """Services this project runs (the compose file's, less what the override leaves out)."""
        out = self.compose("config", "--services").stdout.split()
        return sorted(s for s in out if s not in LEFT_OUT)

    def containers(self, service: str | None = None, all_states: bool = True) -> list[dict]:
        """`docker inspect` of the project's containers (of one service, when given)."""
        filters = ["--filter", f"label=com.docker.compose.project={PROJECT}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = self.docker("ps", "-q", *(["-a"] if all_states else []), *filters).stdout.split()
        if not ids:
            return []
        out = self.docker("inspect", *ids)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def hostnames(self, service: str) -> set[str]:
        """Container host names of a service's replicas (Celery's %h in the worker names)."""
        return {c["Config"]["Hostname"] for c in self.containers(service, all_states=False)}

    def wait_healthy(self, timeout: float = 420) -> dict[str, str]:
        """Poll until every long-running container is healthy and airflow-init exited 0; return
        {container name: state}. Fails at once on an exited or unhealthy container, with its logs."""
        deadline = time.monotonic() + timeout
        expected = set(self.services())
        while True:
            states: dict[str, str] = {}
            seen_services: set[str] = set()
            for c in self.containers():
                service = c["Config"]["Labels"]["com.docker.compose.service"]
                seen_services.add(service)
                state = c["State"]
                if service in ONE_SHOT:
                    status = state["Status"] if state["Status"] != "exited" else f"exited {state['ExitCode']}"
                    if state["Status"] == "exited" and state["ExitCode"] != 0:
                        raise AssertionError(f"{c['Name']} exited {state['ExitCode']}:\n{self.logs(service)}")
                elif service in NO_HEALTHCHECK and "Health" not in state:
                    status = "running (no healthcheck)" if state["Status"] == "running" else state["Status"]
                    if state["Status"] in ("exited", "dead"):
                        raise AssertionError(f"{c['Name']} is {state['Status']}:\n{self.logs(service)}")
                else:
                    status = state.get("Health", {}).get("Status", state["Status"])
                    if state["Status"] in ("exited", "dead") or status == "unhealthy":
                        raise AssertionError(f"{c['Name']} is {status} (restarts {c['RestartCount']}):\n"
                                             f"{self.health_log(c)}\n{self.logs(service)}")
                states[c["Name"].lstrip("/")] = status
            done = seen_services >= expected and all(
                s in ("healthy", "exited 0", "running (no healthcheck)") for s in states.values())
            if done:
                return states
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy after {timeout:.0f} s: {states}; missing services "
                                     f"{sorted(expected - seen_services)}")
            time.sleep(2)

    @staticmethod
    def health_log(container: dict) -> str:
        """The last health-check outputs of a container."""
        entries = container["State"].get("Health", {}).get("Log", [])[-3:]
        return "\n".join(f"health exit {e['ExitCode']}: {e['Output'].strip()[-800:]}" for e in entries)

    def logs(self, service: str, tail: int = 40) -> str:
        """The last log lines of a service."""
        return self.compose("logs", "--no-color", "--tail", str(tail), service, check=False).stdout[-6000:]

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project still in the engine."""
        label = f"label=com.docker.compose.project={PROJECT}"
        return {
            "containers": self.docker("ps", "-aq", "--filter", label).stdout.split(),
            "networks": self.docker("network", "ls", "-q", "--filter", label).stdout.split(),
            "volumes": self.docker("volume", "ls", "-q", "--filter", label).stdout.split(),
        }

    # ------------------------------------------------------------------ HTTP APIs
    def url(self, port_var: str) -> str:
        """http://127.0.0.1:<published port of port_var>."""
        return f"http://127.0.0.1:{self.env[port_var]}"

    @property
    def cfg(self) -> "ComposeStack":
        """The native stack handle's `.cfg` (api_url, env), so tests/stack's checks run here too."""
        return self

    @property
    def api_url(self) -> str:
        """The Airflow api-server on the host."""
        return self.url("AIRFLOW_API_PORT")

    def login(self, role: str) -> tuple[str, str]:
        """(user, password) of admin / op / ml / viewer."""
        key = {"admin": "ADMIN", "op": "OP", "ml": "ML", "viewer": "VIEWER"}[role]
        return self.env[f"AIRFLOW_{key}_USER"], self.env[f"AIRFLOW_{key}_PASSWORD"]

    def token(self, role: str) -> str:
        """A JWT from POST /auth/token for the role's user (cached)."""
        if role not in self._tokens:
            user, password = self.login(role)
            resp = requests.post(f"{self.api_url}/auth/token", json={"username": user, "password": password},
                                 timeout=30)
            assert resp.status_code in (200, 201), resp.text
            self._tokens[role] = resp.json()["access_token"]
        return self._tokens[role]

    def api(self, method: str, path: str, role: str | None = "admin", **kwargs) -> requests.Response:
        """Call /api/v2<path> as `role` (None: anonymous)."""
        headers = kwargs.pop("headers", {})
        if role:
            headers["Authorization"] = f"Bearer {self.token(role)}"
        return requests.request(method, f"{self.api_url}/api/v2{path}", headers=headers, timeout=30, **kwargs)

    def trigger(self, dag_id: str, conf: dict | None = None, role: str = "admin") -> str:
        """Trigger `dag_id` through the REST API; return the run id."""
        resp = self.api("POST", f"/dags/{dag_id}/dagRuns", role=role, json={"logical_date": None, "conf": conf or {}})
        assert resp.status_code == 200, f"trigger {dag_id}: {resp.status_code} {resp.text}"
        return resp.json()["dag_run_id"]

    def dag_runs(self, dag_id: str) -> list[dict]:
        """Every run of `dag_id`."""
        resp = self.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})
        assert resp.status_code == 200, resp.text
        return resp.json()["dag_runs"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 480) -> dict:
        """Poll the run until it ends; return its JSON."""
        deadline = time.monotonic() + timeout
        while True:
            resp = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if resp.status_code == 200 and resp.json()["state"] in ("success", "failed"):
                return resp.json()
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id} {run_id} not finished after {timeout:.0f} s: {resp.text[:300]}")
            time.sleep(2)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Task instances of one run."""
        resp = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        assert resp.status_code == 200, resp.text
        return resp.json()["task_instances"]

    def flower(self, path: str, auth: bool = True) -> requests.Response:
        """GET Flower's `path`, with its basic-auth password unless `auth` is False."""
        creds = (self.env["FLOWER_USER"], self.env["FLOWER_PASSWORD"]) if auth else None
        return requests.get(f"{self.url('FLOWER_PORT')}{path}", auth=creds, timeout=30)

    def mlflow_login(self, account: str) -> tuple[str, str]:
        """(user, password) of the MLflow account admin / pipeline / viewer."""
        key = account.upper()
        return self.env[f"MLFLOW_{key}_USER"], self.env[f"MLFLOW_{key}_PASSWORD"]

    def mlflow_request(self, method: str, path: str, account: str | None = "viewer", **kwargs) -> requests.Response:
        """Call MLflow's `path` as `account` (None: anonymous)."""
        auth = self.mlflow_login(account) if account else None
        return requests.request(method, f"{self.url('MLFLOW_PORT')}{path}", auth=auth, timeout=30, **kwargs)

    def mlflow(self, path: str, **params: str) -> requests.Response:
        """GET MLflow's REST `path` (/api/2.0/mlflow/...) as the read-only viewer."""
        return self.mlflow_request("GET", path, params=params)

    def champion(self) -> str | None:
        """Version behind the registry alias `champion` (None when there is none)."""
        resp = self.mlflow("/api/2.0/mlflow/registered-models/alias",
                           name=self.env["MLOPS_MODEL_NAME"], alias="champion")
        if resp.status_code == 404 or "RESOURCE_DOES_NOT_EXIST" in resp.text:
            return None
        assert resp.status_code == 200, resp.text
        return resp.json()["model_version"]["version"]

    def prometheus_get(self, path: str, **params: str) -> dict:
        """GET Prometheus' HTTP API `path`; the JSON answer (status success asserted)."""
        resp = requests.get(f"{self.url('PROMETHEUS_PORT')}{path}", params=params, timeout=30)
        assert resp.status_code == 200 and resp.json()["status"] == "success", resp.text
        return resp.json()

    def prometheus_query(self, query: str) -> list[dict]:
        """Instant query; the result vector."""
        return self.prometheus_get("/api/v1/query", query=query)["data"]["result"]

    def prometheus_value(self, query: str) -> float | None:
        """Sum of an instant query's samples (None when no series matches)."""
        result = self.prometheus_query(query)
        return sum(float(s["value"][1]) for s in result) if result else None

    def wait_for(self, what: str, check: Callable[[], object], timeout: float = 90, every: float = 2) -> object:
        """Poll `check` until it returns something truthy; fail naming `what`."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {value!r})")
            time.sleep(every)


def workload_ids(args: str) -> tuple[str, str, str] | None:
    """(dag_id, run_id, task_id) from the Airflow workload a Celery task carries (Flower's `args`)."""
    found = re.search(r"dag_id=([^/]+)/run_id=([^/]+)/task_id=([^/]+)/", args or "")
    return found.groups() if found else None  # type: ignore[return-value]
