"""docker-compose.celery.yml and airflow/Dockerfile, validated by Debian's docker-compose (no engine)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.celery.yml"
IMAGE = "mlops-flights-airflow:3.3.2"
SERVICES = {
    "postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler",
    "airflow-dag-processor", "airflow-triggerer", "airflow-worker-light", "airflow-worker-heavy",
    "flower", "mlflow", "statsd-exporter", "prometheus", "pushgateway", "alertmanager-config", "alertmanager",
    "grafana",
}
# One-shot services: they exit 0 once done (no health check, no restart).
ONE_SHOT = {"airflow-init", "alertmanager-config"}
AIRFLOW_COMPONENTS = {
    "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker-light", "airflow-worker-heavy", "flower",
}
SHARED = [
    "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__METRICS__STATSD_HOST", "AIRFLOW__METRICS__STATSD_PORT", "AIRFLOW__METRICS__STATSD_ON",
    "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "MLFLOW_TRACKING_URI",
]


def secret_names() -> list[str]:
    """The secrets of .env.example: variables left empty there, named *PASSWORD/*SECRET*/*KEY."""
    names = []
    for line in (REPO / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z0-9_]+)=\s*$", line)
        if m and re.search(r"PASSWORD|SECRET|KEY", m.group(1)):
            names.append(m.group(1))
    return names


def write_env(path: Path, skip: str | None = None) -> dict[str, str]:
    """A throwaway .env: every secret a fresh random value (except `skip`)."""
    values = {name: secrets.token_urlsafe(16) for name in secret_names() if name != skip}
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
    assert {s for s, v in config["services"].items() if v.get("image") == IMAGE} == AIRFLOW_COMPONENTS | {
        "mlflow", "alertmanager-config"}


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


def test_healthchecks_restart_and_dependencies(rendered: tuple[dict, dict]) -> None:
    services = rendered[0]["services"]
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc.get("restart") in (None, "no")
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


def test_every_airflow_component_shares_secrets_and_statsd(rendered: tuple[dict, dict]) -> None:
    config, values = rendered
    envs = {name: _env(config["services"][name]) for name in AIRFLOW_COMPONENTS}
    for key in SHARED:
        seen = {name: env.get(key) for name, env in envs.items()}
        assert len(set(seen.values())) == 1 and None not in seen.values(), (key, seen)
    some = next(iter(envs.values()))
    assert some["AIRFLOW__CORE__FERNET_KEY"] == values["AIRFLOW_FERNET_KEY"]
    assert some["AIRFLOW__API_AUTH__JWT_SECRET"] == values["AIRFLOW_JWT_SECRET"]
    assert some["AIRFLOW__API__SECRET_KEY"] == values["AIRFLOW_API_SECRET_KEY"]
    assert (some["AIRFLOW__METRICS__STATSD_HOST"], some["AIRFLOW__METRICS__STATSD_PORT"]) == ("statsd-exporter", "9125")
    assert some["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"  # from airflow/airflow.env
    assert some["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert some["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
    assert values["POSTGRES_PASSWORD"] in some["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert some["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "--expose-prometheus" in _command(config["services"]["mlflow"])
    flower = envs["flower"]["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"]
    assert flower == f"flower:{values['FLOWER_PASSWORD']}"


def test_secrets_are_required_never_defaulted() -> None:
    text = COMPOSE.read_text()
    names = secret_names()
    assert len(names) >= 10, names
    for name in names:
        uses = re.findall(r"\$\{" + name + r"(:?[?-]?)", text)
        assert uses, f"{name} is not used by {COMPOSE.name}"
        assert set(uses) == {":?"}, f"{name} must be required with ${{{name}:?...}}: {uses}"


@pytest.mark.parametrize("missing", ["POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "GRAFANA_ADMIN_PASSWORD"])
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
    assert "--config.file=" + init["command"][3] in services["alertmanager"]["command"]
    assert services["alertmanager"]["depends_on"]["alertmanager-config"]["condition"] == "service_completed_successfully"
    from stack.alerting import VARIABLES

    assert set(VARIABLES) <= set(_env(init))
    assert _env(init)["ALERT_SMTP_AUTH_PASSWORD"] == values["ALERT_SMTP_AUTH_PASSWORD"]


def test_airflow_init_migrates_then_syncs_rbac_then_fixes_permissions(rendered: tuple[dict, dict]) -> None:
    init = rendered[0]["services"]["airflow-init"]
    script = _command(init)
    steps = [script.index(s) for s in ("airflow db migrate", "python /opt/mlops/airflow/bootstrap.py", "chown 50000:0")]
    assert steps == sorted(steps)
    assert str(init["user"]) == "0:0"
    env = _env(init)
    for name in ("AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_OP_PASSWORD", "AIRFLOW_ML_PASSWORD", "AIRFLOW_VIEWER_PASSWORD"):
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
    for name in AIRFLOW_COMPONENTS | {"mlflow", "alertmanager-config"}:
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
    assert {swapped[n]["image"] for n in AIRFLOW_COMPONENTS | {"mlflow"}} == {"local/af:1"}
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
                              "grafana"}
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


@pytest.mark.parametrize("service", ["airflow-init", "mlflow"])
def test_inline_scripts_parse(rendered: tuple[dict, dict], service: str) -> None:
    """The bash scripts in `command:` parse (`bash -n`), and so does airflow-init's Python."""
    script = rendered[0]["services"][service]["command"][2].replace("$$", "$")
    out = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    if "<<'PY'" in script:
        compile(script.split("<<'PY'\n", 1)[1].split("\nPY", 1)[0], f"{service} command", "exec")
