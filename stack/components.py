"""The components of the native stack, declared once.

Each `Component` says what one supervisord program is: its command, the user it runs as, its whole
environment, the TCP/UDP ports it listens on, its health check and when `up` starts it. Rendering
(stack/render.py), `make status`, the health checks and `up` (stack/ctl.py) all read this table:
adding a component is one entry in `components()`.
"""

from __future__ import annotations

import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stack import health
from stack.config import REPO, VENV_BIN, StackConfig, Worker, optional_binary, postgres_bin

# When `up` starts a component: `base` with supervisord, `mlflow` once its database exists,
# `airflow` after the metadata database is migrated, `scheduler` once the api-server answers.
PHASES = ("base", "mlflow", "airflow", "scheduler")
OBS_PROMETHEUS = REPO / "observability" / "prometheus"
STATSD_MAPPING = REPO / "observability" / "statsd" / "mapping.yml"
GRAFANA_PROVISIONING = REPO / "observability" / "grafana" / "provisioning"
# What every program may keep from the operator's environment; everything else is declared here.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")

HealthCheck = Callable[[StackConfig, health.Probes], tuple[bool, str]]


@dataclass(frozen=True)
class Listener:
    """A port a component binds (always on 127.0.0.1); `var` names it in the env file."""

    var: str
    port: int
    proto: str = "tcp"


@dataclass(frozen=True)
class Component:
    """One supervisord program of the stack."""

    name: str
    phase: str
    command: list[str]
    env: Callable[[], dict[str, str]]
    health: HealthCheck
    user: str = "root"
    listeners: tuple[Listener, ...] = ()
    group: str | None = None
    priority: int = 40
    stopsignal: str = "TERM"
    stopwait: int = 20
    stopasgroup: bool = True
    present: bool = True
    notes: tuple[str, ...] = field(default=())

    @property
    def program(self) -> str:
        """The name supervisord's XML-RPC API uses (`group:name` inside a group)."""
        return f"{self.group}:{self.name}" if self.group else self.name

    @property
    def port_column(self) -> str:
        """The PORT column of `make status`."""
        tcp = [str(lst.port) for lst in self.listeners if lst.proto == "tcp"]
        udp = [str(lst.port) for lst in self.listeners if lst.proto == "udp"]
        text = ",".join(tcp) or "-"
        return f"{text} (udp {','.join(udp)})" if udp else text


def mlflow_metrics_available() -> bool:
    """MLflow's --expose-prometheus needs prometheus_flask_exporter, which mlflow does not depend on."""
    return importlib.util.find_spec("prometheus_flask_exporter") is not None


def _base_env() -> dict[str, str]:
    """The part of the operator's environment every program keeps."""
    return {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}


def airflow_component_env(cfg: StackConfig) -> dict[str, str]:
    """Environment of the Airflow programs (and of the CLI calls `up` makes)."""
    return {**_base_env(), **cfg.airflow_env()}


def _plain_env(cfg: StackConfig, **extra: str) -> Callable[[], dict[str, str]]:
    """Environment of a non-Airflow program: the inherited part, the stack marker and `extra`."""
    return lambda: {**_base_env(), "MLOPS_STACK_HOME": str(cfg.home), **extra}


# ------------------------------------------------------------------------------ health checks


def _http(path: str, url_attr: str, auth: Callable[[StackConfig], tuple[str, str]] | None = None) -> HealthCheck:
    def check(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
        return health.check_http(getattr(cfg, url_attr) + path, auth(cfg) if auth else None)

    return check


def _api_server_health(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
    doc = probes.shared("airflow", health.airflow_health)
    return doc is not None, "monitor/health 200" if doc else "no answer"


def _heartbeat(key: str) -> HealthCheck:
    def check(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
        doc = probes.shared("airflow", health.airflow_health) or {}
        status = doc.get(key, {}).get("status")
        return status == "healthy", f"heartbeat {status or 'unknown'}"

    return check


def _worker_health(worker: Worker) -> HealthCheck:
    def check(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
        ok = worker.name in probes.shared("celery", health.celery_ping)
        return ok, f"queue {worker.queue} x{worker.concurrency}, celery ping {'ok' if ok else 'no reply'}"

    return check


def _flower_health(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
    ok, detail = health.check_http(f"{cfg.flower_url}/api/workers", (cfg.env["FLOWER_USER"], cfg.env["FLOWER_PASSWORD"]))
    return ok, detail + " (basic auth)"


def _port_health(var: str, path: str) -> HealthCheck:
    def check(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
        return health.check_http(f"http://127.0.0.1:{cfg.ports[var]}{path}")

    return check


# ------------------------------------------------------------------------------ the table


def _airflow(cfg: StackConfig, name: str, command: list[str], phase: str = "airflow", stopwait: int = 20,
             listeners: tuple[Listener, ...] = (), health_check: HealthCheck | None = None,
             priority: int = 40) -> Component:
    return Component(name=name, phase=phase, command=command, env=lambda: airflow_component_env(cfg),
                     health=health_check or _heartbeat(name.replace("-", "_")), group="airflow",
                     listeners=listeners, stopwait=stopwait, priority=priority)


def _worker(cfg: StackConfig, worker: Worker) -> Component:
    command = [str(VENV_BIN / "airflow"), "celery", "worker", "--celery-hostname", f"{worker.name}@%h",
               "--queues", worker.queue, "--concurrency", str(worker.concurrency), "--without-gossip",
               "--without-mingle"]
    listeners: tuple[Listener, ...] = ()
    if worker.log_port is None:
        command.append("--skip-serve-logs")
    else:
        listeners = (Listener("AIRFLOW_LOG_SERVER_PORT", worker.log_port),)
    return Component(name=f"worker-{worker.name}", phase="airflow", command=command,
                     env=lambda: airflow_component_env(cfg), health=_worker_health(worker), group="airflow",
                     listeners=listeners, stopwait=30)


def components(cfg: StackConfig) -> list[Component]:
    """Every component of this stack in start order (optional ones marked `present=False` when
    their binary is missing)."""
    p = cfg.ports
    pg_bin = postgres_bin() or Path("/usr/lib/postgresql/missing/bin")
    airflow = str(VENV_BIN / "airflow")
    mlflow_cmd = [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(p["MLFLOW_PORT"]),
                  "--workers", "1", "--artifacts-destination", str(cfg.home / "mlflow" / "artifacts")]
    if mlflow_metrics_available():
        mlflow_cmd += ["--expose-prometheus", str(cfg.run_dir / "mlflow-metrics")]
    mlflow_db = cfg.db_url(cfg.env["MLFLOW_DB"])
    statsd_bin = optional_binary("statsd_exporter", "statsd-exporter")
    grafana_bin = optional_binary("grafana", "grafana-server")
    table = [
        Component(
            name="postgres", phase="base", user="postgres", priority=10, stopsignal="INT", stopasgroup=False,
            # TCP on 127.0.0.1 only, no Unix socket; fast shutdown on stop (SIGINT).
            command=[str(pg_bin / "postgres"), "-D", str(cfg.pgdata), "-p", str(p["POSTGRES_PORT"]),
                     "-h", "127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=200"],
            env=_plain_env(cfg), health=lambda c, _: health.check_postgres(c),
            listeners=(Listener("POSTGRES_PORT", p["POSTGRES_PORT"]),),
        ),
        Component(
            name="redis", phase="base", priority=10, stopasgroup=False,
            command=[_which("redis-server"), "--port", str(p["REDIS_PORT"]), "--bind", "127.0.0.1",
                     "--dir", str(cfg.home / "redis"), "--daemonize", "no", "--save", "60 1",
                     "--appendonly", "no", "--logfile", ""],
            env=_plain_env(cfg), health=lambda c, _: health.check_redis(c),
            listeners=(Listener("REDIS_PORT", p["REDIS_PORT"]),),
        ),
        Component(
            name="prometheus", phase="base", priority=20, stopasgroup=False,
            command=[_which("prometheus"), f"--config.file={cfg.home / 'prometheus' / 'prometheus.yml'}",
                     f"--storage.tsdb.path={cfg.home / 'prometheus' / 'data'}", "--storage.tsdb.retention.time=7d",
                     f"--web.listen-address=127.0.0.1:{p['PROMETHEUS_PORT']}", "--web.enable-lifecycle"],
            env=_plain_env(cfg), health=_http("/-/ready", "prometheus_url"),
            listeners=(Listener("PROMETHEUS_PORT", p["PROMETHEUS_PORT"]),),
        ),
        Component(
            name="statsd-exporter", phase="base", priority=20, present=statsd_bin is not None,
            command=[statsd_bin or "statsd_exporter", f"--statsd.listen-udp=127.0.0.1:{p['STATSD_PORT']}",
                     f"--statsd.listen-tcp=127.0.0.1:{p['STATSD_PORT']}",
                     f"--web.listen-address=127.0.0.1:{p['STATSD_EXPORTER_PORT']}",
                     f"--statsd.mapping-config={STATSD_MAPPING}"],
            env=_plain_env(cfg), health=_port_health("STATSD_EXPORTER_PORT", "/metrics"),
            listeners=(Listener("STATSD_EXPORTER_PORT", p["STATSD_EXPORTER_PORT"]),
                       Listener("STATSD_PORT", p["STATSD_PORT"], "udp")),
        ),
        Component(
            name="mlflow", phase="mlflow", priority=30, command=mlflow_cmd,
            # The backend URL (with its password) comes from the environment, never the command line.
            # Job execution (GenAI jobs) would fork about ten huey consumers of 160 MB each: not needed.
            env=_plain_env(cfg, MLFLOW_BACKEND_STORE_URI=mlflow_db, MLFLOW_TRACKING_URI=mlflow_db,
                           MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
            health=_http("/health", "mlflow_url"),
            listeners=(Listener("MLFLOW_PORT", p["MLFLOW_PORT"]),),
        ),
        # uvicorn waits for idle keep-alive connections on SIGTERM: do not let `down` wait 20 s.
        _airflow(cfg, "api-server", [airflow, "api-server"], stopwait=5, health_check=_api_server_health,
                 listeners=(Listener("AIRFLOW_API_PORT", p["AIRFLOW_API_PORT"]),)),
        # Workers run every task through the api-server's Execution API: a task queued before it
        # answers fails its first try, so the scheduler starts last.
        _airflow(cfg, "scheduler", [str(VENV_BIN / "python"), "-m", "mlops_airflow.scheduler"], phase="scheduler"),
        _airflow(cfg, "dag-processor", [airflow, "dag-processor"]),
        _airflow(cfg, "triggerer", [airflow, "triggerer"],
                 listeners=(Listener("AIRFLOW_LOG_SERVER_PORT+3", p["AIRFLOW_LOG_SERVER_PORT"] + 3),)),
        *(_worker(cfg, w) for w in cfg.workers),
        Component(
            name="flower", phase="airflow", priority=50, group="airflow", command=[airflow, "celery", "flower"],
            env=lambda: airflow_component_env(cfg), health=_flower_health,
            listeners=(Listener("FLOWER_PORT", p["FLOWER_PORT"]),),
        ),
        Component(
            name="grafana", phase="base", priority=60, present=grafana_bin is not None,
            command=[grafana_bin or "grafana", *(["server"] if Path(grafana_bin or "").name == "grafana" else []),
                     "--homepath", "/usr/share/grafana"],
            env=_plain_env(cfg, GF_SERVER_HTTP_ADDR="127.0.0.1", GF_SERVER_HTTP_PORT=str(p["GRAFANA_PORT"]),
                           GF_PATHS_DATA=str(cfg.home / "grafana"), GF_PATHS_LOGS=str(cfg.logs),
                           GF_PATHS_PROVISIONING=str(GRAFANA_PROVISIONING),
                           GF_SECURITY_ADMIN_USER=cfg.env.get("GRAFANA_ADMIN_USER", "admin"),
                           GF_SECURITY_ADMIN_PASSWORD=cfg.env.get("GRAFANA_ADMIN_PASSWORD", "")),
            health=_port_health("GRAFANA_PORT", "/api/health"),
            listeners=(Listener("GRAFANA_PORT", p["GRAFANA_PORT"]),),
        ),
    ]
    return table


def _which(name: str) -> str:
    """Absolute path of a system binary (supervisord gets no PATH lookup); the bare name when
    missing (`up` refuses to start then, naming the package)."""
    return optional_binary(name) or name


def by_name(cfg: StackConfig) -> dict[str, Component]:
    """The table keyed by component name."""
    return {c.name: c for c in components(cfg)}


def check_all(cfg: StackConfig) -> list[health.Health]:
    """Supervisor state and health of every component, in table order (absent ones say so)."""
    states = health.supervisor_states(cfg) or {}
    table = components(cfg)
    probes = health.Probes(cfg)
    present = [c for c in table if c.present]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(zip((c.name for c in present), pool.map(lambda c: c.health(cfg, probes), present)))
    rows = []
    for comp in table:
        if not comp.present:
            rows.append(health.Health(comp.name, "-", "ABSENT", True, health.ABSENT_NOTE))
            continue
        ok, detail = results[comp.name]
        info = states.get(comp.name)
        rows.append(health.Health(comp.name, comp.port_column, info["statename"] if info else "-", ok, detail))
    return rows
