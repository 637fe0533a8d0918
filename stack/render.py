"""Render every file the stack's programs read: supervisord's configuration (from the Jinja2
template stack/templates/supervisord.conf.j2 and the component table), one environment file per
program, Redis' and MLflow's configurations (templates too) and Prometheus' configuration.
Every file that holds a secret is mode 600 and owned by the one user whose program reads it.
Both AIRFLOW_HOMEs get an airflow.cfg without any secret that keeps a bare `airflow` from falling
back to Airflow's defaults (it points at bin/airflow, stack/airflow_cli.py)."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jinja2
import yaml

from stack import alerting, grants, safefs
from stack.components import (NO_DATABASE_URL, OBS_PROMETHEUS, SECRET_AIRFLOW_KEYS, Component, by_name, components,
                              mlflow_metrics_available, program_env, web_config_file)
from stack.config import CONTROL_USER, LOOPBACK, REPO, VENV_BIN, WORKER_USER, StackConfig
from stack.run import StackError

TEMPLATES = Path(__file__).resolve().parent / "templates"
LAUNCHER = Path(__file__).resolve().parent / "launch.py"
# How often supervisord restarts a program that exits before its `startsecs` before it marks it
# FATAL (`up` then stops at once: stack/ctl.py fail_on_fatal). Linear back-off: 10 tries take ~1 min.
START_RETRIES_VAR, START_RETRIES_DEFAULT = "STACK_START_RETRIES", 10


def write_private(path: Path, text: str, owner: str = "root") -> None:
    """Write a file only `owner` may read, atomically and durably, never through a link another
    user planted (stack/safefs.py)."""
    account = pwd.getpwnam(owner)
    safefs.write_file(path, text, account.pw_uid, account.pw_gid, 0o600)


def _supervisor_value(value: object) -> str:
    """Escape a value for supervisord, which expands %(name)s in its config."""
    return str(value).replace("%", "%%")


def _jinja() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["sv"] = _supervisor_value
    env.filters["shell"] = lambda argv: " ".join(shlex.quote(a) for a in argv)
    # configparser (MLflow's auth config) expands %(name)s; Redis reads double-quoted strings.
    env.filters["ini"] = lambda value: str(value).replace("%", "%%")
    env.filters["redis_str"] = lambda value: '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return env


def env_file(cfg: StackConfig, comp: Component) -> Path:
    """Where the environment of `comp` is rendered."""
    return cfg.env_dir / f"{comp.name}.json"


def render_supervisord(cfg: StackConfig, table: list[Component]) -> str:
    """supervisord's whole configuration: one [program:x] per present component."""
    programs = [c for c in table if c.present]
    groups: dict[str, list[str]] = {}
    for comp in programs:
        if comp.group:
            groups.setdefault(comp.group, []).append(comp.name)
    launcher = f"{shlex.quote(str(VENV_BIN / 'python'))} -I -S {shlex.quote(str(LAUNCHER))}"
    return _jinja().get_template("supervisord.conf.j2").render(
        cfg=cfg, programs=programs, groups=groups, launcher=launcher, start_retries=start_retries(),
        env_files={c.name: shlex.quote(str(env_file(cfg, c))) for c in programs})


def start_retries() -> int:
    """supervisord's `startretries` of every program: ``$STACK_START_RETRIES``, else 10."""
    raw = os.environ.get(START_RETRIES_VAR, "").strip() or str(START_RETRIES_DEFAULT)
    if not raw.isdigit() or int(raw) > 100:
        raise StackError(f"{START_RETRIES_VAR}={raw!r} is not a whole number from 0 to 100")
    return int(raw)


def write_env_files(cfg: StackConfig, table: list[Component]) -> None:
    """One JSON environment per present program, readable only by its owner."""
    for comp in table:
        if comp.present:
            write_private(env_file(cfg, comp), json.dumps(program_env(cfg, comp), indent=1, sort_keys=True) + "\n",
                          comp.user)


# TEST-ONLY switch of a test stack's env file (never in `.env.example`): the path of an alert clock
# file, written by the test tooling (tests/lib/testkit/alert_clock.py): alerts fire and resolve
# within seconds, on the same rules (copies with shortened durations) and routes.
FAST_ALERTS_SWITCH = "MLOPS_TEST_FAST_ALERTS"
_CLOCK_KEYS = {"prometheus": {"scrape_interval", "scrape_timeout", "evaluation_interval"},
               "alertmanager": {"group_wait", "group_interval", "repeat_interval"}}


@dataclass(frozen=True)
class AlertClock:
    """A test stack's alert timings: Prometheus' global intervals, Alertmanager's route intervals
    and the folder of the rule files shortened to them (all from the file the switch names)."""

    prometheus: dict[str, str]
    alertmanager: dict[str, str]
    rules: Path


def alert_clock(cfg: StackConfig) -> AlertClock | None:
    """The alert clock file the test-only switch names, else None (a product stack)."""
    path = cfg.env.get(FAST_ALERTS_SWITCH)
    if not path:
        return None
    try:
        doc = json.loads(Path(path).read_text())
        clock = AlertClock({k: str(v) for k, v in doc["prometheus"].items()},
                           {k: str(v) for k, v in doc["alertmanager"].items()}, Path(doc["rules"]))
        unknown = {part: sorted(set(getattr(clock, part)) - keys) for part, keys in _CLOCK_KEYS.items()}
        if any(unknown.values()) or not clock.rules.is_dir():
            raise ValueError(f"unknown keys {unknown} or no rules folder {clock.rules}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StackError(f"{FAST_ALERTS_SWITCH}={path} in {cfg.env_file}: not an alert clock file of the test "
                         f"tooling (tests/lib/testkit/alert_clock.py): {exc}") from exc
    return clock


def render_prometheus(cfg: StackConfig) -> tuple[dict, str]:
    """Prometheus config for the native stack and where it came from.

    From observability/prometheus/prometheus.yml (written for the compose network) when present:
    compose host:port targets become this stack's addresses and ports, rule files absolute paths,
    and targets of components that do not run here are dropped. Otherwise a minimal config.
    """
    p = cfg.ports
    here = cfg.bind_address
    present = {
        "statsd-exporter:9102": (f"{LOOPBACK}:{p['STATSD_EXPORTER_PORT']}", by_name(cfg)["statsd-exporter"].present),
        "flower:5555": (f"{here}:{p['FLOWER_PORT']}", True),
        "pushgateway:9091": (f"{here}:{p['PUSHGATEWAY_PORT']}", True),
        "alertmanager:9093": (f"{LOOPBACK}:{p['ALERTMANAGER_PORT']}", True),
        # MLflow's metrics are scraped from the stack's exporter (stack/mlflow_metrics.py), no login.
        "mlflow-metrics:5001": (f"{LOOPBACK}:{p['MLFLOW_METRICS_PORT']}", mlflow_metrics_available()),
        "postgres-exporter:9187": (f"{LOOPBACK}:{p['POSTGRES_EXPORTER_PORT']}", True),
        "redis-exporter:9121": (f"{LOOPBACK}:{p['REDIS_EXPORTER_PORT']}", True),
        "process-exporter:9256": (f"{LOOPBACK}:{p['PROCESS_EXPORTER_PORT']}", True),
        "localhost:9090": (f"{here}:{p['PROMETHEUS_PORT']}", True),
        "model-server:8000": (f"{here}:{p['SERVING_PORT']}", True),
        "prometheus:9090": (f"{here}:{p['PROMETHEUS_PORT']}", True),
    }
    source = OBS_PROMETHEUS / "prometheus.yml"
    if source.is_file():
        try:
            doc = yaml.safe_load(source.read_text()) or {}
        except yaml.YAMLError as exc:
            raise StackError(f"{source}: not valid YAML: {exc}") from exc
        origin = str(source)
    else:
        doc = {
            "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
            "rule_files": ["rules/*.yml"],
            "scrape_configs": [
                {"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]},
                {"job_name": "flower", "static_configs": [{"targets": ["flower:5555"]}]},
                {"job_name": "mlflow", "static_configs": [{"targets": ["mlflow-metrics:5001"]}]},
                {"job_name": "statsd-exporter", "static_configs": [{"targets": ["statsd-exporter:9102"]}]},
            ],
        }
        origin = "built-in minimal config (observability/prometheus/prometheus.yml not found)"
    rules: list[str] = []
    for entry in doc.get("rule_files") or []:
        rel = Path(entry)
        # Compose mounts the folder elsewhere: keep the part from "rules/" on.
        parts = rel.parts[rel.parts.index("rules"):] if "rules" in rel.parts else (rel.name,)
        rules.append(str(OBS_PROMETHEUS.joinpath(*parts)))
    doc["rule_files"] = rules

    def native_statics(statics: list[dict]) -> list[dict]:
        out = []
        for static in statics or []:
            targets = []
            for target in static.get("targets") or []:
                native, runs_here = present.get(target, (target, True))
                if runs_here:
                    targets.append(native)
            if targets:
                out.append({**static, "targets": targets})
        return out

    jobs = []
    for job in doc.get("scrape_configs") or []:
        statics = native_statics(job.get("static_configs"))
        if not statics:
            continue
        job = {**job, "static_configs": statics}
        if job.get("basic_auth") and job["job_name"].startswith("flower"):
            job["basic_auth"] = {"username": cfg.env["FLOWER_USER"], "password": cfg.env["FLOWER_PASSWORD"]}
        if job.get("basic_auth") and job["job_name"] in grants.WEB_SERVERS:
            job["basic_auth"] = _prometheus_login(cfg, job["job_name"])
        jobs.append(job)
    doc["scrape_configs"] = jobs
    alerting_doc = doc.get("alerting") or {}
    managers = [{**m, "static_configs": native_statics(m.get("static_configs")),
                 **({"basic_auth": _prometheus_login(cfg, "alertmanager")} if m.get("basic_auth") else {})}
                for m in alerting_doc.get("alertmanagers") or []]
    if managers:
        doc["alerting"] = {**alerting_doc, "alertmanagers": [m for m in managers if m["static_configs"]]}
    clock = alert_clock(cfg)
    if clock is not None:
        doc["global"] = {**(doc.get("global") or {}), **clock.prometheus}
        doc["rule_files"] = [str(cfg.home / "prometheus" / "rules" / "*.yml")]
        origin += f" (TEST stack: alert clock compressed, {cfg.env[FAST_ALERTS_SWITCH]})"
    return doc, origin


def _prometheus_login(cfg: StackConfig, server: str) -> dict[str, str]:
    """Prometheus' basic-auth login on the Pushgateway or Alertmanager (compose reads it from a
    password file; the native config holds it inline, mode 600)."""
    user, password = cfg.web_login(server, "prometheus")
    return {"username": user, "password": password}


def write_fast_rules(cfg: StackConfig, clock: AlertClock) -> None:
    """The clock's rule files (shortened by the test tooling) into $STACK_HOME/prometheus/rules."""
    folder = cfg.home / "prometheus" / "rules"
    account = pwd.getpwnam(CONTROL_USER)
    safefs.make_dir(folder, account.pw_uid, account.pw_gid, 0o700)
    with safefs.directory(folder) as folder_fd:
        safefs.remove_matching(folder_fd, "*.yml")
    for source in sorted(clock.rules.glob("*.yml")):
        write_private(folder / source.name, f"# {source}: TEST alert clock\n" + source.read_text(), CONTROL_USER)


def write_prometheus(cfg: StackConfig) -> str:
    """Render and validate prometheus.yml (promtool); return where it came from."""
    doc, origin = render_prometheus(cfg)
    clock = alert_clock(cfg)
    if clock is not None:
        write_fast_rules(cfg, clock)
    prom_file = cfg.home / "prometheus" / "prometheus.yml"
    write_private(prom_file, "# rendered by stack/render.py from " + origin + "\n" + yaml.safe_dump(doc, sort_keys=False),
                  CONTROL_USER)
    check = subprocess.run(["promtool", "check", "config", str(prom_file)], capture_output=True, text=True)
    if check.returncode != 0:
        raise StackError(f"{prom_file} (from {origin}) is invalid:\n{check.stdout}{check.stderr}")
    return origin


def render_alertmanager(cfg: StackConfig) -> dict:
    """Alertmanager's configuration: the receivers of the env file (stack/alerting.py); on a test
    stack, the compressed clock's grouping and repeat intervals on every route."""
    try:
        doc = alerting.render(alerting.load_template(), cfg.env)
    except alerting.AlertingConfigError as exc:
        raise StackError(str(exc)) from exc
    clock = alert_clock(cfg)
    if clock is not None:
        routes = [doc["route"], *doc["route"].get("routes", [])]
        for route in routes:
            for key, value in clock.alertmanager.items():
                if key in route or route is doc["route"]:
                    route[key] = value
    return doc


def write_alertmanager(cfg: StackConfig) -> str:
    """Render and validate alertmanager.yml (amtool); return a progress line (no secret in it)."""
    doc = render_alertmanager(cfg)
    path = cfg.home / "alertmanager" / "alertmanager.yml"
    origin = str(alerting.TEMPLATE) + (" (TEST stack: alert clock compressed)" if alert_clock(cfg) else "")
    write_private(path, alerting.dump(doc, origin), CONTROL_USER)
    check = subprocess.run(["amtool", "check-config", str(path)], capture_output=True, text=True)
    if check.returncode != 0:
        raise StackError(f"{path} (from {alerting.TEMPLATE} and the ALERT_* variables of {cfg.env_file}) is "
                         f"invalid:\n{check.stdout}{check.stderr}")
    sends = alerting.delivery(doc)
    if not any(sends.values()):
        return f"alertmanager: alerts reach nobody (neither ALERT_WEBHOOK_URL nor ALERT_EMAIL_TO in {cfg.env_file})"
    return "alertmanager receivers: " + "; ".join(f"{name} -> {', '.join(kinds) or 'listed only'}"
                                                   for name, kinds in sends.items())


WRAPPER = REPO / "bin" / "airflow"
DB_URL_VAR = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"


def wrapper_command(cfg: StackConfig) -> str:
    """How to run the Airflow CLI against this stack (bin/airflow, with its env file when that is
    not the default one)."""
    default = cfg.env_file == (REPO / ".env").resolve()
    return shlex.join([str(WRAPPER), *([] if default else ["--env-file", str(cfg.env_file)])])


def airflow_cfg_sections(cfg: StackConfig, home: Path) -> dict[str, dict[str, str]]:
    """The settings every Airflow program of the stack has in its environment, by section and key
    (no secret: SECRET_AIRFLOW_KEYS never appear here)."""
    sections: dict[str, dict[str, str]] = {}
    for var, value in sorted(cfg.airflow_settings(home).items()):
        parts = var.split("__")
        if len(parts) != 3 or parts[0] != "AIRFLOW" or var in SECRET_AIRFLOW_KEYS:
            continue
        if "\n" in value or "\r" in value:
            raise StackError(f"{var} holds a line break: it cannot be written to {home / 'airflow.cfg'}")
        sections.setdefault(parts[1].lower(), {})[parts[2].lower()] = value
    return sections


def refusal_command(cfg: StackConfig, home: Path) -> str:
    """[database] sql_alchemy_conn_cmd of a stack home: with the metadata-DB URL in its environment
    (every program of the stack has one) it repeats it, which only `airflow config list` asks for;
    without (a bare `airflow`) it fails with a message naming the stack's CLI."""
    message = (f"AIRFLOW_HOME={home} belongs to the native stack of {cfg.env_file}: its settings and "
               f"secrets are in the environment of each of its programs, not in airflow.cfg. Run the Airflow CLI "
               f"with {wrapper_command(cfg)} ARGS (or make airflow ARGS=...).")
    script = (f'[ -n "${{{DB_URL_VAR}:-}}" ] && exec printf %s "${DB_URL_VAR}"; '
              f"echo {shlex.quote(message)} >&2; exit 1")
    return shlex.join(["/bin/sh", "-c", script])


def render_airflow_cfg(cfg: StackConfig, home: Path) -> str:
    """airflow.cfg of one of the stack's AIRFLOW_HOMEs: the shared settings and no secret."""
    sections = airflow_cfg_sections(cfg, home)
    sections.setdefault("database", {})
    workers = home == cfg.worker_home
    user = quote(grants.pg_role(cfg.env, cfg.env["POSTGRES_DB"]).name, safe="")
    database = (NO_DATABASE_URL.format(port=cfg.ports["POSTGRES_PORT"]) + " (the workers have no database access)"
                if workers else
                f"postgresql+psycopg2://{user}@127.0.0.1:{cfg.ports['POSTGRES_PORT']}/{cfg.env['POSTGRES_DB']}")
    return render_template(
        "airflow.cfg.j2", cfg=cfg, home=home, sections=sections, database=database,
        who="the Celery workers" if workers else "the control plane (api-server, scheduler, dag-processor, ...)",
        refusal=refusal_command(cfg, home), wrapper=wrapper_command(cfg), cli_user=CONTROL_USER)


def render_redis_conf(cfg: StackConfig) -> str:
    """redis.conf with the ACL users of stack/grants.py."""
    return render_template("redis.conf.j2", cfg=cfg, acl=grants.redis_acl(cfg.env))


def render_template(name: str, **values: object) -> str:
    """One template of stack/templates."""
    return _jinja().get_template(name).render(**values)


def write_all(cfg: StackConfig) -> list[str]:
    """Render every configuration file of the stack; return progress lines for the log."""
    table = components(cfg)
    write_env_files(cfg, table)
    write_private(cfg.supervisord_conf, render_supervisord(cfg, table))
    write_private(cfg.redis_conf, render_redis_conf(cfg), CONTROL_USER)
    for server in grants.WEB_SERVERS:
        write_private(web_config_file(cfg, server), grants.web_config(cfg.env, server), CONTROL_USER)
    write_private(cfg.mlflow_auth_config, render_template(
        "mlflow_basic_auth.ini.j2", cfg=cfg, database_uri=cfg.db_url(cfg.env["MLFLOW_AUTH_DB"])), CONTROL_USER)
    for home, owner in ((cfg.airflow_home, CONTROL_USER), (cfg.worker_home, WORKER_USER)):
        write_private(home / "airflow.cfg", render_airflow_cfg(cfg, home), owner)
    origin = write_prometheus(cfg)
    return [f"prometheus config from {origin}", write_alertmanager(cfg)]

