"""docker-compose.celery.yml and airflow/Dockerfile, validated by Debian's docker-compose (no engine)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

from collections import defaultdict
from types import SimpleNamespace

import pytest
import yaml

from stack import grants as stack_grants
from stack.components import CONTROL_GRANTS, WORKER_GRANTS, secret_settings
from stack.config import StackConfig
from stack.mlflow_auth import VARIABLES as MLFLOW_AUTH_VARIABLES

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.celery.yml"
IMAGE = "mlops-flights-airflow:3.3.2"
SERVICES = {
    "postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler",
    "airflow-dag-processor", "airflow-triggerer", "airflow-worker-light", "airflow-worker-heavy",
    "flower", "mlflow", "mlflow-init", "mlflow-metrics", "statsd-exporter", "prometheus", "pushgateway",
    "alertmanager-config", "alertmanager", "grafana", "model-server", "logins-config", "postgres-exporter",
    "redis-exporter", "process-exporter", "airflow-worker-maintenance", "mlflow-gc",
}
AIRFLOW_COMPONENTS = {
    "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker-light", "airflow-worker-heavy", "airflow-worker-maintenance", "flower",
}
# One-shot services: they exit 0 once done (no health check, no restart).
ONE_SHOT = {"airflow-init", "mlflow-init", "alertmanager-config", "logins-config"}
# Every service that runs the project image (built from airflow/Dockerfile).
PROJECT_IMAGE = AIRFLOW_COMPONENTS | {"mlflow", "mlflow-init", "mlflow-metrics", "mlflow-gc", "alertmanager-config",
                                      "model-server", "logins-config"}
# Non-secret settings every Airflow component shares.
SHARED = [
    "AIRFLOW__METRICS__STATSD_HOST", "AIRFLOW__METRICS__STATSD_PORT", "AIRFLOW__METRICS__STATSD_ON",
    "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "MLFLOW_TRACKING_URI",
]
# Compose service -> the native component whose secrets it holds (stack/components.py; no
# service here serves task logs, so the native log server's grant has no counterpart).
SERVICE_GRANTS = {
    "airflow-apiserver": CONTROL_GRANTS["api-server"],
    "airflow-scheduler": CONTROL_GRANTS["scheduler"],
    "airflow-dag-processor": CONTROL_GRANTS["dag-processor"],
    "airflow-triggerer": CONTROL_GRANTS["triggerer"],
    "flower": CONTROL_GRANTS["flower"],
    "airflow-worker-light": WORKER_GRANTS,
    "airflow-worker-heavy": WORKER_GRANTS,
    "airflow-worker-maintenance": CONTROL_GRANTS["maintenance-worker"],
    "airflow-init": frozenset({"metadata-db", "fernet-key"}),
}
NO_DATABASE_URL = "postgresql+psycopg2://no-database-access@postgres:5432/no-database-access"
# Secrets of .env.example that the compose file does not use (and must not hand to anyone).
NOT_USED_BY_COMPOSE = {
    # Both stacks sign JWTs with a generated EdDSA key pair; kept in .env.example for the native
    # stack's check that a token signed with it is refused.
    "AIRFLOW_JWT_SECRET",
}
# Variables the compose file requires although they have a default in .env.example.
REQUIRED_SETTINGS = ["MLFLOW_AUTH_DB", "MLFLOW_ADMIN_USER", "MLFLOW_PIPELINE_USER", "MLFLOW_VIEWER_USER"]


def grant_settings() -> dict[str, set[str]]:
    """The Airflow settings each grant of the native table consists of (secret_settings' keys)."""
    stub = SimpleNamespace(env=defaultdict(str), db_url=lambda database: "", jwt_private_key="", jwks_file="",
                           celery_urls=lambda user: StackConfig.celery_urls(SimpleNamespace(redis_url=lambda db, u: ""), user))
    return {grant: set(settings()) for grant, settings in secret_settings(stub).items()}


def secret_names() -> list[str]:
    """The secrets of .env.example: variables left empty there, named *PASSWORD/*SECRET*/*KEY/*TOKEN."""
    names = []
    for line in (REPO / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z0-9_]+)=\s*$", line)
        if m and re.search(r"PASSWORD|SECRET|KEY|TOKEN", m.group(1)):
            names.append(m.group(1))
    return names


def write_env(path: Path, skip: str | None = None) -> dict[str, str]:
    """A throwaway .env: .env.example's settings, every secret a fresh random value; `skip` left out."""
    values = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z0-9_]+)=(.*)$", line)
        if m and m.group(1) != skip:
            values[m.group(1)] = m.group(2).strip()
    values.update({name: secrets.token_urlsafe(16) for name in secret_names() if name != skip})
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return values


def compose_config(docker_compose: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with only the throwaway .env (the caller's environment left out)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)}
    return subprocess.run(
        [docker_compose, "--project-directory", str(REPO), "--env-file", str(env_file),
         "-f", str(COMPOSE), "config"],
        capture_output=True, text=True, env=env, timeout=60, cwd=env_file.parent,
    )


@pytest.fixture(scope="module")
def rendered(docker_compose: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """(rendered compose config, the secrets it was rendered with)."""
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    values = write_env(env_file)
    out = compose_config(docker_compose, env_file)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout), values


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    return {k: str(v) for k, v in env.items()} if isinstance(env, dict) else dict(
        e.split("=", 1) for e in env)


def _mounts(service: dict) -> dict[str, str]:
    """target -> source of a rendered service's volumes."""
    out = {}
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            out[vol["target"]] = vol["source"]
        else:
            source, target = vol.split(":")[:2]
            out[target] = source
    return out


def _command(service: dict) -> str:
    cmd = service.get("command") or []
    return " ".join(cmd) if isinstance(cmd, list) else cmd


def test_services(rendered: tuple[dict, dict]) -> None:
    config, _ = rendered
    assert set(config["services"]) == SERVICES
    assert {s for s, v in config["services"].items() if v.get("image") == IMAGE} == PROJECT_IMAGE


def test_scheduler_runs_the_wake_on_work_runner(rendered: tuple[dict, dict]) -> None:
    """Same scheduler as the native stack; the image's entrypoint execs `python ...` as given."""
    scheduler = rendered[0]["services"]["airflow-scheduler"]
    assert scheduler["command"] == ["python", "-m", "mlops_airflow.scheduler"]
    dockerfile = (REPO / "airflow" / "Dockerfile").read_text()
    assert "python -m mlops_airflow.scheduler --help" in dockerfile  # checked when the image is built


def test_worker_queues_concurrency_and_memory(rendered: tuple[dict, dict]) -> None:
    services = rendered[0]["services"]
    light, heavy = services["airflow-worker-light"], services["airflow-worker-heavy"]
    assert re.search(r"celery worker --queues light\b", _command(light))
    assert re.search(r"celery worker --queues heavy --concurrency 1\b", _command(heavy))
    assert "--celery-hostname light@%h" in _command(light)
    assert "--celery-hostname heavy@%h" in _command(heavy)
    assert light["deploy"]["replicas"] == 2
    assert heavy["deploy"].get("replicas", 1) == 1

    def gib(value: str) -> float:
        number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg])b?", value.lower()).groups()
        return float(number) * {"k": 1 / 2**20, "m": 1 / 1024, "g": 1}[unit]

    assert gib(heavy["deploy"]["resources"]["limits"]["memory"]) > gib(
        light["deploy"]["resources"]["limits"]["memory"])


def test_workers_preload_their_queues_stack_as_the_native_ones(rendered: tuple[dict, dict]) -> None:
    """Issue 16: each worker service imports its queue's groups (stack.config.QUEUE_PRELOAD, the
    native table) before it forks, through mlops_airflow.preload in Celery's `imports`."""
    from mlops_airflow.preload import requested
    from stack.config import QUEUE_PRELOAD

    services = rendered[0]["services"]
    for queue in ("light", "heavy"):
        env = _env(services[f"airflow-worker-{queue}"])
        assert env.get("MLOPS_WORKER_PRELOAD") == QUEUE_PRELOAD[queue], queue
        assert requested(env["MLOPS_WORKER_PRELOAD"])  # known groups only
        assert "mlops_airflow.preload" in json.loads(env["AIRFLOW__CELERY__EXTRA_CELERY_CONFIG"])["imports"]
        assert env.get("MLFLOW_DISABLE_TELEMETRY") == "true"
    others = [n for n, svc in services.items() if not n.startswith("airflow-worker-")
              and "MLOPS_WORKER_PRELOAD" in _env(svc)]
    assert others == []


def test_healthchecks_restart_and_dependencies(rendered: tuple[dict, dict]) -> None:
    services = rendered[0]["services"]
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc.get("restart") in (None, "no")
            continue
        if name == "process-exporter":
            # Its upstream image is FROM scratch (no shell, no wget): Prometheus' `up` and
            # ScrapeTargetDown are its health check.
            assert "healthcheck" not in svc and svc.get("restart") == "unless-stopped"
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert svc.get("restart") == "unless-stopped", name
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond["condition"] in {"service_healthy", "service_started",
                                         "service_completed_successfully"}, (name, dep)
    for worker, queue in (("airflow-worker-light", "light"), ("airflow-worker-heavy", "heavy")):
        test = " ".join(services[worker]["healthcheck"]["test"])
        assert "inspect ping" in test and f"{queue}@" in test
    for name in AIRFLOW_COMPONENTS - {"airflow-init"}:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
    # MLflow's accounts are set (after MLflow answers) before any worker takes a task.
    assert services["mlflow-init"]["depends_on"] == {"mlflow": {"condition": "service_healthy"}}
    for worker in ("airflow-worker-light", "airflow-worker-heavy"):
        assert services[worker]["depends_on"]["mlflow-init"]["condition"] == "service_completed_successfully"


def test_named_volumes(rendered: tuple[dict, dict]) -> None:
    config = rendered[0]
    declared = set(config["volumes"])
    used = set()
    for svc in config["services"].values():
        for vol in svc.get("volumes", []):
            source = vol["source"] if isinstance(vol, dict) else vol.split(":")[0]
            if not source.startswith(("/", ".")):
                used.add(source)
    assert used == declared
    assert {"postgres-data", "airflow-logs", "prometheus-data", "grafana-data"} <= declared


def test_every_airflow_component_shares_the_non_secret_settings(rendered: tuple[dict, dict]) -> None:
    config, _ = rendered
    envs = {name: _env(config["services"][name]) for name in AIRFLOW_COMPONENTS}
    for key in SHARED:
        seen = {name: env.get(key) for name, env in envs.items()}
        assert len(set(seen.values())) == 1 and None not in seen.values(), (key, seen)
    some = next(iter(envs.values()))
    assert (some["AIRFLOW__METRICS__STATSD_HOST"], some["AIRFLOW__METRICS__STATSD_PORT"]) == ("statsd-exporter", "9125")
    assert some["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"  # from airflow/airflow.env
    assert some["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_each_airflow_service_holds_exactly_the_native_grants(rendered: tuple[dict, dict]) -> None:
    """The secret settings of every Airflow service are exactly those of its component's grants in
    stack/components.py, with this file's values; workers hold the broker and nothing else."""
    config, values = rendered
    settings = grant_settings()
    secret_keys = set().union(*settings.values()) | {"AIRFLOW__API_AUTH__JWT_SECRET"}
    for name, grants in SERVICE_GRANTS.items():
        env = _env(config["services"][name])
        held = {k for k in env if k in secret_keys}
        wanted = set().union(*(settings[g] for g in grants))
        # Without the database grant a service gets the password-less URL instead.
        if "metadata-db" not in grants:
            assert env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") == NO_DATABASE_URL, name
            assert env["CONNECTION_CHECK_MAX_COUNT"] == "0", name  # the official entrypoint's DB wait
            held.discard("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
        assert held == wanted, (name, sorted(held ^ wanted))
        leaked = {v for v, value in values.items() if v in secret_names() and value in json_dump(env)}
        allowed = {"metadata-db": {"AIRFLOW_DB_PASSWORD"}, "fernet-key": {"AIRFLOW_FERNET_KEY"},
                   "api-secret-key": {"AIRFLOW_API_SECRET_KEY"}, "ui-secret-key": {"AIRFLOW_UI_SECRET_KEY"},
                   **{f"broker-{u.name}": {u.password_var} for u in stack_grants.REDIS_USERS},
                   "flower-login": {"FLOWER_PASSWORD"}}
        extra = {"POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_OP_PASSWORD", "AIRFLOW_ML_PASSWORD",
                 "AIRFLOW_VIEWER_PASSWORD", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_DB_PASSWORD",
                 "MLFLOW_AUTH_DB_PASSWORD", "POSTGRES_EXPORTER_PASSWORD",
                 # it creates the prediction log's roles
                 "PREDICTIONS_DB_PASSWORD", "PREDICTIONS_READER_PASSWORD"} if name == "airflow-init" else set()
        if name.startswith("airflow-worker-"):
            extra = {"PUSHGATEWAY_PUSH_PASSWORD"}  # the ML steps' push login
        if name == "airflow-worker-maintenance":
            # MLOPS_METADATA_DB_URL for `airflow db clean`, the MLflow login of prune_mlflow_runs
            extra = {"AIRFLOW_DB_PASSWORD", "MLFLOW_MAINTENANCE_PASSWORD"}
        assert leaked <= set().union(*(allowed.get(g, set()) for g in grants)) | extra, (name, sorted(leaked))
    apiserver = _env(config["services"]["airflow-apiserver"])
    assert apiserver["AIRFLOW__CORE__FERNET_KEY"] == values["AIRFLOW_FERNET_KEY"]
    assert apiserver["AIRFLOW__API__SECRET_KEY"] == values["AIRFLOW_API_SECRET_KEY"]
    assert apiserver["AIRFLOW__API_AUTH__JWT_ALGORITHM"] == "EdDSA"
    assert apiserver["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"postgresql+psycopg2://airflow:{values['AIRFLOW_DB_PASSWORD']}@postgres:5432/airflow")
    assert apiserver["AIRFLOW_UI_SECRET_KEY"] == values["AIRFLOW_UI_SECRET_KEY"] != values["AIRFLOW_API_SECRET_KEY"]
    assert apiserver["AIRFLOW__FAB__CONFIG_FILE"] == "/opt/mlops/airflow/webserver_config.py"
    for service, user in (("airflow-scheduler", "scheduler"), ("flower", "flower"), ("airflow-worker-light", "worker")):
        env = _env(config["services"][service])
        password = values[stack_grants.redis_user(user).password_var]
        assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://{user}:{password}@redis:6379/0", service
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == f"redis://{user}:{password}@redis:6379/1", service
    flower = _env(config["services"]["flower"])["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"]
    assert flower == f"flower:{values['FLOWER_PASSWORD']}"
    assert "--expose-prometheus" in _command(config["services"]["mlflow"])


def json_dump(env: dict[str, str]) -> str:
    """One string of an environment's values (for substring checks)."""
    return "\n".join(f"{k}={v}" for k, v in env.items())


def test_jwt_key_volumes_are_mounted_only_where_needed(rendered: tuple[dict, dict]) -> None:
    """The private key only where tokens are signed, the public key set where they are verified."""
    services = rendered[0]["services"]

    def mounting(volume: str) -> dict[str, bool]:
        out = {}
        for name, svc in services.items():
            for vol in svc.get("volumes", []):
                source = vol["source"] if isinstance(vol, dict) else vol.split(":")[0]
                if source == volume:
                    read_only = vol.get("read_only", False) if isinstance(vol, dict) else vol.endswith(":ro")
                    out[name] = read_only
        return out

    assert mounting("airflow-jwt-signing-key") == {"airflow-init": False, "airflow-apiserver": True,
                                                   "airflow-scheduler": True}
    assert mounting("airflow-jwks") == {"airflow-init": False, "airflow-apiserver": True,
                                        "airflow-dag-processor": True, "airflow-triggerer": True}
    init = _command(services["airflow-init"])
    assert 'ensure_key_pair(Path("/opt/airflow/jwt-signing-key/jwt-signing.pem")' in init
    assert 'Path("/opt/airflow/jwks/jwks.json"), "airflow")' in init


def test_workers_and_triggerer_serve_no_logs(rendered: tuple[dict, dict]) -> None:
    """Airflow's log server needs [api] secret_key: nobody runs one; the api-server reads the
    shared airflow-logs volume (mounted on every Airflow component)."""
    services = rendered[0]["services"]
    for name in ("airflow-worker-light", "airflow-worker-heavy", "airflow-triggerer"):
        assert "--skip-serve-logs" in services[name]["command"], name
    for name in AIRFLOW_COMPONENTS:
        targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in services[name]["volumes"]}
        assert "/opt/airflow/logs" in targets, name


def test_redis_users_in_an_acl_file_not_on_a_command_line(rendered: tuple[dict, dict]) -> None:
    """Redis reads its ACL users (stack/grants.py, digests only) from the file logins-config
    writes into a volume only Redis and that one-shot mount."""
    config, values = rendered
    services = config["services"]
    redis = services["redis"]
    script = redis["command"][2]
    assert "aclfile /etc/redis-acl/users.acl" in script and "appendonly yes" in script
    assert "requirepass" not in script
    assert "exec docker-entrypoint.sh redis-server /tmp/redis-conf/redis.conf" in script
    assert not [v for v in values if v.startswith("REDIS_") and v.endswith("_PASSWORD") and values[v] in script]
    assert _mounts(redis)["/etc/redis-acl"] == "redis-acl"
    assert {n for n, svc in services.items() if "redis-acl" in _mounts(svc).values()} == {"redis", "logins-config"}
    init = services["logins-config"]
    assert init["command"][:3] == ["python", "-m", "stack.grants"] and init["working_dir"] == "/opt/mlops"
    assert redis["depends_on"]["logins-config"]["condition"] == "service_completed_successfully"
    health = " ".join(redis["healthcheck"]["test"])
    assert "REDISCLI_AUTH=" in health and " -a " not in health
    for worker in ("airflow-worker-light", "airflow-worker-heavy"):
        test = " ".join(config["services"][worker]["healthcheck"]["test"])
        assert "BROKER_URL=" in test and "--broker" not in test, worker


def test_mlflow_runs_with_logins(rendered: tuple[dict, dict]) -> None:
    config, values = rendered
    mlflow = config["services"]["mlflow"]
    script = _command(mlflow)
    assert "python -m stack.mlflow_server --app-name basic-auth" in script
    assert 'get_template("mlflow_basic_auth.ini.j2")' in script and "0o600" in script
    env = _env(mlflow)
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/tmp/mlflow-auth/basic_auth.ini"
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == values["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert env["MLFLOW_AUTH_DATABASE_URI"].endswith(f"@postgres:5432/{values['MLFLOW_AUTH_DB']}")
    init = config["services"]["mlflow-init"]
    assert init["command"] == ["python", "-m", "stack.mlflow_auth"]
    assert set(MLFLOW_AUTH_VARIABLES) <= set(_env(init)), set(MLFLOW_AUTH_VARIABLES) - set(_env(init))
    assert _env(init)["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    metrics = config["services"]["mlflow-metrics"]
    assert metrics["command"] == ["python", "-m", "stack.mlflow_metrics", "/mlflow-metrics", "0.0.0.0", "5001"]
    assert "--expose-prometheus /mlflow-metrics" in script
    prometheus = yaml.safe_load((REPO / "observability" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "mlflow"]
    assert job["static_configs"] == [{"targets": ["mlflow-metrics:5001"]}] and "basic_auth" not in job


def test_mlflow_gc_holds_mlflows_own_secrets_only(rendered: tuple[dict, dict]) -> None:
    """`mlflow gc` runs beside MLflow with MLflow's database URL and admin login (as the native
    mlflow-gc program), on the schedule and retention of .env; no Airflow secret."""
    config, values = rendered
    gc, mlflow = config["services"]["mlflow-gc"], config["services"]["mlflow"]
    assert gc["command"] == ["python", "-m", "stack.mlflow_gc"]
    env = _env(gc)
    assert env["MLFLOW_BACKEND_STORE_URI"] == _env(mlflow)["MLFLOW_BACKEND_STORE_URI"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == (
        values["MLFLOW_ADMIN_USER"], values["MLFLOW_ADMIN_PASSWORD"])
    assert env["MLFLOW_GC_RETENTION_DAYS"] == values.get("MLFLOW_GC_RETENTION_DAYS", "7")
    assert not [k for k in env if k.startswith("AIRFLOW__")] and "volumes" not in gc
    assert gc["depends_on"] == {"mlflow": {"condition": "service_healthy"}}


def test_prometheus_has_no_lifecycle_api(rendered: tuple[dict, dict]) -> None:
    assert not [a for a in rendered[0]["services"]["prometheus"]["command"] if "lifecycle" in a]


def test_only_the_one_shot_init_runs_as_root(rendered: tuple[dict, dict]) -> None:
    """Everything long-running runs as its image's unprivileged user: the Airflow image's airflow
    (uid 50000), Prometheus' nobody; postgres and redis as their users instead of dropping from root."""
    services = rendered[0]["services"]
    users = {name: str(svc.get("user", "")) for name, svc in services.items()}
    # The one-shots that hand files in fresh volumes to their owners (chown) run as root.
    roots = {"airflow-init", "alertmanager-config", "logins-config"}
    assert {n for n, u in users.items() if u.split(":")[0] in ("0", "root")} == roots
    assert users["postgres"] == "postgres" and users["redis"] == "redis"
    assert {n for n, u in users.items() if u} == roots | {"postgres", "redis"}


def test_secrets_are_required_never_defaulted() -> None:
    text = COMPOSE.read_text()
    names = secret_names()
    assert len(names) >= 10, names
    assert NOT_USED_BY_COMPOSE <= set(names)
    for name in names + REQUIRED_SETTINGS:
        uses = re.findall(r"\$\{" + name + r"(?![A-Z0-9_])(:?[?-]?)", text)
        if name in NOT_USED_BY_COMPOSE:
            assert not uses, f"{name} must not be used by {COMPOSE.name}"
            continue
        assert uses, f"{name} is not used by {COMPOSE.name}"
        assert set(uses) == {":?"}, f"{name} must be required with ${{{name}:?...}}: {uses}"


@pytest.mark.parametrize("missing", ["POSTGRES_PASSWORD", "REDIS_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
                                     "MLFLOW_AUTH_DB", "GRAFANA_ADMIN_PASSWORD"])
def test_missing_secret_stops_rendering(docker_compose: str, tmp_path: Path, missing: str) -> None:
    env_file = tmp_path / ".env"
    write_env(env_file, skip=missing)
    out = compose_config(docker_compose, env_file)
    assert out.returncode != 0
    assert f"{missing} is not set" in out.stderr


def test_every_variable_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M))
    code = "\n".join(ln.split("#", 1)[0] for ln in COMPOSE.read_text().splitlines())
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", code))  # `$${X}` is the container's own
    assert used - documented == set(), f"not in .env.example: {used - documented}"


def test_observability_wiring(rendered: tuple[dict, dict]) -> None:
    services = rendered[0]["services"]

    def mounts(name: str) -> dict[str, str]:
        out = {}
        for vol in services[name]["volumes"]:
            if isinstance(vol, dict):
                out[vol["target"]] = vol["source"]
            else:
                source, target = vol.split(":")[:2]
                out[target] = source
        return out

    statsd = services["statsd-exporter"]
    assert mounts("statsd-exporter")["/etc/statsd/mapping.yml"] == str(REPO / "observability/statsd/mapping.yml")
    assert "--statsd.mapping-config=/etc/statsd/mapping.yml" in statsd["command"]
    assert mounts("prometheus")["/etc/prometheus"] == str(REPO / "observability/prometheus")
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana_env = _env(services["grafana"])
    assert grafana_env["MLOPS_PROMETHEUS_URL"] == "http://prometheus:9090"
    assert mounts("grafana")[grafana_env["MLOPS_GRAFANA_DASHBOARDS"]] == str(REPO / "observability/grafana/dashboards")
    assert mounts("grafana")["/etc/grafana/provisioning"] == str(REPO / "observability/grafana/provisioning")
    buckets = _env(services["flower"])["FLOWER_TASK_RUNTIME_METRIC_BUCKETS"].split(",")
    assert max(float(b) for b in buckets if b != "inf") >= 3600 and buckets[-1] == "inf"


def test_pushgateway_and_alertmanager_wiring(rendered: tuple[dict, dict]) -> None:
    """The workers push to the Pushgateway; Alertmanager reads the config alertmanager-config
    renders (stack/alerting.py) from the template and the ALERT_* variables; neither has an HTTP
    lifecycle or admin API, nor Alertmanager an HA cluster listener."""
    config, values = rendered
    services = config["services"]
    pushing = {name for name, svc in services.items() if "MLOPS_PUSHGATEWAY_URL" in _env(svc)}
    assert pushing == {"airflow-worker-light", "airflow-worker-heavy"}
    assert {_env(services[n])["MLOPS_PUSHGATEWAY_URL"] for n in pushing} == {"http://pushgateway:9091"}
    for name in ("pushgateway", "alertmanager"):
        assert not [f for f in services[name]["command"] if "lifecycle" in f or "admin-api" in f], name
    assert "--cluster.listen-address=" in services["alertmanager"]["command"]
    assert "--persistence.file=/pushgateway/metrics.data" in services["pushgateway"]["command"]
    init = services["alertmanager-config"]
    assert init["command"][:2] == ["python", "/opt/mlops-stack/alerting.py"]
    mounts = _mounts(init)
    assert mounts["/opt/mlops-stack/alerting.py"] == str(REPO / "stack" / "alerting.py")
    assert mounts["/etc/alertmanager-template"] == str(REPO / "observability" / "alertmanager")
    assert init["command"][2] == "/etc/alertmanager-template/alertmanager.yml"
    assert _mounts(services["alertmanager"])["/config"] == mounts["/config"]
    # Basic-auth users (stack/grants.py WEB_USERS) from logins-config; the workers push with their login.
    assert {_env(services[n])["MLOPS_PUSHGATEWAY_USER"] for n in pushing} == {"pusher"}
    assert {_env(services[n])["MLOPS_PUSHGATEWAY_PASSWORD"] for n in pushing} == {values["PUSHGATEWAY_PUSH_PASSWORD"]}
    logins = _mounts(services["logins-config"])
    for name in ("pushgateway", "alertmanager"):
        volume = logins[f"/logins/{name}"]
        assert _mounts(services[name])[f"/etc/{name}-logins"] == volume, name
        assert f"--web.config.file=/etc/{name}-logins/web.yml" in services[name]["command"], name
        assert _mounts(services["prometheus"])[f"/etc/prometheus-logins/{name}"] == volume, name
    prometheus = yaml.safe_load((REPO / "observability" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    for name in ("pushgateway", "alertmanager"):
        assert jobs[name]["basic_auth"] == {"username": "prometheus",
                                            "password_file": f"/etc/prometheus-logins/{name}/prometheus-password"}
    assert prometheus["alerting"]["alertmanagers"][0]["basic_auth"]["password_file"] == (
        "/etc/prometheus-logins/alertmanager/prometheus-password")
    assert "--config.file=" + init["command"][3] in services["alertmanager"]["command"]
    assert services["alertmanager"]["depends_on"]["alertmanager-config"]["condition"] == "service_completed_successfully"
    from stack.alerting import VARIABLES

    assert set(VARIABLES) <= set(_env(init))
    assert _env(init)["ALERT_SMTP_AUTH_PASSWORD"] == values["ALERT_SMTP_AUTH_PASSWORD"]


def test_airflow_init_migrates_then_syncs_rbac_then_fixes_permissions(rendered: tuple[dict, dict]) -> None:
    init = rendered[0]["services"]["airflow-init"]
    script = _command(init)
    steps = [script.index(s) for s in ("ensure_pg_roles(connect, os.environ)", "airflow db migrate",
                                       "python /opt/mlops/airflow/bootstrap.py", "ensure_key_pair(", "chown 50000:0")]
    assert steps == sorted(steps)
    assert str(init["user"]) == "0:0"
    env = _env(init)
    for name in ("AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_OP_PASSWORD", "AIRFLOW_ML_PASSWORD", "AIRFLOW_VIEWER_PASSWORD",
                 "MLFLOW_PIPELINE_USER", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_AUTH_DB"):
        assert env[name], name
    assert (REPO / "airflow" / "bootstrap.py").is_file() and (REPO / "airflow" / "rbac.yaml").is_file()


def test_dockerfile_matches_the_lock() -> None:
    dockerfile = (REPO / "airflow" / "Dockerfile").read_text()
    (base,) = re.findall(r"^ARG AIRFLOW_BASE_IMAGE=(\S+)$", dockerfile, re.M)
    assert base == "apache/airflow:3.3.2-python3.11"
    assert re.findall(r"^FROM\s+(\S+)", dockerfile, re.M) == ["${AIRFLOW_BASE_IMAGE}"]
    version = base.split(":")[1].split("-")[0]
    assert f"apache-airflow=={version}\n" in (REPO / "requirements.lock").read_text()
    assert "-r /tmp/requirements.lock" in dockerfile and "COPY --chown=airflow:0 . /opt/mlops" in dockerfile
    # editable: mlops.config finds configs/ and dvc.yaml next to src/, as in development
    assert "pip install --no-cache-dir --no-deps -e /opt/mlops" in dockerfile
    assert (REPO / "dvc.yaml").is_file() and (REPO / "configs").is_dir() and (REPO / "dags").is_dir()
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".env", ".venv", "data", ".stack", ".git", "tests"} <= ignored


def test_base_image_is_a_build_argument_defaulting_to_the_official_image(rendered: tuple[dict, dict]) -> None:
    """Compose passes ${AIRFLOW_BASE_IMAGE} with the Dockerfile's own default: one upstream base."""
    dockerfile_default = re.search(r"^ARG AIRFLOW_BASE_IMAGE=(\S+)$",
                                   (REPO / "airflow" / "Dockerfile").read_text(), re.M).group(1)
    for name in PROJECT_IMAGE:
        build = rendered[0]["services"][name]["build"]
        assert build["args"] == {"AIRFLOW_BASE_IMAGE": dockerfile_default}, name
        assert build["dockerfile"] == "airflow/Dockerfile"


UPSTREAM = {
    "postgres": "postgres:16-bookworm", "redis": "redis:7.2-bookworm",
    "statsd-exporter": "prom/statsd-exporter:v0.30.0", "prometheus": "prom/prometheus:v2.55.1",
    "pushgateway": "prom/pushgateway:v1.10.0", "alertmanager": "prom/alertmanager:v0.27.0",
    "grafana": "grafana/grafana:11.6.0",
}


def test_images_are_variables_defaulting_to_upstream(docker_compose: str, rendered: tuple[dict, dict],
                                                     tmp_path: Path) -> None:
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    for name, service in raw.items():
        assert re.fullmatch(r"\$\{[A-Z_]+_IMAGE:-[^}]+\}", service["image"]), (name, service["image"])
    services = rendered[0]["services"]
    assert {n: services[n]["image"] for n in UPSTREAM} == UPSTREAM
    env_file = tmp_path / ".env"
    write_env(env_file)
    with env_file.open("a") as out:
        out.write("POSTGRES_IMAGE=local/pg:1\nAIRFLOW_IMAGE=local/af:1\nAIRFLOW_BASE_IMAGE=local/base:1\n")
    out = compose_config(docker_compose, env_file)
    assert out.returncode == 0, out.stderr
    swapped = yaml.safe_load(out.stdout)["services"]
    assert swapped["postgres"]["image"] == "local/pg:1"
    assert {swapped[n]["image"] for n in PROJECT_IMAGE} == {"local/af:1"}
    assert swapped["airflow-apiserver"]["build"]["args"]["AIRFLOW_BASE_IMAGE"] == "local/base:1"


def _published(services: dict) -> dict[str, list[str]]:
    out = {}
    for name, svc in services.items():
        for port in svc.get("ports", []):
            out.setdefault(name, []).append(port if isinstance(port, str) else
                                            f"{port.get('host_ip', '')}:{port['published']}:{port['target']}")
    return out


def test_published_ports_bind_to_localhost_unless_bind_address_says(docker_compose: str, rendered: tuple[dict, dict],
                                                                    tmp_path: Path) -> None:
    published = _published(rendered[0]["services"])
    assert set(published) == {"airflow-apiserver", "flower", "mlflow", "prometheus", "pushgateway", "alertmanager",
                              "grafana", "model-server"}
    assert all(p.startswith("127.0.0.1:") for ports in published.values() for p in ports), published
    env_file = tmp_path / ".env"
    write_env(env_file)
    with env_file.open("a") as out:
        out.write("BIND_ADDRESS=10.1.2.3\n")
    out = compose_config(docker_compose, env_file)
    assert out.returncode == 0, out.stderr
    moved = _published(yaml.safe_load(out.stdout)["services"])
    assert all(p.startswith("10.1.2.3:") for ports in moved.values() for p in ports), moved


def test_test_override_changes_only_what_cannot_run_here(docker_compose: str, tmp_path: Path) -> None:
    """tests/compose/docker-compose.test.yml: the statsd-exporter test double and no Grafana; no
    port, environment, command or dependency of the product changes."""
    override = yaml.safe_load((REPO / "tests" / "compose" / "docker-compose.test.yml").read_text())
    assert set(override) == {"services"}
    services = override["services"]
    assert set(services) == {"statsd-exporter", "grafana"}
    assert services["grafana"] == {"profiles": ["not-available-on-this-machine"]}
    assert set(services["statsd-exporter"]) <= {"image", "entrypoint", "volumes", "healthcheck"}
    assert "statsd_double.py" in " ".join(services["statsd-exporter"]["entrypoint"])
    env_file = tmp_path / ".env"
    write_env(env_file)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    out = subprocess.run([docker_compose, "--project-directory", str(REPO), "--env-file", str(env_file),
                          "-f", str(COMPOSE), "-f", str(REPO / "tests" / "compose" / "docker-compose.test.yml"),
                          "config"], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    double = yaml.safe_load(out.stdout)["services"]["statsd-exporter"]
    # The exporter's own flags and mapping mount stay: the double takes the same command line.
    assert "--statsd.mapping-config=/etc/statsd/mapping.yml" in double["command"]


def _compose_clis() -> list[list[str]]:
    """Every compose implementation on this machine: Debian's docker-compose 1.29 (required) and
    the `docker compose` v2 plugin when the docker CLI has it."""
    clis = [["docker-compose"]]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        clis.append([docker, "compose"])
    return clis


def test_every_installed_compose_cli_accepts_the_file(docker_compose: str, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    write_env(env_file)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    clis = _compose_clis()
    assert shutil.which(clis[0][0]) == docker_compose
    for cli in clis:
        for files in ([COMPOSE], [COMPOSE, REPO / "tests" / "compose" / "docker-compose.test.yml"]):
            args = [a for f in files for a in ("-f", str(f))]
            out = subprocess.run([*cli, "--project-directory", str(REPO), "--env-file", str(env_file), *args,
                                  "config", "--quiet"], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
            assert out.returncode == 0, (cli, files, out.stderr)


@pytest.mark.parametrize("service", ["airflow-init", "mlflow", "redis"])
def test_inline_scripts_parse(rendered: tuple[dict, dict], service: str) -> None:
    """The shell scripts in `command:` parse (`bash -n` / `sh -n`), and so does every Python
    heredoc in them."""
    command = rendered[0]["services"][service]["command"]
    script = command[2].replace("$$", "$")
    out = subprocess.run([command[0], "-n", "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for index, part in enumerate(script.split("<<'PY'\n")[1:]):
        compile(part.split("\nPY\n", 1)[0], f"{service} command, heredoc {index + 1}", "exec")


def test_model_server_holds_only_its_own_secrets(rendered: tuple[dict, dict]) -> None:
    """The prediction service: its token, the prediction log's login and a read-only MLflow login;
    no other secret, no data volume; scraped by Prometheus as job `serving`; the prediction log's
    database and roles are made by airflow-init."""
    config, values = rendered
    svc = config["services"]["model-server"]
    env = _env(svc)
    held = sorted(name for name, value in values.items() if value and any(value in v for v in env.values())
                  and name in secret_names())
    assert held == ["MLFLOW_SERVING_PASSWORD", "PREDICTIONS_DB_PASSWORD", "SERVING_TOKEN"], held
    assert env["MLFLOW_TRACKING_USERNAME"] == values["MLFLOW_SERVING_USER"]
    assert not svc.get("volumes")
    assert "8000/health" in " ".join(svc["healthcheck"]["test"])
    init = _command(config["services"]["airflow-init"])
    assert "ensure_schema" in init and "NOSUPERUSER" in init
    assert {"MLFLOW_SERVING_USER", "MLFLOW_SERVING_PASSWORD"} <= set(_env(config["services"]["mlflow-init"]))
    prom = yaml.safe_load((REPO / "observability" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert jobs["serving"]["static_configs"][0]["targets"] == ["model-server:8000"]
