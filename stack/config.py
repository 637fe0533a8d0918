"""Settings of one native stack, derived from its `.env` file: paths, ports, URLs, the Airflow
settings its programs share and the secrets (which program gets which is declared in
stack/components.py)."""

from __future__ import annotations

import glob
import ipaddress
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from stack import envfile, grants

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
AIRFLOW_ENV_FILE = REPO / "airflow" / "airflow.env"
EXAMPLE_ENV = REPO / ".env.example"

# The system users the programs run as (created by scripts/system-users.sh): the control plane,
# the Celery workers (and so every task), and the group of both for the folders they share.
CONTROL_USER = "mlops"
WORKER_USER = "mlops-worker"
# The prediction service (mlops_serving): not in SHARED_GROUP, it reads no data folder.
SERVING_USER = "mlops-serving"
SHARED_GROUP = "mlops-shared"

PORT_VARS = (
    "AIRFLOW_API_PORT",
    "FLOWER_PORT",
    "MLFLOW_PORT",
    "MLFLOW_METRICS_PORT",
    "PROMETHEUS_PORT",
    "PUSHGATEWAY_PORT",
    "ALERTMANAGER_PORT",
    "GRAFANA_PORT",
    "STATSD_EXPORTER_PORT",
    "STATSD_PORT",
    "POSTGRES_PORT",
    "REDIS_PORT",
    "AIRFLOW_LOG_SERVER_PORT",
    "SERVING_PORT",
    "POSTGRES_EXPORTER_PORT",
    "REDIS_EXPORTER_PORT",
    "PROCESS_EXPORTER_PORT",
)
REQUIRED_VARS = (
    "STACK_HOME",
    "POSTGRES_EXPORTER_USER",
    "POSTGRES_EXPORTER_PASSWORD",
    "PROMETHEUS_RETENTION_TIME",
    "PROMETHEUS_RETENTION_SIZE",
    "MLOPS_DATA_DIR",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "MLFLOW_DB",
    "MLFLOW_AUTH_DB",
    "REDIS_PASSWORD",
    "REDIS_SCHEDULER_PASSWORD",
    "REDIS_WORKER_PASSWORD",
    "REDIS_FLOWER_PASSWORD",
    "REDIS_EXPORTER_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "MLFLOW_AUTH_DB_PASSWORD",
    "PUSHGATEWAY_PUSH_PASSWORD",
    "PUSHGATEWAY_PROMETHEUS_PASSWORD",
    "ALERTMANAGER_PROMETHEUS_PASSWORD",
    "ALERTMANAGER_ADMIN_PASSWORD",
    "MLFLOW_ADMIN_USER",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_PIPELINE_USER",
    "MLFLOW_PIPELINE_PASSWORD",
    "MLFLOW_VIEWER_USER",
    "MLFLOW_VIEWER_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_UI_SECRET_KEY",
    "FLOWER_USER",
    "FLOWER_PASSWORD",
    "MLOPS_MODEL_NAME",
    "SERVING_TOKEN",
    "PREDICTIONS_DB",
    "PREDICTIONS_DB_USER",
    "PREDICTIONS_DB_PASSWORD",
    "PREDICTIONS_READER_USER",
    "PREDICTIONS_READER_PASSWORD",
    "MLFLOW_SERVING_USER",
    "MLFLOW_SERVING_PASSWORD",
    "MLFLOW_MAINTENANCE_USER",
    "MLFLOW_MAINTENANCE_PASSWORD",
)


# Retentions in days (maintenance_dag) and the model versions always kept, handed to every Airflow program.
RETENTION_VARS = ("LOG_RETENTION_DAYS", "REPORT_RETENTION_DAYS", "AIRFLOW_DB_RETENTION_DAYS", "MLFLOW_RUN_RETENTION_DAYS",
                  "MLFLOW_MODEL_VERSION_RETENTION_DAYS", "MLFLOW_KEEP_MODEL_VERSIONS")


# What the workers of each queue import before they fork their task processes
# (MLOPS_WORKER_PRELOAD, groups of mlops_airflow.preload): the training stack on `heavy`,
# validation and drift (with the registry and scoring they use) on `light`.
QUEUE_PRELOAD = {"light": "validation,drift", "heavy": "training"}
# CPU priority (nice) of each queue's workers and so of their tasks: a training uses every idle
# core, and must not slow the short light tasks and the control plane beside it when they need a
# core (benchmarks/pipeline_overhead.py `queue_isolation`); an idle machine still gives it all.
QUEUE_NICE = {"light": 0, "heavy": 10}


# The address of the listeners other hosts (worker hosts, operators' browsers) reach: the broker,
# the api-server (UI, REST and the tasks' Execution API), MLflow, StatsD ingest, the Pushgateway
# (the ML steps push to it), the task-log server, Flower, Prometheus and Grafana. PostgreSQL, the
# MLflow metrics exporter, the statsd-exporter's page and Alertmanager serve this host only and
# stay on loopback. `BIND_ADDRESS` in the env
# file (the compose stack publishes its ports on the same variable); empty means loopback.
LOOPBACK = "127.0.0.1"


def bind_address(raw: str, env_file: Path, var: str = "BIND_ADDRESS") -> str:
    """The IPv4 address `raw` names (empty: loopback); EnvFileError for anything else. Clients
    connect to it and task instances record it as their host name, so no wildcard."""
    value = raw.strip() or LOOPBACK
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise envfile.EnvFileError(f"{env_file}: {var}={raw!r} is not an IPv4 address (e.g. 10.0.0.5; "
                                   f"empty means {LOOPBACK})") from None
    if address.is_unspecified or address.is_multicast:
        raise envfile.EnvFileError(f"{env_file}: {var}={raw!r}: the native stack needs this host's own address "
                                   f"(clients connect to it), not a wildcard")
    return str(address)


@dataclass(frozen=True)
class Worker:
    """One Celery worker: its name, queue and concurrency."""

    name: str
    queue: str
    concurrency: int

    @property
    def preload(self) -> str:
        """The preload groups of its queue (MLOPS_WORKER_PRELOAD)."""
        return QUEUE_PRELOAD.get(self.queue, "")

    @property
    def nice(self) -> int:
        """The CPU priority its queue runs at (QUEUE_NICE)."""
        return QUEUE_NICE.get(self.queue, 0)


# Light workers on this host and the task slots of each (LIGHT_WORKERS, LIGHT_WORKER_CONCURRENCY;
# docs/architecture.md "Load" for what they buy). A worker process holds the preloaded validation
# and drift stack (about 0.4 GiB); a slot costs a pool process sharing it.
LIGHT_WORKERS_DEFAULT = 1
LIGHT_CONCURRENCY_DEFAULT = 8
MAX_LIGHT_WORKERS = 8
MAX_LIGHT_CONCURRENCY = 32


def _count(env: dict[str, str], env_file: Path, var: str, default: int, most: int, what: str) -> int:
    """A count from 1 to `most` in `var` (empty: `default`); EnvFileError naming file and variable."""
    raw = env.get(var, "").strip() or str(default)
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise envfile.EnvFileError(f"{env_file}: {var}={raw!r} is not a number of {what} from 1 to {most}")
    return int(raw)


def light_workers(env: dict[str, str], env_file: Path) -> list[Worker]:
    """The light workers LIGHT_WORKERS and LIGHT_WORKER_CONCURRENCY ask for."""
    count = _count(env, env_file, "LIGHT_WORKERS", LIGHT_WORKERS_DEFAULT, MAX_LIGHT_WORKERS, "light workers")
    slots = _count(env, env_file, "LIGHT_WORKER_CONCURRENCY", LIGHT_CONCURRENCY_DEFAULT, MAX_LIGHT_CONCURRENCY,
                   "task slots")
    return [Worker(f"light{i}", "light", slots) for i in range(1, count + 1)]


@dataclass
class StackConfig:
    """Everything the stack scripts need, with absolute paths and integer ports."""

    env_file: Path
    env: dict[str, str]
    home: Path
    data_dir: Path
    ports: dict[str, int]
    bench_bundle: bool = False
    workers: list[Worker] = field(default_factory=list)
    added_vars: list[str] = field(default_factory=list)
    # This host's served listeners bind `bind_address`; clients reach the control plane's served
    # listeners at `control_address` (the same on the main host; the main host's address on a
    # worker host, see stack/workerhost.py).
    bind_address: str = LOOPBACK
    control_address: str = LOOPBACK

    @property
    def logs(self) -> Path:
        """The one folder with every component's log."""
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        """Sockets and pid files."""
        return self.home / "run"

    @property
    def pgdata(self) -> Path:
        """The private Postgres cluster."""
        return self.home / "postgres"

    @property
    def airflow_home(self) -> Path:
        """AIRFLOW_HOME (and HOME) of the control plane's Airflow programs; holds the JWT key pair."""
        return self.home / "airflow"

    @property
    def worker_home(self) -> Path:
        """AIRFLOW_HOME (and HOME) of the Celery workers: none of the control plane's files."""
        return self.home / "airflow-worker"

    @property
    def task_logs(self) -> Path:
        """Task and trigger logs: written by the workers and the triggerer, served by the log server."""
        return self.logs / "airflow"

    @property
    def jwt_private_key(self) -> Path:
        """The key Airflow signs JWTs with (mode 600, control-plane user)."""
        return self.airflow_home / "keys" / "jwt-signing.pem"

    @property
    def jwks_file(self) -> Path:
        """The public key set verifiers trust (`[api_auth] trusted_jwks_url`)."""
        return self.airflow_home / "keys" / "jwks.json"

    @property
    def mlflow_auth_config(self) -> Path:
        """MLflow's basic-auth configuration (user-store URL, admin login; mode 600)."""
        return self.home / "mlflow" / "basic_auth.ini"

    @property
    def redis_conf(self) -> Path:
        """Redis' configuration (holds `requirepass`; mode 600)."""
        return self.home / "redis" / "redis.conf"

    @property
    def supervisord_conf(self) -> Path:
        """The rendered supervisord config (mode 600)."""
        return self.home / "supervisord.conf"

    @property
    def env_dir(self) -> Path:
        """One rendered environment file per program (stack/launch.py reads it)."""
        return self.run_dir / "env"

    def redis_url(self, db: int, user: str | None = None) -> str:
        """URL of database `db` of this stack's Redis as ACL user `user` (stack/grants.py
        REDIS_USERS); None: the admin (`default`, for `up`, status and tests) where this host holds
        its password, else the workers' user (a worker host)."""
        if user is None and grants.REDIS_ADMIN_PASSWORD_VAR not in self.env:
            user = "worker"
        if user is None:
            auth = f":{quote(self.env[grants.REDIS_ADMIN_PASSWORD_VAR], safe='')}"
        else:
            auth = f"{user}:{quote(self.env[grants.redis_user(user).password_var], safe='')}"
        return f"redis://{auth}@{self.control_address}:{self.ports['REDIS_PORT']}/{db}"

    @property
    def broker_url(self) -> str:
        """The Celery broker (Redis database 0) as the admin: for health checks and tests only."""
        return self.redis_url(0)

    def celery_urls(self, user: str) -> dict[str, str]:
        """Broker (Redis database 0) and result backend (database 1, not the metadata database: the
        workers need no database password) as ACL user `user`."""
        return {"AIRFLOW__CELERY__BROKER_URL": self.redis_url(0, user),
                "AIRFLOW__CELERY__RESULT_BACKEND": self.redis_url(1, user)}

    def db_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of `database` on the private Postgres, as its owner role (never the
        superuser: stack/grants.py)."""
        role = grants.pg_role(self.env, database)
        user = quote(role.name, safe="")
        password = quote(self.env[role.password_var], safe="")
        return f"{driver}://{user}:{password}@{LOOPBACK}:{self.ports['POSTGRES_PORT']}/{database}"

    @property
    def api_url(self) -> str:
        """Base URL of the Airflow api-server."""
        return f"http://{self.control_address}:{self.ports['AIRFLOW_API_PORT']}"

    @property
    def flower_url(self) -> str:
        """Base URL of Flower."""
        return f"http://{self.control_address}:{self.ports['FLOWER_PORT']}"

    @property
    def mlflow_url(self) -> str:
        """MLflow tracking server URL (the workers' MLFLOW_TRACKING_URI)."""
        return f"http://{self.control_address}:{self.ports['MLFLOW_PORT']}"

    @property
    def serving_url(self) -> str:
        """Base URL of the prediction service (MLOPS_SERVING_URL of its clients)."""
        return f"http://{self.bind_address}:{self.ports['SERVING_PORT']}"

    @property
    def prometheus_url(self) -> str:
        """Base URL of Prometheus."""
        return f"http://{self.control_address}:{self.ports['PROMETHEUS_PORT']}"

    @property
    def log_server_url(self) -> str:
        """Base URL of this host's task-log server (the api-server asks it at the task's host name)."""
        return f"http://{self.bind_address}:{self.ports['AIRFLOW_LOG_SERVER_PORT']}"

    @property
    def pushgateway_url(self) -> str:
        """Base URL of the Pushgateway (the workers' MLOPS_PUSHGATEWAY_URL, on every worker host)."""
        return f"http://{self.control_address}:{self.ports['PUSHGATEWAY_PORT']}"

    def web_login(self, server: str, user: str) -> tuple[str, str]:
        """(user, password) of a basic-auth user of the Pushgateway or Alertmanager (stack/grants.py)."""
        return grants.web_login(self.env, server, user)

    @property
    def alertmanager_url(self) -> str:
        """Base URL of Alertmanager (only Prometheus, on this host, sends to it)."""
        return f"http://{LOOPBACK}:{self.ports['ALERTMANAGER_PORT']}"

    def dag_bundles(self) -> list[dict]:
        """`[dag_processor] dag_bundle_config_list`: the product DAGs, plus the benchmark bundle on demand."""
        bundles = [
            {
                "name": "dags-folder",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {},
            }
        ]
        if self.bench_bundle:
            bundles.append(
                {
                    "name": "benchmarks",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {"path": str(REPO / "benchmarks" / "dags")},
                }
            )
        return bundles

    def airflow_settings(self, airflow_home: Path) -> dict[str, str]:
        """The Airflow settings every Airflow program shares (airflow.env plus this stack's values,
        then the env file's own AIRFLOW__* lines): no secret."""
        env = envfile.parse(AIRFLOW_ENV_FILE)
        p = self.ports
        env.update(
            {
                "AIRFLOW_HOME": str(airflow_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(self.dag_bundles()),
                "AIRFLOW__API__HOST": self.bind_address,
                "AIRFLOW__API__PORT": str(p["AIRFLOW_API_PORT"]),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CELERY__FLOWER_HOST": self.bind_address,
                "AIRFLOW__CELERY__FLOWER_PORT": str(p["FLOWER_PORT"]),
                "AIRFLOW__METRICS__STATSD_HOST": self.control_address,
                "AIRFLOW__METRICS__STATSD_PORT": str(p["STATSD_PORT"]),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.task_logs),
                # Task and job hostnames are the address the log server listens on (stack/hostname.py).
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "stack.hostname.bind_address",
                "MLOPS_STACK_BIND_ADDRESS": self.bind_address,
                # One log server per host serves the workers' and the triggerer's logs: the
                # api-server asks both ports on the same host name.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(p["AIRFLOW_LOG_SERVER_PORT"]),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(p["AIRFLOW_LOG_SERVER_PORT"]),
                "MLOPS_DATA_DIR": str(self.data_dir),
                "MLOPS_MODEL_NAME": self.env["MLOPS_MODEL_NAME"],
                # The stack's default data set (the DAGs' Param dataset; mlops.dataset).
                **{k: self.env[k] for k in ("MLOPS_DATASET", "MLOPS_SCHEMA") if self.env.get(k)},
                "MLFLOW_TRACKING_URI": self.mlflow_url,
                "PYTHONPATH": str(REPO / "src"),
                # maintenance_dag's retentions (mlops_airflow.maintenance).
                **{k: self.env[k] for k in RETENTION_VARS if self.env.get(k)},
            }
        )
        # Per-stack Airflow settings from the env file win (e.g. the test stack's schedule switch).
        env.update({k: v for k, v in self.env.items() if k.startswith("AIRFLOW__")})
        # The approval gate's switch and timeout (README "Approval gate"), when the env file sets them.
        env.update({k: self.env[k] for k in ("MLOPS_REQUIRE_APPROVAL", "MLOPS_APPROVAL_TIMEOUT")
                    if self.env.get(k)})
        return env

    def bootstrap_env(self) -> dict[str, str]:
        """What airflow/bootstrap.py reads besides the Airflow settings: the logins of rbac.yaml and
        the MLflow pipeline account it stores in the Connection `mlflow_default`."""
        logins = {k: v for k, v in self.env.items() if k.startswith("AIRFLOW_") and k.endswith(("_USER", "_PASSWORD"))}
        # The prediction log's read-only login, for the Connection `predictions_db` (when the
        # env file has it: the monitoring of served predictions reads through it).
        predictions = ({"PREDICTIONS_READER_PASSWORD": self.env["PREDICTIONS_READER_PASSWORD"],
                        "PREDICTIONS_READER_USER": self.env.get("PREDICTIONS_READER_USER", ""),
                        "PREDICTIONS_DB": self.env.get("PREDICTIONS_DB", ""),
                        "PREDICTIONS_DB_HOST": LOOPBACK,
                        "PREDICTIONS_DB_PORT": str(self.ports["POSTGRES_PORT"])}
                       if self.env.get("PREDICTIONS_READER_PASSWORD") else {})
        return {**logins, **predictions, "MLFLOW_TRACKING_URI": self.mlflow_url,
                "MLFLOW_PIPELINE_USER": self.env["MLFLOW_PIPELINE_USER"],
                "MLFLOW_PIPELINE_PASSWORD": self.env["MLFLOW_PIPELINE_PASSWORD"]}


def postgres_bin() -> Path | None:
    """Newest /usr/lib/postgresql/*/bin that has pg_ctl and initdb."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


def optional_binary(*names: str) -> str | None:
    """The first of `names` found on PATH (statsd-exporter and Grafana are optional)."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def env_file_path() -> Path:
    """The stack's env file: $STACK_ENV_FILE, else .env at the repository root."""
    return Path(os.environ.get("STACK_ENV_FILE", REPO / ".env")).resolve()


def load(env_file: Path | None = None, bench_bundle: bool = False) -> StackConfig:
    """Create or read the env file and validate it; raise EnvFileError naming file and variable."""
    env_file = env_file or env_file_path()
    before = set(envfile.parse(env_file)) if env_file.is_file() else None
    env = envfile.ensure(env_file, EXAMPLE_ENV)
    added = sorted(set(env) - before) if before is not None else []
    for name in REQUIRED_VARS:
        if not env.get(name):
            raise envfile.EnvFileError(f"{env_file}: {name} is empty")
    ports: dict[str, int] = {}
    for name in PORT_VARS:
        raw = env.get(name, "")
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise envfile.EnvFileError(f"{env_file}: {name}={raw!r} is not a TCP/UDP port number")
        ports[name] = int(raw)
    for name in ("POSTGRES_PORT", "REDIS_PORT"):
        if ports[name] in (5432, 6379):
            raise envfile.EnvFileError(f"{env_file}: {name}={ports[name]} would clash with a system server")
    base = env_file.parent
    home = (base / env["STACK_HOME"]).resolve()
    data_dir = (base / env["MLOPS_DATA_DIR"]).resolve()
    # On one host every worker writes to the same log folder, records the same hostname in the
    # task instance, and the api-server asks one port per hostname: one log server (its own
    # program, see stack/components.py) serves the running tasks of all workers.
    workers = [*light_workers(env, env_file), Worker("heavy1", "heavy", 1)]
    address = bind_address(env.get("BIND_ADDRESS", ""), env_file)
    return StackConfig(env_file, env, home, data_dir, ports, bench_bundle, workers, added, address, address)
