"""The components of the native stack, declared once.

Each `Component` says what one supervisord program is: its command, the user it runs as, its whole
environment, the TCP/UDP ports it listens on, its health check and when `up` starts it. Rendering
(stack/render.py), `make status`, the health checks and `up` (stack/ctl.py) all read this table:
adding a component is one entry in `components()`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from stack import alerting, grants, health, keys, mlflow_gc
from stack.config import (CONTROL_USER, LOOPBACK, REPO, SERVING_USER, VENV_BIN, WORKER_USER, StackConfig, Worker,
                          optional_binary,
                          postgres_bin)

# When `up` starts a component: `base` with supervisord, `mlflow` once its database exists,
# `airflow` after the metadata database is migrated, `scheduler` once the api-server answers.
PHASES = ("base", "mlflow", "airflow", "scheduler")
OBS_PROMETHEUS = REPO / "observability" / "prometheus"
STATSD_MAPPING = REPO / "observability" / "statsd" / "mapping.yml"
GRAFANA_PROVISIONING = REPO / "observability" / "grafana" / "provisioning"
POSTGRES_EXPORTER_QUERIES = REPO / "observability" / "postgres-exporter" / "queries.yml"
PROCESS_EXPORTER_CONFIG = REPO / "observability" / "process-exporter" / "process-exporter.yml"
# TEST-ONLY switch of a test stack's env file (tests/stack/conftest.py sets it; `.env.example`
# has no such line, so `make up` never uses it): where no statsd_exporter binary exists, run this
# script, a test double taking the exporter's flags, in its place.
STATSD_DOUBLE_SWITCH = "MLOPS_TEST_STATSD_DOUBLE"
# What every program may keep from the operator's environment; everything else is declared here.
INHERITED_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

HealthCheck = Callable[[StackConfig, health.Probes], tuple[bool, str]]


@dataclass(frozen=True)
class Listener:
    """A port a component binds; `var` names it in the env file. A `served` listener is what other
    hosts use and binds the stack's BIND_ADDRESS (loopback unless set); the others bind loopback."""

    var: str
    port: int
    proto: str = "tcp"
    served: bool = False

    def host(self, cfg: StackConfig) -> str:
        """The address this listener binds in `cfg`."""
        return cfg.bind_address if self.served else LOOPBACK


@dataclass(frozen=True)
class Component:
    """One supervisord program of the stack.

    An Airflow program (`airflow_home` set) gets the shared Airflow settings plus exactly the
    secrets named in `grants` (see `secret_settings`); any other program gets `extra_env`.
    """

    name: str
    phase: str
    command: list[str]
    health: HealthCheck
    user: str
    home: Path
    airflow_home: Path | None = None
    grants: frozenset[str] = frozenset()
    extra_env: Callable[[], dict[str, str]] = dict
    listeners: tuple[Listener, ...] = ()
    group: str | None = None
    priority: int = 40
    umask: str = "027"
    stopsignal: str = "TERM"
    stopwait: int = 20
    stopasgroup: bool = True
    # After stopwait, kill the whole process group (default: as stopasgroup).
    killasgroup: bool | None = None
    present: bool = True

    @property
    def program(self) -> str:
        """The name supervisord's XML-RPC API uses (`group:name` inside a group)."""
        return f"{self.group}:{self.name}" if self.group else self.name

    @property
    def kills_group(self) -> bool:
        """supervisord's killasgroup: SIGKILL after stopwait reaches the whole process group."""
        return self.stopasgroup if self.killasgroup is None else self.killasgroup

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


@dataclass(frozen=True)
class Folder:
    """A state folder of the stack: its owner and mode; `shared` folders belong to SHARED_GROUP
    (setgid) with a default ACL that keeps what anyone creates in them group-writable."""

    path: Path
    owner: str
    mode: int
    shared: bool = False


def secret_settings(cfg: StackConfig) -> dict[str, Callable[[], dict[str, str]]]:
    """The secret Airflow settings by grant name: an Airflow program holds only those of its grants
    (computed only for them: a worker host's env file holds no other secret)."""
    return {
        "metadata-db": lambda: {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": cfg.db_url(cfg.env["POSTGRES_DB"])},
        "fernet-key": lambda: {"AIRFLOW__CORE__FERNET_KEY": cfg.env["AIRFLOW_FERNET_KEY"]},
        # Signs UI/REST tokens, workload tokens (scheduler) and execution tokens (api-server).
        "jwt-signing-key": lambda: {"AIRFLOW__API_AUTH__JWT_PRIVATE_KEY_PATH": str(cfg.jwt_private_key),
                                    "AIRFLOW__API_AUTH__JWT_ALGORITHM": keys.ALGORITHM},
        # The public half, for the components that verify tokens.
        "jwt-public-key": lambda: {"AIRFLOW__API_AUTH__TRUSTED_JWKS_URL": str(cfg.jwks_file),
                                   "AIRFLOW__API_AUTH__JWT_ALGORITHM": keys.ALGORITHM},
        # [api] secret_key: signs the api-server's requests to the task-log servers (and its log
        # continuation and DAG file tokens). Every log server holds it, so it signs no UI session.
        "api-secret-key": lambda: {"AIRFLOW__API__SECRET_KEY": cfg.env["AIRFLOW_API_SECRET_KEY"]},
        # The UI's session cookies (the FAB app's Flask SECRET_KEY, airflow/webserver_config.py).
        "ui-secret-key": lambda: {"AIRFLOW__FAB__CONFIG_FILE": str(WEBSERVER_CONFIG),
                                  UI_SECRET_VAR: cfg.env[UI_SECRET_VAR]},
        # The broker and result backend, each program as its own Redis ACL user (stack/grants.py).
        **{f"broker-{user.name}": (lambda name=user.name: cfg.celery_urls(name)) for user in grants.REDIS_USERS},
        "flower-login": lambda: {
            "AIRFLOW__CELERY__FLOWER_BASIC_AUTH": f"{cfg.env['FLOWER_USER']}:{cfg.env['FLOWER_PASSWORD']}"},
    }


WEBSERVER_CONFIG = REPO / "airflow" / "webserver_config.py"
UI_SECRET_VAR = "AIRFLOW_UI_SECRET_KEY"

# The metadata-database URL of the Airflow programs that must not use the database.
NO_DATABASE_URL = "postgresql+psycopg2://no-database-access@127.0.0.1:{port}/no-database-access"

# Airflow settings that are secret however they arrive (also from AIRFLOW__* lines of the env file):
# a program without the matching grant never gets them.
SECRET_AIRFLOW_KEYS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC", "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API_AUTH__JWT_PRIVATE_KEY_PATH", "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__FLOWER_BASIC_AUTH",
    "AIRFLOW__FAB__CONFIG_FILE",
}


def _process_env(cfg: StackConfig, comp: Component) -> dict[str, str]:
    """What every program gets: a fixed PATH, its user and HOME, and the stack marker."""
    inherited = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    path = f"{VENV_BIN}:{SYSTEM_PATH}" if comp.airflow_home else SYSTEM_PATH
    return {**inherited, "PATH": path, "HOME": str(comp.home), "USER": comp.user, "LOGNAME": comp.user,
            # Marks every process of this stack so `down` can prove nothing is left behind.
            "MLOPS_STACK_HOME": str(cfg.home)}


def program_env(cfg: StackConfig, comp: Component) -> dict[str, str]:
    """The whole environment of `comp` (stack/launch.py replaces the inherited one with it)."""
    env = _process_env(cfg, comp)
    if comp.airflow_home is not None:
        settings = cfg.airflow_settings(comp.airflow_home)
        env.update({k: v for k, v in settings.items() if k not in SECRET_AIRFLOW_KEYS})
        granted = secret_settings(cfg)
        for grant in sorted(comp.grants):
            env.update(granted[grant]())
        if "metadata-db" not in comp.grants:
            # Without a URL Airflow falls back to a SQLite file in AIRFLOW_HOME, which e.g. the CLI's
            # action logger silently creates at start; this one has no password, so any use fails
            # loudly ("no password supplied").
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = NO_DATABASE_URL.format(port=cfg.ports["POSTGRES_PORT"])
        # A secret line of the env file reaches only the programs granted that secret.
        env.update({k: v for k, v in settings.items() if k in SECRET_AIRFLOW_KEYS and k in env})
    env.update(comp.extra_env())
    return env


def folders(cfg: StackConfig) -> list[Folder]:
    """Every state folder of the stack with its owner (PostgreSQL's is made by initdb)."""
    return [
        Folder(cfg.home, "root", 0o755),
        Folder(cfg.run_dir, "root", 0o755),
        Folder(cfg.env_dir, "root", 0o711),
        # Listing is not needed to reach the task logs inside; component logs are root's (mode 640).
        Folder(cfg.logs, "root", 0o751),
        Folder(cfg.task_logs, CONTROL_USER, 0o2770, shared=True),
        Folder(cfg.data_dir, WORKER_USER, 0o2770, shared=True),
        Folder(cfg.home / "redis", CONTROL_USER, 0o700),
        Folder(cfg.home / "prometheus", CONTROL_USER, 0o700),
        Folder(cfg.home / "prometheus" / "data", CONTROL_USER, 0o700),
        Folder(cfg.home / "pushgateway", CONTROL_USER, 0o700),
        Folder(cfg.home / "alertmanager", CONTROL_USER, 0o700),
        Folder(cfg.home / "alertmanager" / "data", CONTROL_USER, 0o700),
        *([Folder(cfg.home / "statsd-exporter", CONTROL_USER, 0o700)] if statsd_double(cfg) else []),
        Folder(cfg.home / "mlflow", CONTROL_USER, 0o700),
        Folder(cfg.home / "mlflow" / "artifacts", CONTROL_USER, 0o700),
        Folder(cfg.airflow_home, CONTROL_USER, 0o700),
        Folder(cfg.worker_home, WORKER_USER, 0o700),
        Folder(cfg.home / "serving", SERVING_USER, 0o700),
        *([Folder(cfg.home / "grafana", CONTROL_USER, 0o700)] if optional_binary("grafana", "grafana-server") else []),
    ]


# ------------------------------------------------------------------------------ health checks


def _http(path: str, url_attr: str, auth: Callable[[StackConfig], tuple[str, str]] | None = None) -> HealthCheck:
    def check(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
        return health.check_http(getattr(cfg, url_attr) + path, auth(cfg) if auth else None)

    return check


def _mlflow_health(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
    ok, detail = health.check_http(f"{cfg.mlflow_url}/health")
    if not ok:
        return ok, detail
    viewer = (cfg.env["MLFLOW_VIEWER_USER"], cfg.env["MLFLOW_VIEWER_PASSWORD"])
    login_ok, login = health.check_http(f"{cfg.mlflow_url}/api/2.0/mlflow/users/current", viewer)
    return login_ok, f"{detail}, login as {viewer[0]}: {login}"


def _mlflow_gc_health(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
    """A scheduler with no port: running is healthy (supervisord's state is in its own column)."""
    info = (health.supervisor_states(cfg) or {}).get("mlflow-gc") or {}
    ok = info.get("statename") == "RUNNING"
    return ok, (f"mlflow gc on {cfg.env.get(mlflow_gc.SCHEDULE_VAR) or mlflow_gc.DEFAULT_SCHEDULE} (UTC), deleted "
                f"runs kept {mlflow_gc.retention_days(cfg.env):g} days")


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
        return ok, (f"queue {worker.queue} x{worker.concurrency}, preload {worker.preload or '-'}, "
                    f"celery ping {'ok' if ok else 'no reply'}")

    return check


def _flower_health(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
    ok, detail = health.check_http(f"{cfg.flower_url}/api/workers", (cfg.env["FLOWER_USER"], cfg.env["FLOWER_PASSWORD"]))
    return ok, detail + " (basic auth)"


def _log_server_health(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
    ok, detail = health.check_http(f"{cfg.log_server_url}/log/unsigned-probe")
    return detail == "HTTP 403", f"{detail} to an unsigned request (serves signed ones only)"


def _alertmanager_health(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
    ok, detail = health.check_http(f"{cfg.alertmanager_url}/-/ready", cfg.web_login("alertmanager", "admin"))
    sends = alerting.delivery(alerting.render(alerting.load_template(), cfg.env))
    if any(sends.values()):
        where = "; ".join(f"{name}: {', '.join(kinds) or 'listed only'}" for name, kinds in sends.items())
    else:
        where = "alerts reach nobody: set ALERT_WEBHOOK_URL or ALERT_EMAIL_TO in the env file"
    return ok, f"{detail}, receivers {where}"


def _port_health(var: str, path: str, served: bool = False, login: tuple[str, str] | None = None) -> HealthCheck:
    """HTTP 200 from `path`; `login`: (server, user) of stack/grants.py WEB_USERS to log in as."""
    def check(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
        auth = cfg.web_login(*login) if login else None
        return health.check_http(f"http://{cfg.bind_address if served else LOOPBACK}:{cfg.ports[var]}{path}", auth)

    return check


# ------------------------------------------------------------------------------ the table

# Which secrets each Airflow program holds (secret_settings). Workers: only the broker (as the
# `worker` Redis user). The log server's key signs no UI session (ui-secret-key does).
CONTROL_GRANTS = {
    "api-server": frozenset({"metadata-db", "fernet-key", "jwt-signing-key", "jwt-public-key", "api-secret-key",
                             "ui-secret-key"}),
    "scheduler": frozenset({"metadata-db", "fernet-key", "jwt-signing-key", "broker-scheduler"}),
    "dag-processor": frozenset({"metadata-db", "fernet-key", "jwt-public-key"}),
    "triggerer": frozenset({"metadata-db", "fernet-key", "jwt-public-key"}),
    "log-server": frozenset({"api-secret-key"}),
    "flower": frozenset({"broker-flower", "flower-login"}),
    # Runs only maintenance_dag.clean_metadata_db (mlops_airflow.policy); the database URL for
    # `airflow db clean` comes as MLOPS_METADATA_DB_URL (maintenance_worker).
    "maintenance-worker": frozenset({"broker-worker"}),
}
WORKER_GRANTS = frozenset({"broker-worker"})


def _airflow(cfg: StackConfig, name: str, command: list[str], phase: str = "airflow", stopwait: int = 20,
             listeners: tuple[Listener, ...] = (), health_check: HealthCheck | None = None,
             priority: int = 40) -> Component:
    """A control-plane Airflow program."""
    return Component(name=name, phase=phase, command=command, health=health_check or _heartbeat(name.replace("-", "_")),
                     user=CONTROL_USER, home=cfg.airflow_home, airflow_home=cfg.airflow_home,
                     grants=CONTROL_GRANTS[name], group="airflow", listeners=listeners, stopwait=stopwait,
                     priority=priority)


NICE_BIN = shutil.which("nice") or "/usr/bin/nice"


def worker(cfg: StackConfig, spec: Worker) -> Component:
    """A Celery worker: its own user and AIRFLOW_HOME, the broker and nothing else secret. It
    serves no logs (the log-server program does: it needs the key that signs UI sessions). Worker
    hosts (stack/workerhost.py) run the same program."""
    # coreutils' nice execs the worker at its queue's priority (supervisord has no such setting).
    niced = [NICE_BIN, "-n", str(spec.nice)] if spec.nice else []
    command = [*niced, str(VENV_BIN / "airflow"), "celery", "worker", "--celery-hostname", f"{spec.name}@%h",
               "--queues", spec.queue, "--concurrency", str(spec.concurrency), "--without-gossip",
               "--without-mingle", "--skip-serve-logs"]
    # DVC keeps a per-repository cache under /var/tmp/dvc by default: shared by every user.
    # The ML steps push their results to the Pushgateway (src/mlops/metrics.py); MLOPS_WORKER_PRELOAD:
    # what the worker imports before it forks (mlops_airflow.preload).
    pusher, push_password = cfg.web_login("pushgateway", "pusher")
    extra = {"DVC_SITE_CACHE_DIR": str(cfg.worker_home / "dvc-site-cache"),
             "MLOPS_PUSHGATEWAY_URL": cfg.pushgateway_url, "MLOPS_PUSHGATEWAY_USER": pusher,
             "MLOPS_PUSHGATEWAY_PASSWORD": push_password, "MLOPS_WORKER_PRELOAD": spec.preload}
    # Warm shutdown of a heavy worker (make down, a restart): SIGTERM reaches only the Celery main
    # process, which takes no new task and waits for the running training; its process group is
    # killed only after the grace (HEAVY_WORKER_STOP_GRACE_S, at least the heavy tasks' time limit).
    heavy = spec.queue == "heavy"
    return Component(name=f"worker-{spec.name}", phase="airflow", command=command, health=_worker_health(spec),
                     user=WORKER_USER, home=cfg.worker_home, airflow_home=cfg.worker_home, grants=WORKER_GRANTS,
                     extra_env=lambda: extra, group="airflow", umask="007",
                     stopwait=heavy_stop_grace(cfg) if heavy else 30, stopasgroup=not heavy, killasgroup=True)


HEAVY_STOP_GRACE_DEFAULT_S = 7200


def heavy_stop_grace(cfg: StackConfig) -> int:
    """Seconds a stopped heavy worker lets its running task finish (HEAVY_WORKER_STOP_GRACE_S)."""
    raw = cfg.env.get("HEAVY_WORKER_STOP_GRACE_S", "").strip() or str(HEAVY_STOP_GRACE_DEFAULT_S)
    if not raw.isdigit() or int(raw) < 1:
        from stack.envfile import EnvFileError

        raise EnvFileError(f"{cfg.env_file}: HEAVY_WORKER_STOP_GRACE_S={raw!r} is not a number of seconds")
    return int(raw)


def maintenance_worker(cfg: StackConfig) -> Component:
    """The worker of the `maintenance` queue: `airflow db clean` and the MLflow run prune for
    maintenance_dag. Its tasks need the metadata database's login and an MLflow login that may
    delete runs (MLOPS_MLFLOW_MAINTENANCE_USER/_PASSWORD), which no other worker holds: the database's comes as MLOPS_METADATA_DB_URL
    (Airflow blanks AIRFLOW__DATABASE__SQL_ALCHEMY_CONN inside every task), runs as the
    control-plane user, and a cluster policy (mlops_airflow.policy) lets no other task onto its
    queue. One slot, no preload."""
    command = [str(VENV_BIN / "airflow"), "celery", "worker", "--celery-hostname", "maintenance1@%h",
               "--queues", "maintenance", "--concurrency", "1", "--without-gossip", "--without-mingle",
               "--skip-serve-logs"]
    spec = Worker("maintenance1", "maintenance", 1)
    return Component(name="maintenance-worker", phase="airflow", command=command, health=_worker_health(spec),
                     user=CONTROL_USER, home=cfg.airflow_home, airflow_home=cfg.airflow_home,
                     grants=CONTROL_GRANTS["maintenance-worker"], group="airflow", stopwait=120,
                     extra_env=lambda: {"MLOPS_METADATA_DB_URL": cfg.db_url(cfg.env["POSTGRES_DB"]),
                                        "MLOPS_MLFLOW_MAINTENANCE_USER": cfg.env["MLFLOW_MAINTENANCE_USER"],
                                        "MLOPS_MLFLOW_MAINTENANCE_PASSWORD": cfg.env["MLFLOW_MAINTENANCE_PASSWORD"]})


def statsd_double_record(cfg: StackConfig) -> Path:
    """Where the test double records every StatsD line it receives (tests/stack reads it)."""
    return cfg.home / "statsd-exporter" / "received.log"


def statsd_double(cfg: StackConfig) -> str | None:
    """The statsd-exporter test double of a test stack (its env file's TEST-ONLY switch), used only
    where no statsd_exporter binary is on PATH; None on a product stack."""
    if optional_binary("statsd_exporter", "statsd-exporter"):
        return None
    return cfg.env.get(STATSD_DOUBLE_SWITCH) or None


def _serving_health(cfg: StackConfig, probes: health.Probes) -> tuple[bool, str]:
    """The service answers /health: ready with a version, or waiting for a first champion (a fresh
    stack has none: that is not a fault); a version it refused is named."""
    import requests

    try:
        resp = requests.get(f"{cfg.serving_url}/health", timeout=5)
        doc = resp.json()
    except (requests.RequestException, ValueError) as exc:
        return False, f"no answer ({type(exc).__name__})"
    refused = ", ".join(f"v{v}" for v in doc.get("refused_versions") or {})
    tail = (f"; refused {refused}" if refused else "") + (f"; registry check {doc.get('registry_check_age_s')} s ago")
    if resp.status_code == 200:
        return True, f"serving v{doc.get('model_version')}{tail}"
    return resp.status_code == 503, f"HTTP {resp.status_code}: no champion loaded yet{tail}"


# What the prediction service reads from the env file besides its own secrets (empty: its default).
REPLAY_CLOCK_SWITCH = "MLOPS_TEST_REPLAY_CLOCK"  # mlops_serving.clock (stack imports no serving code)
SERVING_TUNABLES = ("SERVING_POLL_S", "SERVING_MAX_ROWS", "SERVING_MAX_BODY_BYTES", "SERVING_LOG_FLUSH_S",
                    "PREDICTIONS_RETENTION_DAYS", "MLOPS_DECISION_THRESHOLD", "MLOPS_SCHEMA")


def serving(cfg: StackConfig) -> Component:
    """The prediction service (src/mlops_serving) under its own user. It holds its token, the
    prediction log's login and a read-only MLflow login: no Airflow, Redis or superuser secret."""
    e, port = cfg.env, cfg.ports["SERVING_PORT"]

    def env() -> dict[str, str]:
        return {"SERVING_TOKEN": e["SERVING_TOKEN"], "MLFLOW_TRACKING_URI": cfg.mlflow_url,
                "MLFLOW_TRACKING_USERNAME": e["MLFLOW_SERVING_USER"],
                "MLFLOW_TRACKING_PASSWORD": e["MLFLOW_SERVING_PASSWORD"], "MLOPS_MODEL_NAME": e["MLOPS_MODEL_NAME"],
                "PREDICTIONS_DB_HOST": LOOPBACK, "PREDICTIONS_DB_PORT": str(cfg.ports["POSTGRES_PORT"]),
                "PREDICTIONS_DB": e["PREDICTIONS_DB"], "PREDICTIONS_DB_USER": e["PREDICTIONS_DB_USER"],
                "PREDICTIONS_DB_PASSWORD": e["PREDICTIONS_DB_PASSWORD"],
                # One OpenMP thread: single rows answer faster without thread wake-ups.
                "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                **{k: e[k] for k in SERVING_TUNABLES if e.get(k)},
                # TEST/BENCH-only switch (mlops_serving.clock; benchmarks/soak.py): the replayed calendar.
                **({REPLAY_CLOCK_SWITCH: e[REPLAY_CLOCK_SWITCH]} if e.get(REPLAY_CLOCK_SWITCH) else {})}

    return Component(name="serving", phase="airflow", user=SERVING_USER, home=cfg.home / "serving", priority=45,
                     command=[str(VENV_BIN / "uvicorn"), "mlops_serving.app:app", "--host", cfg.bind_address,
                              "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "10"],
                     extra_env=env, health=_serving_health, stopwait=15,
                     listeners=(Listener("SERVING_PORT", port, served=True),))


def log_server(cfg: StackConfig) -> Component:
    """Airflow's task-log server of this host (what `airflow celery worker` would fork), run by
    uvicorn directly so that it binds the stack's address only (Airflow's own binds every
    interface). It verifies the api-server's signed log requests with [api] secret_key, which also
    signs the UI's session cookies: so it runs as the control-plane user, and no worker holds that
    key. The api-server asks it at the task's host name (stack/hostname.py: the bind address)."""
    port = cfg.ports["AIRFLOW_LOG_SERVER_PORT"]
    return _airflow(cfg, "log-server", [str(VENV_BIN / "uvicorn"), "--factory",
                                        "airflow.utils.serve_logs.log_server:get_app", "--host", cfg.bind_address,
                                        "--port", str(port), "--no-access-log"],
                    health_check=_log_server_health,
                    listeners=(Listener("AIRFLOW_LOG_SERVER_PORT", port, served=True),))


def exporters(cfg: StackConfig) -> list[Component]:
    """The stack's own health for Prometheus, from Debian's exporters (both stacks run them):
    Airflow's metadata database through a read-only login (observability/postgres-exporter/
    queries.yml; the role is made by stack/postgres.py after the migration, so it starts with
    Airflow), the Celery queues' lengths (Redis lists named after the queues, db 0) and memory,
    CPU and process states per component (/proc; as the control-plane user it cannot read other
    users' smaps, so no PSS: `-gather-smaps=false`)."""
    p = cfg.ports
    e = cfg.env
    queues = sorted({w.queue for w in cfg.workers})
    pg_dsn = (f"postgresql://{quote(e['POSTGRES_EXPORTER_USER'], safe='')}:{quote(e['POSTGRES_EXPORTER_PASSWORD'], safe='')}"
              f"@{LOOPBACK}:{p['POSTGRES_PORT']}/{e['POSTGRES_DB']}?sslmode=disable")
    return [
        Component(
            name="postgres-exporter", phase="airflow", user=CONTROL_USER, home=cfg.home, priority=30,
            command=[_which("prometheus-postgres-exporter"), f"--web.listen-address={LOOPBACK}:{p['POSTGRES_EXPORTER_PORT']}",
                     f"--extend.query-path={POSTGRES_EXPORTER_QUERIES}", "--disable-settings-metrics"],
            extra_env=lambda: {"DATA_SOURCE_NAME": pg_dsn},
            health=_port_health("POSTGRES_EXPORTER_PORT", "/metrics"),
            listeners=(Listener("POSTGRES_EXPORTER_PORT", p["POSTGRES_EXPORTER_PORT"]),),
        ),
        Component(
            # Its Redis ACL user (stack/grants.py, read-only commands) from the environment, not argv.
            name="redis-exporter", phase="base", user=CONTROL_USER, home=cfg.home, priority=20,
            command=[_which("prometheus-redis-exporter"), f"-web.listen-address={LOOPBACK}:{p['REDIS_EXPORTER_PORT']}",
                     "-check-single-keys=" + ",".join(f"db0={q}" for q in queues), "-config-command=-"],
            extra_env=lambda: {"REDIS_ADDR": f"redis://{LOOPBACK}:{p['REDIS_PORT']}", "REDIS_USER": "exporter",
                               "REDIS_PASSWORD": e["REDIS_EXPORTER_PASSWORD"]},
            health=_port_health("REDIS_EXPORTER_PORT", "/metrics"),
            listeners=(Listener("REDIS_EXPORTER_PORT", p["REDIS_EXPORTER_PORT"]),),
        ),
        Component(
            name="process-exporter", phase="base", user=CONTROL_USER, home=cfg.home, priority=20,
            command=[_which("prometheus-process-exporter"), f"-web.listen-address={LOOPBACK}:{p['PROCESS_EXPORTER_PORT']}",
                     f"-config.path={PROCESS_EXPORTER_CONFIG}", "-gather-smaps=false", "-threads=false",
                     # Celery and Airflow retitle their processes after start: match names anew.
                     "-recheck"],
            health=_port_health("PROCESS_EXPORTER_PORT", "/metrics"),
            listeners=(Listener("PROCESS_EXPORTER_PORT", p["PROCESS_EXPORTER_PORT"]),),
        ),
    ]


def components(cfg: StackConfig) -> list[Component]:
    """Every component of this stack in start order (optional ones marked `present=False` when
    their binary is missing)."""
    p = cfg.ports
    e = cfg.env
    pg_bin = postgres_bin() or Path("/usr/lib/postgresql/missing/bin")
    airflow = str(VENV_BIN / "airflow")
    mlflow_home = cfg.home / "mlflow"
    mlflow_cmd = [str(VENV_BIN / "python"), "-m", "stack.mlflow_server", "--app-name", "basic-auth", "--host", cfg.bind_address,
                  "--port", str(p["MLFLOW_PORT"]), "--workers", "1",
                  "--artifacts-destination", str(mlflow_home / "artifacts")]
    if mlflow_metrics_available():
        mlflow_cmd += ["--expose-prometheus", str(mlflow_home / "metrics")]
    mlflow_db = cfg.db_url(e["MLFLOW_DB"])
    statsd_bin = optional_binary("statsd_exporter", "statsd-exporter")
    # Other hosts' Airflow programs send StatsD to the bind address; the exporter's page is local.
    statsd_flags = [f"--statsd.listen-udp={cfg.bind_address}:{p['STATSD_PORT']}",
                    f"--statsd.listen-tcp={cfg.bind_address}:{p['STATSD_PORT']}",
                    f"--web.listen-address={LOOPBACK}:{p['STATSD_EXPORTER_PORT']}", f"--statsd.mapping-config={STATSD_MAPPING}"]
    double = statsd_double(cfg)
    if double:
        # The test double also records every line it receives (the stack tests read them).
        statsd_cmd = [str(VENV_BIN / "python"), double, *statsd_flags, f"--double.record-file={statsd_double_record(cfg)}"]
    else:
        statsd_cmd = [statsd_bin or "statsd_exporter", *statsd_flags]
    grafana_bin = optional_binary("grafana", "grafana-server")
    pushgateway_home = cfg.home / "pushgateway"
    alertmanager_home = cfg.home / "alertmanager"
    table = [
        Component(
            name="postgres", phase="base", user="postgres", home=cfg.pgdata, priority=10, stopsignal="INT",
            stopasgroup=False, umask="077",
            # TCP on 127.0.0.1 only, no Unix socket; fast shutdown on stop (SIGINT).
            command=[str(pg_bin / "postgres"), "-D", str(cfg.pgdata), "-p", str(p["POSTGRES_PORT"]),
                     "-h", LOOPBACK, "-c", "unix_socket_directories=", "-c", "max_connections=200"],
            health=lambda c, _: health.check_postgres(c),
            listeners=(Listener("POSTGRES_PORT", p["POSTGRES_PORT"]),),
        ),
        Component(
            # Its password (requirepass), port and bind address are in the rendered redis.conf.
            name="redis", phase="base", user=CONTROL_USER, home=cfg.home / "redis", priority=10, stopasgroup=False,
            command=[_which("redis-server"), str(cfg.redis_conf)],
            health=lambda c, _: health.check_redis(c),
            listeners=(Listener("REDIS_PORT", p["REDIS_PORT"], served=True),),
        ),
        Component(
            # No --web.enable-lifecycle: /-/reload and /-/quit answer 403; reload with SIGHUP.
            name="prometheus", phase="base", user=CONTROL_USER, home=cfg.home / "prometheus", priority=20,
            stopasgroup=False,
            command=[_which("prometheus"), f"--config.file={cfg.home / 'prometheus' / 'prometheus.yml'}",
                     f"--storage.tsdb.path={cfg.home / 'prometheus' / 'data'}",
                     # Whichever comes first (docs/production.md "Upkeep").
                     f"--storage.tsdb.retention.time={e['PROMETHEUS_RETENTION_TIME']}",
                     f"--storage.tsdb.retention.size={e['PROMETHEUS_RETENTION_SIZE']}",
                     f"--web.listen-address={cfg.bind_address}:{p['PROMETHEUS_PORT']}"],
            health=_http("/-/ready", "prometheus_url"),
            listeners=(Listener("PROMETHEUS_PORT", p["PROMETHEUS_PORT"], served=True),),
        ),
        Component(
            name="statsd-exporter", phase="base", user=CONTROL_USER, home=cfg.home, priority=20,
            present=statsd_bin is not None or double is not None, command=statsd_cmd,
            health=_port_health("STATSD_EXPORTER_PORT", "/metrics"),
            listeners=(Listener("STATSD_EXPORTER_PORT", p["STATSD_EXPORTER_PORT"]),
                       Listener("STATSD_PORT", p["STATSD_PORT"], "udp", served=True),
                       Listener("STATSD_PORT", p["STATSD_PORT"], served=True)),
        ),
        Component(
            # The ML steps' results (src/mlops/metrics.py), pushed from every worker host; kept across
            # restarts in its persistence file. No --web.enable-lifecycle, no --web.enable-admin-api:
            # no HTTP shutdown or wipe. Basic-auth users only (stack/grants.py WEB_USERS): the
            # workers push as `pusher`, Prometheus scrapes as `prometheus`; anonymous calls get 401.
            name="pushgateway", phase="base", user=CONTROL_USER, home=pushgateway_home, priority=20,
            stopasgroup=False,
            command=[_which("prometheus-pushgateway"), f"--web.listen-address={cfg.bind_address}:{p['PUSHGATEWAY_PORT']}",
                     f"--persistence.file={pushgateway_home / 'metrics.data'}", "--persistence.interval=1m",
                     f"--web.config.file={web_config_file(cfg, 'pushgateway')}"],
            health=_port_health("PUSHGATEWAY_PORT", "/-/ready", served=True, login=("pushgateway", "prometheus")),
            listeners=(Listener("PUSHGATEWAY_PORT", p["PUSHGATEWAY_PORT"], served=True),),
        ),
        Component(
            # Routes Prometheus' alerts to the receivers of the env file (stack/alerting.py renders
            # its config). No cluster listener (HA gossip would bind 0.0.0.0:9094). Basic-auth users
            # only (Prometheus, the operators' admin): silences and /-/reload need a login.
            name="alertmanager", phase="base", user=CONTROL_USER, home=alertmanager_home, priority=20,
            stopasgroup=False,
            command=[_which("prometheus-alertmanager"), f"--config.file={alertmanager_home / 'alertmanager.yml'}",
                     f"--storage.path={alertmanager_home / 'data'}",
                     f"--web.listen-address={LOOPBACK}:{p['ALERTMANAGER_PORT']}",
                     f"--web.external-url={cfg.alertmanager_url}", "--cluster.listen-address=",
                     f"--web.config.file={web_config_file(cfg, 'alertmanager')}"],
            health=_alertmanager_health,
            listeners=(Listener("ALERTMANAGER_PORT", p["ALERTMANAGER_PORT"]),),
        ),
        *exporters(cfg),
        Component(
            # Logins: MLflow's basic-auth app (stack/mlflow_auth.py). The backend URL and the Flask
            # secret key come from the environment, the user store and admin from the rendered
            # basic_auth.ini: none is on the command line. Job execution (GenAI jobs) would fork
            # about ten huey consumers of 160 MB each: not needed here.
            name="mlflow", phase="mlflow", user=CONTROL_USER, home=mlflow_home, priority=30, command=mlflow_cmd,
            extra_env=lambda: {"MLFLOW_BACKEND_STORE_URI": mlflow_db, "MLFLOW_TRACKING_URI": mlflow_db,
                               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                               "MLFLOW_AUTH_CONFIG_PATH": str(cfg.mlflow_auth_config),
                               "MLFLOW_FLASK_SERVER_SECRET_KEY": e["MLFLOW_FLASK_SERVER_SECRET_KEY"]},
            health=_mlflow_health,
            listeners=(Listener("MLFLOW_PORT", p["MLFLOW_PORT"], served=True),),
        ),
        Component(
            # `mlflow gc` on MLFLOW_GC_SCHEDULE (stack/mlflow_gc.py): the hard delete of what
            # maintenance_dag soft-deleted, with the server's own database URL and admin login.
            name="mlflow-gc", phase="mlflow", user=CONTROL_USER, home=mlflow_home, priority=30,
            command=[str(VENV_BIN / "python"), "-m", "stack.mlflow_gc"],
            extra_env=lambda: {"MLFLOW_BACKEND_STORE_URI": mlflow_db, "MLFLOW_TRACKING_URI": cfg.mlflow_url,
                               "MLFLOW_TRACKING_USERNAME": e["MLFLOW_ADMIN_USER"],
                               "MLFLOW_TRACKING_PASSWORD": e["MLFLOW_ADMIN_PASSWORD"],
                               "MLFLOW_DISABLE_TELEMETRY": "true",
                               **{k: e[k] for k in (mlflow_gc.SCHEDULE_VAR, mlflow_gc.RETENTION_VAR) if e.get(k)}},
            health=_mlflow_gc_health,
        ),
        Component(
            # MLflow's own /metrics answers admins only: this serves the same metric files without
            # a login, so Prometheus holds no MLflow password.
            name="mlflow-metrics", phase="mlflow", user=CONTROL_USER, home=mlflow_home, priority=30,
            present=mlflow_metrics_available(),
            command=[str(VENV_BIN / "python"), "-m", "stack.mlflow_metrics", str(mlflow_home / "metrics"), LOOPBACK,
                     str(p["MLFLOW_METRICS_PORT"])],
            extra_env=lambda: {"PYTHONPATH": str(REPO)},
            health=_port_health("MLFLOW_METRICS_PORT", "/metrics"),
            listeners=(Listener("MLFLOW_METRICS_PORT", p["MLFLOW_METRICS_PORT"]),),
        ),
        # uvicorn stops serving within a few tenths of a second of SIGTERM; the seconds after are
        # the interpreter's teardown: a restart (tasks cannot heartbeat meanwhile) waits 1 s, not 5.
        _airflow(cfg, "api-server", [airflow, "api-server"], stopwait=1, health_check=_api_server_health,
                 listeners=(Listener("AIRFLOW_API_PORT", p["AIRFLOW_API_PORT"], served=True),)),
        # Workers run every task through the api-server's Execution API: a task queued before it
        # answers fails its first try, so the scheduler starts last.
        _airflow(cfg, "scheduler", [str(VENV_BIN / "python"), "-m", "mlops_airflow.scheduler"], phase="scheduler"),
        _airflow(cfg, "dag-processor", [airflow, "dag-processor"]),
        # Its logs are served by the log server (same folder, same port).
        _airflow(cfg, "triggerer", [airflow, "triggerer", "--skip-serve-logs"]),
        log_server(cfg),
        *(worker(cfg, w) for w in cfg.workers),
        serving(cfg),
        maintenance_worker(cfg),
        _airflow(cfg, "flower", [airflow, "celery", "flower"], priority=50, health_check=_flower_health,
                 listeners=(Listener("FLOWER_PORT", p["FLOWER_PORT"], served=True),)),
        Component(
            name="grafana", phase="base", user=CONTROL_USER, home=cfg.home / "grafana", priority=60,
            present=grafana_bin is not None,
            command=[grafana_bin or "grafana", *(["server"] if Path(grafana_bin or "").name == "grafana" else []),
                     "--homepath", "/usr/share/grafana"],
            extra_env=lambda: {"GF_SERVER_HTTP_ADDR": cfg.bind_address, "GF_SERVER_HTTP_PORT": str(p["GRAFANA_PORT"]),
                               "GF_PATHS_DATA": str(cfg.home / "grafana"), "GF_PATHS_LOGS": str(cfg.home / "grafana"),
                               "GF_PATHS_PROVISIONING": str(GRAFANA_PROVISIONING),
                               "GF_SECURITY_ADMIN_USER": e.get("GRAFANA_ADMIN_USER", "admin"),
                               "GF_SECURITY_ADMIN_PASSWORD": e.get("GRAFANA_ADMIN_PASSWORD", "")},
            health=_port_health("GRAFANA_PORT", "/api/health", served=True),
            listeners=(Listener("GRAFANA_PORT", p["GRAFANA_PORT"], served=True),),
        ),
    ]
    return table


def web_config_file(cfg: StackConfig, server: str) -> Path:
    """The `--web.config.file` of the Pushgateway or Alertmanager (basic-auth users; stack/grants.py)."""
    return cfg.home / server / "web.yml"


def _which(name: str) -> str:
    """Absolute path of a system binary (programs get a fixed PATH); the bare name when missing
    (`up` refuses to start then, naming the package)."""
    return optional_binary(name) or name


def by_name(cfg: StackConfig) -> dict[str, Component]:
    """The table keyed by component name."""
    return {c.name: c for c in components(cfg)}


def users(cfg: StackConfig) -> list[str]:
    """The system users the present programs run as."""
    return sorted({c.user for c in components(cfg) if c.present})


def reach(cfg: StackConfig) -> dict[str, list[Path]]:
    """What each unprivileged user must be able to reach (stack/access.py grants traversal):
    every program starts the venv's Python from the repository; PostgreSQL needs only its data."""
    return {user: [cfg.home] if user in ("postgres", SERVING_USER) else [cfg.home, cfg.data_dir]
            for user in users(cfg) if user != "root"}


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
