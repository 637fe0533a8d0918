"""`python -m stack.ctl up|down|status|logs`: the native stack under supervisord.

The env file is `.env` at the repository root, or `$STACK_ENV_FILE` (the tests use their own).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pwd
import shutil
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import yaml

from stack import envfile, health
from stack.config import REPO, VENV_BIN, StackConfig, load, optional_binary, postgres_bin

# 60 s on an idle 2-core machine; allow for a busy one (CI runs other suites before this one).
UP_TIMEOUT_S = float(os.environ.get("STACK_UP_TIMEOUT", "300"))
OBS_PROMETHEUS = REPO / "observability" / "prometheus"
STATSD_MAPPING = REPO / "observability" / "statsd" / "mapping.yml"
GRAFANA_PROVISIONING = REPO / "observability" / "grafana" / "provisioning"


class StackError(Exception):
    """A stack operation failed; the message says what and where to look."""


def log(msg: str) -> None:
    """Progress line on stderr-free stdout, flushed at once (make shows it live)."""
    print(f"[stack] {msg}", flush=True)


# ---------------------------------------------------------------------------- rendering


def mlflow_metrics_available() -> bool:
    """MLflow's --expose-prometheus needs prometheus_flask_exporter, which mlflow does not depend on."""
    return importlib.util.find_spec("prometheus_flask_exporter") is not None


def _supervisor_value(value: str) -> str:
    """Escape a value for supervisord, which expands %(name)s in its config."""
    return value.replace("%", "%%")


def _program(cfg: StackConfig, name: str, command: str, env: dict[str, str] | None = None,
             priority: int = 40, stopwait: int = 20) -> str:
    """One [program:x] section of an Airflow-side component (started by `up` after migrations)."""
    lines = [
        f"[program:{name}]",
        f"command={command}",
        f"priority={priority}",
        "autostart=false",
        "autorestart=true",
        "startsecs=5",
        "startretries=10",
        "stopasgroup=true",
        "killasgroup=true",
        f"stopwaitsecs={stopwait}",
        f"stdout_logfile={cfg.logs}/{name}.log",
        "redirect_stderr=true",
    ]
    if env:
        lines.append("environment=" + ",".join(f'{k}="{_supervisor_value(v)}"' for k, v in env.items()))
    return "\n".join(lines) + "\n"


def render_supervisord(cfg: StackConfig, pg_bin: Path) -> str:
    """The supervisord config of this stack, from stack/supervisord.conf.tmpl."""
    airflow = VENV_BIN / "airflow"
    sections: list[str] = []
    programs: list[str] = []
    for name, cmd in (("api-server", f"{airflow} api-server"), ("scheduler", f"{VENV_BIN / 'python'} -m mlops_airflow.scheduler"),
                      ("dag-processor", f"{airflow} dag-processor"), ("triggerer", f"{airflow} triggerer")):
        # uvicorn waits for idle keep-alive connections on SIGTERM: do not let `down` wait 20 s.
        sections.append(_program(cfg, name, cmd, stopwait=5 if name == "api-server" else 20))
        programs.append(name)
    for w in cfg.workers:
        cmd = (f"{airflow} celery worker --celery-hostname {w.name}@%%h --queues {w.queue} "
               f"--concurrency {w.concurrency} --without-gossip --without-mingle")
        if w.log_port is None:
            cmd += " --skip-serve-logs"
        sections.append(_program(cfg, f"worker-{w.name}", cmd, stopwait=30))
        programs.append(f"worker-{w.name}")
    sections.append(_program(cfg, "flower", f"{airflow} celery flower", priority=50))
    programs.append("flower")

    optional: list[str] = []
    statsd_bin = optional_binary("statsd_exporter", "statsd-exporter")
    if statsd_bin:
        p = cfg.ports
        cmd = (f"{statsd_bin} --statsd.listen-udp=127.0.0.1:{p['STATSD_PORT']} "
               f"--statsd.listen-tcp=127.0.0.1:{p['STATSD_PORT']} "
               f"--web.listen-address=127.0.0.1:{p['STATSD_EXPORTER_PORT']} "
               f"--statsd.mapping-config={STATSD_MAPPING}")
        optional.append(_program(cfg, "statsd-exporter", cmd, priority=20).replace("autostart=false", "autostart=true"))
    grafana_bin = optional_binary("grafana", "grafana-server")
    if grafana_bin:
        sub = " server" if Path(grafana_bin).name == "grafana" else ""
        env = {
            "GF_SERVER_HTTP_ADDR": "127.0.0.1",
            "GF_SERVER_HTTP_PORT": str(cfg.ports["GRAFANA_PORT"]),
            "GF_PATHS_DATA": str(cfg.home / "grafana"),
            "GF_PATHS_LOGS": str(cfg.logs),
            "GF_PATHS_PROVISIONING": str(GRAFANA_PROVISIONING),
            "GF_SECURITY_ADMIN_USER": cfg.env.get("GRAFANA_ADMIN_USER", "admin"),
            "GF_SECURITY_ADMIN_PASSWORD": cfg.env.get("GRAFANA_ADMIN_PASSWORD", ""),
        }
        optional.append(_program(cfg, "grafana", f"{grafana_bin}{sub} --homepath /usr/share/grafana", env=env,
                                 priority=60).replace("autostart=false", "autostart=true"))

    mlflow_extra = f"--expose-prometheus {cfg.run_dir / 'mlflow-metrics'}" if mlflow_metrics_available() else ""
    values = {
        "logs": str(cfg.logs),
        "run": str(cfg.run_dir),
        "home": str(cfg.home),
        "pgdata": str(cfg.pgdata),
        "pg_bin": str(pg_bin),
        "venv": str(VENV_BIN),
        "mlflow_db_url": cfg.db_url(cfg.env["MLFLOW_DB"]),
        "mlflow_extra": mlflow_extra,
        "airflow_programs": ",".join(programs),
        "airflow_sections": "\n".join(sections),
        "optional_sections": "\n".join(optional),
        **{k: str(v) for k, v in cfg.ports.items()},
    }
    values = {k: v if k in ("airflow_sections", "optional_sections") else _supervisor_value(v)
              for k, v in values.items()}
    template = string.Template((REPO / "stack" / "supervisord.conf.tmpl").read_text())
    return template.substitute(values)


def render_prometheus(cfg: StackConfig) -> tuple[dict, str]:
    """Prometheus config for the native stack and where it came from.

    From observability/prometheus/prometheus.yml (written for the compose network) when present:
    compose host:port targets become 127.0.0.1 with this stack's ports, rule files absolute paths,
    and targets of components that do not run here are dropped. Otherwise a minimal config.
    """
    p = cfg.ports
    present = {
        "statsd-exporter:9102": (f"127.0.0.1:{p['STATSD_EXPORTER_PORT']}",
                                 optional_binary("statsd_exporter", "statsd-exporter") is not None),
        "flower:5555": (f"127.0.0.1:{p['FLOWER_PORT']}", True),
        "mlflow:5000": (f"127.0.0.1:{p['MLFLOW_PORT']}", mlflow_metrics_available()),
        "localhost:9090": (f"127.0.0.1:{p['PROMETHEUS_PORT']}", True),
        "prometheus:9090": (f"127.0.0.1:{p['PROMETHEUS_PORT']}", True),
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
                {"job_name": "mlflow", "static_configs": [{"targets": ["mlflow:5000"]}]},
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
    jobs = []
    for job in doc.get("scrape_configs") or []:
        statics = []
        for static in job.get("static_configs") or []:
            targets = []
            for target in static.get("targets") or []:
                native, runs_here = present.get(target, (target, True))
                if runs_here:
                    targets.append(native)
            if targets:
                statics.append({**static, "targets": targets})
        if not statics:
            continue
        job = {**job, "static_configs": statics}
        if job.get("basic_auth") and job["job_name"].startswith("flower"):
            job["basic_auth"] = {"username": cfg.env["FLOWER_USER"], "password": cfg.env["FLOWER_PASSWORD"]}
        jobs.append(job)
    doc["scrape_configs"] = jobs
    return doc, origin


def write_configs(cfg: StackConfig, pg_bin: Path) -> None:
    """Render supervisord and Prometheus configs into STACK_HOME and validate the latter."""
    _write_private(cfg.supervisord_conf, render_supervisord(cfg, pg_bin))
    doc, origin = render_prometheus(cfg)
    prom_file = cfg.home / "prometheus" / "prometheus.yml"
    _write_private(prom_file, "# rendered by stack/ctl.py from " + origin + "\n" + yaml.safe_dump(doc, sort_keys=False))
    check = subprocess.run(["promtool", "check", "config", str(prom_file)], capture_output=True, text=True)
    if check.returncode != 0:
        raise StackError(f"{prom_file} (from {origin}) is invalid:\n{check.stdout}{check.stderr}")
    log(f"prometheus config from {origin}")


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


# ---------------------------------------------------------------------------- postgres


def _run(cmd: list[str], logfile: Path, env: dict[str, str] | None = None, what: str = "") -> None:
    """Run `cmd`, appending its output to `logfile`; on failure raise with the log's tail."""
    with logfile.open("a") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if proc.returncode != 0:
        tail = "\n".join(logfile.read_text().splitlines()[-25:])
        raise StackError(f"{what or cmd[0]} failed (exit {proc.returncode}); see {logfile}:\n{tail}")


def init_postgres(cfg: StackConfig, pg_bin: Path) -> None:
    """initdb the private cluster once, as the `postgres` user, with password auth over TCP."""
    if (cfg.pgdata / "PG_VERSION").exists():
        return
    pg_user = pwd.getpwnam("postgres")
    probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(cfg.home)])
    if probe.returncode != 0:
        raise StackError(f"the postgres user cannot reach {cfg.home}: make it and its parents "
                         "traversable (chmod o+x) or choose another STACK_HOME")
    cfg.pgdata.mkdir(mode=0o700)
    os.chown(cfg.pgdata, pg_user.pw_uid, pg_user.pw_gid)
    pwfile = cfg.run_dir / "initdb.pw"
    _write_private(pwfile, cfg.env["POSTGRES_PASSWORD"] + "\n")
    os.chown(pwfile, pg_user.pw_uid, pg_user.pw_gid)
    try:
        _run(["runuser", "-u", "postgres", "--", str(pg_bin / "initdb"), "-D", str(cfg.pgdata),
              "-U", cfg.env["POSTGRES_USER"], f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
              "--auth-local=peer", "-E", "UTF8", "--no-locale"],
             cfg.logs / "initdb.log", what="initdb")
    finally:
        pwfile.unlink(missing_ok=True)


def wait_postgres(cfg: StackConfig, timeout: float = 30) -> None:
    """Wait until the private Postgres accepts logins."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok, _ = health.check_postgres(cfg)
        if ok:
            return
        time.sleep(0.2)
    raise StackError(f"postgres did not accept connections on port {cfg.ports['POSTGRES_PORT']} "
                     f"within {timeout:.0f} s; see {cfg.logs / 'postgres.log'}")


def ensure_databases(cfg: StackConfig) -> None:
    """Create the Airflow and MLflow databases when missing."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=cfg.ports["POSTGRES_PORT"], user=cfg.env["POSTGRES_USER"],
                            password=cfg.env["POSTGRES_PASSWORD"], dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in (cfg.env["POSTGRES_DB"], cfg.env["MLFLOW_DB"]):
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
                log(f"created database {name}")
    conn.close()


# ---------------------------------------------------------------------------- commands


def stack_processes(cfg: StackConfig) -> list[int]:
    """Pids of live processes carrying this stack's MLOPS_STACK_HOME marker, and their descendants
    (Postgres backends overwrite their environment with the process title)."""
    marker = f"MLOPS_STACK_HOME={cfg.home}".encode()
    found: set[int] = set()
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if marker in environ.split(b"\0"):
            found.add(pid)
    grew = True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return sorted(found)


def is_running(cfg: StackConfig) -> int | None:
    """Pid of this stack's supervisord, if it runs."""
    return health.pid_alive(cfg.run_dir / "supervisord.pid")


def check_ports(cfg: StackConfig) -> None:
    """Refuse to start when another process already holds one of the stack's TCP ports."""
    names = ["POSTGRES_PORT", "REDIS_PORT", "PROMETHEUS_PORT", "MLFLOW_PORT", "AIRFLOW_API_PORT", "FLOWER_PORT"]
    busy = [f"{n}={cfg.ports[n]}" for n in names if health.port_in_use(cfg.ports[n])]
    busy += [f"worker {w.name} log server {w.log_port}" for w in cfg.workers
             if w.log_port is not None and health.port_in_use(w.log_port)]
    if busy:
        raise StackError(f"ports already in use by another process: {', '.join(busy)}; "
                         f"stop that process or change the port in {cfg.env_file}")


def wait_healthy(cfg: StackConfig, started: float, timeout: float = UP_TIMEOUT_S) -> list[health.Health]:
    """Poll every health check until all pass; raise naming the unhealthy ones."""
    deadline = started + timeout
    while True:
        result = health.check_all(cfg)
        bad = [h for h in result if not h.healthy]
        if not bad:
            return result
        if time.monotonic() > deadline:
            names = ", ".join(f"{h.name} ({h.state}: {h.detail})" for h in bad)
            raise StackError(f"not healthy after {timeout:.0f} s: {names}; logs in {cfg.logs}")
        time.sleep(0.5)


def component_env(cfg: StackConfig) -> dict[str, str]:
    """Environment of supervisord and so of every component: ours plus this stack's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "MLFLOW_"))}
    # Without .pyc files (uv installs none) every component would compile Airflow from source at
    # each start: 8 processes x ~10 CPU-s. Let them write bytecode once.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**env, **cfg.airflow_env()}


def cmd_up(cfg: StackConfig) -> float:
    """Start the whole stack and wait until every component is healthy; return seconds taken."""
    started = time.monotonic()
    if is_running(cfg):
        log(f"already running (supervisord pid {is_running(cfg)}); checking health")
        wait_healthy(cfg, started)
        print_status(cfg)
        return time.monotonic() - started
    pg_bin = postgres_bin()
    missing = [b for b in ("redis-server", "prometheus", "promtool", "runuser") if not shutil.which(b)]
    if pg_bin is None:
        missing.append("postgresql (/usr/lib/postgresql/*/bin)")
    if missing:
        raise StackError(f"missing system packages: {', '.join(missing)}; run `make system-deps`")
    leftovers = stack_processes(cfg)
    if leftovers:
        raise StackError(f"processes of a previous run of this stack still live: {leftovers}; run `make down`")
    check_ports(cfg)
    for sub in ("logs", "logs/airflow", "run", "redis", "prometheus/data", "mlflow/artifacts", "airflow"):
        (cfg.home / sub).mkdir(parents=True, exist_ok=True)
    cfg.home.chmod(0o755)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    metrics_dir = cfg.run_dir / "mlflow-metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # multiprocess metric files of a previous run
    init_postgres(cfg, pg_bin)
    write_configs(cfg, pg_bin)

    env = component_env(cfg)
    _run([str(VENV_BIN / "supervisord"), "-c", str(cfg.supervisord_conf)], cfg.logs / "supervisord-start.log",
         env=env, what="supervisord")
    wait_postgres(cfg)
    ensure_databases(cfg)
    rpc = health.supervisor(cfg)
    rpc.supervisor.startProcess("mlflow", False)
    log(f"postgres, redis, prometheus, mlflow started ({time.monotonic() - started:.1f} s); migrating the Airflow database")
    _run([str(VENV_BIN / "airflow"), "db", "migrate"], cfg.logs / "airflow-db-migrate.log", env=env,
         what="airflow db migrate")
    _run([str(VENV_BIN / "python"), str(REPO / "airflow" / "bootstrap.py")], cfg.logs / "bootstrap.log",
         env={**env, **cfg.rbac_env()}, what="airflow/bootstrap.py")
    log(f"database migrated, users and roles synced ({time.monotonic() - started:.1f} s); starting Airflow")
    # The scheduler waits for the api-server: workers run every task through its Execution API,
    # and a task queued before it answers fails its first try.
    programs = [name for name, info in (health.supervisor_states(cfg) or {}).items() if info["group"] == "airflow"]
    for name in programs:
        if name != "scheduler":
            rpc.supervisor.startProcess(f"airflow:{name}", False)
    deadline = started + UP_TIMEOUT_S
    while health.airflow_health(cfg) is None:
        if time.monotonic() > deadline:
            raise StackError(f"the api-server did not answer within {UP_TIMEOUT_S:.0f} s; "
                             f"see {cfg.logs / 'api-server.log'}")
        time.sleep(0.5)
    rpc.supervisor.startProcess("airflow:scheduler", False)
    wait_healthy(cfg, started)
    took = time.monotonic() - started
    (cfg.run_dir / "last_up.json").write_text(json.dumps({"up_s": round(took, 2), "at": time.time()}))
    log(f"all components healthy {took:.1f} s after `up`")
    print_status(cfg)
    return took


def cmd_down(cfg: StackConfig, timeout: float = 90) -> None:
    """Stop everything through supervisord, then make sure no process of this stack is left."""
    pid = is_running(cfg)
    if pid:
        log(f"stopping supervisord (pid {pid}) and every component")
        try:
            health.supervisor(cfg).supervisor.shutdown()
        except OSError:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while health.pid_alive(cfg.run_dir / "supervisord.pid") and time.monotonic() < deadline:
            time.sleep(0.3)
    leftovers = stack_processes(cfg)
    if leftovers:
        log(f"terminating left-over processes of this stack: {leftovers}")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in leftovers:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + 10
            while time.monotonic() < end and stack_processes(cfg):
                time.sleep(0.2)
            leftovers = stack_processes(cfg)
            if not leftovers:
                break
    if stack_processes(cfg):
        raise StackError(f"processes still running after down: {stack_processes(cfg)}")
    log("stopped; no process of this stack is left" if pid or leftovers else "not running")


def print_status(cfg: StackConfig) -> bool:
    """Print one line per component (port, supervisor state, health); True when all are healthy."""
    rows = health.check_all(cfg)
    print(f"{'COMPONENT':<16} {'PORT':<18} {'PROCESS':<9} {'HEALTH':<9} DETAIL")
    for h in rows:
        mark = "n/a" if h.state == "ABSENT" else ("healthy" if h.healthy else "UNHEALTHY")
        print(f"{h.name:<16} {h.port:<18} {h.state:<9} {mark:<9} {h.detail}")
    metrics = ("on" if mlflow_metrics_available() else
               "off: prometheus-flask-exporter not installed (mlflow --expose-prometheus would crash)")
    print(f"MLflow /metrics: {metrics}")
    print(f"statsd: every Airflow component sends to udp 127.0.0.1:{cfg.ports['STATSD_PORT']}")
    print(f"Airflow UI {cfg.api_url}  Flower {cfg.flower_url}  MLflow {cfg.mlflow_url}  "
          f"Prometheus {cfg.prometheus_url}")
    print(f"logins and passwords: {cfg.env_file}; logs: {cfg.logs}")
    return all(h.healthy for h in rows)


def cmd_status(cfg: StackConfig) -> int:
    """`make status`: 0 when all healthy or cleanly stopped, 1 when running but unhealthy."""
    if not is_running(cfg):
        print(f"native stack not running (STACK_HOME={cfg.home}); start it with `make up`")
        left = stack_processes(cfg)
        if left:
            print(f"but processes of this stack are still alive: {left} (run `make down`)")
            return 1
        return 0
    return 0 if print_status(cfg) else 1


def cmd_logs(cfg: StackConfig, component: str | None, follow: bool, lines: int) -> int:
    """Show the tail of every log (or one component's), optionally following."""
    files = sorted(cfg.logs.glob("*.log"))
    if component:
        files = [f for f in files if f.stem == component or f.stem == f"worker-{component}"]
        if not files:
            names = ", ".join(sorted(f.stem for f in cfg.logs.glob("*.log")))
            print(f"no log named {component!r} in {cfg.logs}; have: {names}", file=sys.stderr)
            return 2
    if not files:
        print(f"no logs yet in {cfg.logs}")
        return 0
    cmd = ["tail", "-n", str(lines)] + (["-F"] if follow else []) + [str(f) for f in files]
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the sub-command and run it; errors print one clear message, exit 1."""
    parser = argparse.ArgumentParser(prog="stack", description=__doc__)
    parser.add_argument("--env-file", type=Path, help="default: $STACK_ENV_FILE or .env")
    parser.add_argument("--bench-bundle", action="store_true", help="also load benchmarks/dags (benchmark only)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up")
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("env", help="create the env file if missing and print its path")
    logs_p = sub.add_parser("logs")
    logs_p.add_argument("component", nargs="?")
    logs_p.add_argument("-f", "--follow", action="store_true")
    logs_p.add_argument("-n", "--lines", type=int, default=20)
    args = parser.parse_args(argv)
    try:
        cfg = load(args.env_file.resolve() if args.env_file else None, bench_bundle=args.bench_bundle)
        if args.cmd == "up":
            cmd_up(cfg)
        elif args.cmd == "down":
            cmd_down(cfg)
        elif args.cmd == "status":
            return cmd_status(cfg)
        elif args.cmd == "logs":
            return cmd_logs(cfg, args.component, args.follow, args.lines)
        elif args.cmd == "env":
            print(cfg.env_file)
    except (StackError, envfile.EnvFileError) as exc:
        print(f"stack: error: {exc}", file=sys.stderr)
        if args.cmd == "up" and isinstance(exc, StackError):
            print("stack: what did start keeps running: see `make status`, stop it with `make down`",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
