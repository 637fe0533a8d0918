"""Settings of one native stack, derived from its `.env` file, and the environment of each part."""

from __future__ import annotations

import glob
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from stack import envfile

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
AIRFLOW_ENV_FILE = REPO / "airflow" / "airflow.env"
EXAMPLE_ENV = REPO / ".env.example"

PORT_VARS = (
    "AIRFLOW_API_PORT",
    "FLOWER_PORT",
    "MLFLOW_PORT",
    "PROMETHEUS_PORT",
    "GRAFANA_PORT",
    "STATSD_EXPORTER_PORT",
    "STATSD_PORT",
    "POSTGRES_PORT",
    "REDIS_PORT",
    "AIRFLOW_LOG_SERVER_PORT",
)
REQUIRED_VARS = (
    "STACK_HOME",
    "MLOPS_DATA_DIR",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "MLFLOW_DB",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "FLOWER_USER",
    "FLOWER_PASSWORD",
    "MLOPS_MODEL_NAME",
)


@dataclass(frozen=True)
class Worker:
    """One Celery worker: its name, queue, concurrency and log-server port (None: no log server)."""

    name: str
    queue: str
    concurrency: int
    log_port: int | None


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
        """AIRFLOW_HOME of every Airflow component."""
        return self.home / "airflow"

    @property
    def supervisord_conf(self) -> Path:
        """The rendered supervisord config (mode 600)."""
        return self.home / "supervisord.conf"

    @property
    def env_dir(self) -> Path:
        """One rendered environment file per program (stack/launch.py reads it)."""
        return self.run_dir / "env"

    @property
    def broker_url(self) -> str:
        """The Celery broker (this stack's Redis)."""
        return f"redis://127.0.0.1:{self.ports['REDIS_PORT']}/0"

    def db_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of `database` on the private Postgres."""
        user = quote(self.env["POSTGRES_USER"], safe="")
        password = quote(self.env["POSTGRES_PASSWORD"], safe="")
        return f"{driver}://{user}:{password}@127.0.0.1:{self.ports['POSTGRES_PORT']}/{database}"

    @property
    def api_url(self) -> str:
        """Base URL of the Airflow api-server."""
        return f"http://127.0.0.1:{self.ports['AIRFLOW_API_PORT']}"

    @property
    def flower_url(self) -> str:
        """Base URL of Flower."""
        return f"http://127.0.0.1:{self.ports['FLOWER_PORT']}"

    @property
    def mlflow_url(self) -> str:
        """MLflow tracking server URL (the workers' MLFLOW_TRACKING_URI)."""
        return f"http://127.0.0.1:{self.ports['MLFLOW_PORT']}"

    @property
    def prometheus_url(self) -> str:
        """Base URL of Prometheus."""
        return f"http://127.0.0.1:{self.ports['PROMETHEUS_PORT']}"

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

    def airflow_env(self) -> dict[str, str]:
        """Environment shared by every Airflow component (airflow.env plus this stack's values)."""
        env = envfile.parse(AIRFLOW_ENV_FILE)
        p = self.ports
        env.update(
            {
                "AIRFLOW_HOME": str(self.airflow_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(self.dag_bundles()),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url(self.env["POSTGRES_DB"]),
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.db_url(self.env["POSTGRES_DB"]),
                "AIRFLOW__CORE__FERNET_KEY": self.env["AIRFLOW_FERNET_KEY"],
                "AIRFLOW__API_AUTH__JWT_SECRET": self.env["AIRFLOW_JWT_SECRET"],
                "AIRFLOW__API__SECRET_KEY": self.env["AIRFLOW_API_SECRET_KEY"],
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(p["AIRFLOW_API_PORT"]),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CELERY__FLOWER_HOST": "127.0.0.1",
                "AIRFLOW__CELERY__FLOWER_PORT": str(p["FLOWER_PORT"]),
                "AIRFLOW__CELERY__FLOWER_BASIC_AUTH": f"{self.env['FLOWER_USER']}:{self.env['FLOWER_PASSWORD']}",
                "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(p["STATSD_PORT"]),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "airflow"),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(p["AIRFLOW_LOG_SERVER_PORT"] + 3),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(p["AIRFLOW_LOG_SERVER_PORT"]),
                "MLOPS_DATA_DIR": str(self.data_dir),
                "MLOPS_MODEL_NAME": self.env["MLOPS_MODEL_NAME"],
                "MLFLOW_TRACKING_URI": self.mlflow_url,
                "PYTHONPATH": str(REPO / "src"),
                # Marks every process of this stack so `down` can prove nothing is left behind.
                "MLOPS_STACK_HOME": str(self.home),
            }
        )
        # Per-stack Airflow settings from the env file win (e.g. the test stack's schedule switch).
        env.update({k: v for k, v in self.env.items() if k.startswith("AIRFLOW__")})
        return env

    def rbac_env(self) -> dict[str, str]:
        """User names and passwords read by airflow/bootstrap.py."""
        return {k: v for k, v in self.env.items() if k.startswith("AIRFLOW_") and k.endswith(("_USER", "_PASSWORD"))}


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
    env = envfile.ensure(env_file, EXAMPLE_ENV)
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
    # task instance, and the api-server asks one port per hostname: one log server serves the
    # running tasks of all workers; a log server per worker would only cost memory (about 95 MiB).
    workers = [
        Worker("light1", "light", 2, ports["AIRFLOW_LOG_SERVER_PORT"]),
        Worker("light2", "light", 2, None),
        Worker("heavy1", "heavy", 1, None),
    ]
    return StackConfig(env_file, env, home, data_dir, ports, bench_bundle, workers)
