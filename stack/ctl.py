"""`python -m stack.ctl up|down|status|logs|env|airflow|task-logs`: the native stack under supervisord.

The env file is `.env` at the repository root, or `$STACK_ENV_FILE` (the tests use their own).
The components are declared in stack/components.py; this module orders their start and stop.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stack import access, airflow_cli, envfile, health, keys, mlflow_auth, postgres, render, safefs, task_logs
from stack.components import Component, by_name, check_all, components, folders, mlflow_metrics_available, program_env, reach
from stack.config import CONTROL_USER, LOOPBACK, REPO, VENV_BIN, StackConfig, load, postgres_bin
from stack.procs import stack_process_list, stack_processes, terminate, wait_gone
from stack.run import StackError, log, run_logged

# 60 s on an idle 2-core machine; allow for a busy one (CI runs other suites before this one).
UP_TIMEOUT_S = float(os.environ.get("STACK_UP_TIMEOUT", "300"))

__all__ = ["StackError", "cmd_down", "cmd_up", "component_env", "is_running", "main", "mlflow_metrics_available",
           "stack_processes"]


def is_running(cfg: StackConfig) -> int | None:
    """Pid of this stack's supervisord, if it runs."""
    return health.pid_alive(cfg.run_dir / "supervisord.pid")


def component_env(cfg: StackConfig, name: str = "scheduler") -> dict[str, str]:
    """The exact environment the stack gives component `name` (for CLI calls made like it)."""
    return program_env(cfg, by_name(cfg)[name])


def check_ports(cfg: StackConfig) -> None:
    """Refuse to start when another process already holds one of the stack's TCP ports."""
    busy = [f"{lst.var}={lst.port} ({comp.name})" for comp in components(cfg) if comp.present
            for lst in comp.listeners if lst.proto == "tcp" and health.port_in_use(lst.port, lst.host(cfg))]
    if busy:
        raise StackError(f"ports already in use by another process: {', '.join(busy)}; "
                         f"stop that process or change the port in {cfg.env_file}")


def wait_healthy(cfg: StackConfig, started: float, timeout: float = UP_TIMEOUT_S) -> list[health.Health]:
    """Poll every health check until all pass; raise naming the unhealthy ones (or a FATAL program)."""
    result = health.poll(cfg, lambda: check_all(cfg), lambda rows: all(h.healthy for h in rows),
                         started + timeout, 0.5)
    bad = [h for h in result if not h.healthy]
    if bad:
        names = ", ".join(f"{h.name} ({h.state}: {h.detail})" for h in bad)
        raise StackError(f"not healthy after {timeout:.0f} s: {names}; logs in {cfg.logs}")
    return result


def start_phase(cfg: StackConfig, phase: str) -> list[str]:
    """Start every present component of `phase` (without waiting); return their names."""
    rpc = health.supervisor(cfg)
    names = []
    for comp in components(cfg):
        if comp.present and comp.phase == phase:
            rpc.supervisor.startProcess(comp.program, False)
            names.append(comp.name)
    return names


def _preflight(cfg: StackConfig) -> Path:
    """System binaries present, nothing of a previous run alive, ports free; return Postgres' bin."""
    pg_bin = postgres_bin()
    missing = [b for b in ("redis-server", "prometheus", "promtool", "prometheus-pushgateway", "prometheus-alertmanager",
                           "amtool", "runuser") if not shutil.which(b)]
    if pg_bin is None:
        missing.append("postgresql (/usr/lib/postgresql/*/bin)")
    if missing:
        raise StackError(f"missing system packages: {', '.join(missing)}; run `make system-deps`")
    leftovers = stack_processes(cfg)
    if leftovers:
        raise StackError(f"processes of a previous run of this stack still live: {leftovers}; run `make down`")
    check_ports(cfg)
    return pg_bin


def _prepare(cfg: StackConfig) -> None:
    """Accounts, folders and their owners, traversal of the code, the JWT key pair."""
    line = access.ensure_accounts(cfg.logs / "system-users.log")
    if line:
        log(line)
    for line in access.prepare_folders(folders(cfg)):
        log(line)
    # Multiprocess metric files of a previous run (rmtree works on descriptors and never follows a link).
    shutil.rmtree(cfg.home / "mlflow" / "metrics", ignore_errors=True)
    for user, paths in reach(cfg).items():
        granted = access.grant_traversal([user], [*access.code_paths(), *paths])
        if granted:
            log(f"granted {user} traversal (ACL, nothing else) of {granted}")
    if keys.ensure_key_pair(cfg.jwt_private_key, cfg.jwks_file, CONTROL_USER):
        log(f"generated the JWT signing key {cfg.jwt_private_key} (EdDSA; api-server and scheduler only)")


def _supervisord_env(cfg: StackConfig) -> dict[str, str]:
    """supervisord's own environment: no secret (each program gets its own from stack/launch.py)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    return {**keep, "MLOPS_STACK_HOME": str(cfg.home)}


def bootstrap(cfg: StackConfig) -> None:
    """`up`'s airflow/bootstrap.py step: users, roles, pools and the `mlflow_default` connection
    (restored whole), as the control-plane user with the scheduler's environment."""
    run_logged([str(VENV_BIN / "python"), str(REPO / "airflow" / "bootstrap.py")], cfg.logs / "bootstrap.log",
               env={**component_env(cfg, "scheduler"), **cfg.bootstrap_env()}, what="airflow/bootstrap.py",
               user=CONTROL_USER)


def _wait_mlflow(cfg: StackConfig, started: float) -> None:
    answered = health.poll(cfg, lambda: health.check_http(f"{cfg.mlflow_url}/health")[0], bool,
                           started + UP_TIMEOUT_S, 0.3)
    if not answered:
        raise StackError(f"MLflow did not answer within {UP_TIMEOUT_S:.0f} s; see {cfg.logs / 'mlflow.log'}")


def _wait_api_server(cfg: StackConfig, started: float) -> None:
    doc = health.poll(cfg, lambda: health.airflow_health(cfg), lambda found: found is not None,
                      started + UP_TIMEOUT_S, 0.5)
    if doc is None:
        raise StackError(f"the api-server did not answer within {UP_TIMEOUT_S:.0f} s; "
                         f"see {cfg.logs / 'api-server.log'}")


def _log_added(cfg: StackConfig) -> None:
    log(f"added to {cfg.env_file} from .env.example (secrets generated): {', '.join(cfg.added_vars)}")


def cmd_up(cfg: StackConfig) -> float:
    """Start the whole stack and wait until every component is healthy; return seconds taken."""
    started = time.monotonic()
    if cfg.added_vars:
        _log_added(cfg)
    if is_running(cfg):
        log(f"already running (supervisord pid {is_running(cfg)}); checking health")
        wait_healthy(cfg, started)
        print_status(cfg)
        return time.monotonic() - started
    pg_bin = _preflight(cfg)
    _prepare(cfg)
    postgres.init_cluster(cfg, pg_bin)
    for line in render.write_all(cfg):
        log(line)

    run_logged([str(VENV_BIN / "supervisord"), "-c", str(cfg.supervisord_conf)], cfg.logs / "supervisord-start.log",
               env=_supervisord_env(cfg), what="supervisord")
    postgres.wait_ready(cfg)
    for line in postgres.ensure_roles(cfg):
        log(line)
    for line in postgres.ensure_predictions(cfg):
        log(f"prediction log: created {line}")
    start_phase(cfg, "mlflow")
    log(f"postgres, redis, prometheus, mlflow started ({time.monotonic() - started:.1f} s); migrating the Airflow database")
    # The CLI calls run as the control-plane user with the scheduler's environment.
    env = component_env(cfg, "scheduler")
    run_logged([str(VENV_BIN / "airflow"), "db", "migrate"], cfg.logs / "airflow-db-migrate.log", env=env,
               what="airflow db migrate", user=CONTROL_USER)
    bootstrap(cfg)
    log(postgres.ensure_exporter_role(cfg))
    _wait_mlflow(cfg, started)
    for line in mlflow_auth.ensure_accounts(cfg.mlflow_url, cfg.env, str(cfg.env_file)):
        log(line)
    log(f"database migrated, Airflow users, roles, pools and connection synced, MLflow logins set "
        f"({time.monotonic() - started:.1f} s); starting Airflow")
    start_phase(cfg, "airflow")
    _wait_api_server(cfg, started)
    start_phase(cfg, "scheduler")
    wait_healthy(cfg, started)
    took = time.monotonic() - started
    (cfg.run_dir / "last_up.json").write_text(json.dumps({"up_s": round(took, 2), "at": time.time()}))
    log(f"all components healthy {took:.1f} s after `up`")
    print_status(cfg)
    return took


def _stop_workers_first(cfg: StackConfig) -> None:
    """Stop the Celery workers before the control plane, all at once, each within its stop grace:
    a running task reports its end through the api-server, so a heavy worker's training that
    finishes during the warm shutdown must still find it (supervisord's shutdown signals every
    program at once). Stopped together, `down` waits for the longest grace, not their sum."""
    from concurrent.futures import ThreadPoolExecutor

    def stop(comp: Component) -> None:
        import xmlrpc.client

        rpc = health.supervisor(cfg).supervisor  # a proxy per thread: one is not thread-safe
        try:
            if rpc.getProcessInfo(comp.program)["statename"] in ("RUNNING", "STARTING"):
                log(f"stopping {comp.name} (it may finish its running task: up to {comp.stopwait} s)")
                rpc.stopProcess(comp.program, True)
        except (OSError, xmlrpc.client.Fault) as exc:
            log(f"stopping {comp.name}: {exc} (supervisord's shutdown stops it)")

    workers = [c for c in components(cfg) if c.present and "worker" in c.name]
    with ThreadPoolExecutor(max_workers=max(1, len(workers))) as pool:
        list(pool.map(stop, workers))


def cmd_down(cfg: StackConfig, timeout: float | None = None) -> None:
    """Stop everything through supervisord, then make sure no process of this stack is left.
    supervisord gives each program its stop grace (a heavy worker's running training may finish):
    by default `down` waits for the longest of them, plus a minute."""
    if timeout is None:
        timeout = max([90, *(c.stopwait + 60 for c in components(cfg) if c.present)])
    pid = is_running(cfg)
    if pid:
        _stop_workers_first(cfg)
        log(f"stopping supervisord (pid {pid}) and every component")
        try:
            health.supervisor(cfg).supervisor.shutdown()
        except OSError:
            os.kill(pid, signal.SIGTERM)
        wait_gone(pid, timeout)
    leftovers = stack_process_list(cfg)
    if leftovers:
        log(f"terminating left-over processes of this stack: {[p.pid for p in leftovers]}")
        terminate(leftovers)
    left = stack_processes(cfg)
    if left:
        raise StackError(f"processes still running after down: {left}")
    log("stopped; no process of this stack is left" if pid or leftovers else "not running")


def print_status(cfg: StackConfig) -> bool:
    """Print one line per component (port, supervisor state, health); True when all are healthy."""
    rows = check_all(cfg)
    print(f"{'COMPONENT':<16} {'PORT':<18} {'PROCESS':<9} {'HEALTH':<9} DETAIL")
    for h in rows:
        mark = "n/a" if h.state == "ABSENT" else ("healthy" if h.healthy else "UNHEALTHY")
        print(f"{h.name:<16} {h.port:<18} {h.state:<9} {mark:<9} {h.detail}")
    metrics = (f"on, for Prometheus without login at http://{LOOPBACK}:{cfg.ports['MLFLOW_METRICS_PORT']}/metrics"
               if mlflow_metrics_available() else
               "off: prometheus-flask-exporter not installed (mlflow --expose-prometheus would crash)")
    print(f"MLflow /metrics: {metrics}")
    print(f"statsd: every Airflow component sends to udp {cfg.control_address}:{cfg.ports['STATSD_PORT']}")
    print(f"Airflow UI {cfg.api_url}  Flower {cfg.flower_url}  MLflow {cfg.mlflow_url}  "
          f"Prometheus {cfg.prometheus_url}  Pushgateway {cfg.pushgateway_url}  Alertmanager {cfg.alertmanager_url}  "
          f"Predictions {cfg.serving_url}/predict (token SERVING_TOKEN)")
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


@dataclass(frozen=True)
class Command:
    """A sub-command: its help, extra arguments and handler (returns the exit status)."""

    help: str
    run: Callable[[StackConfig, argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None


def _logs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("component", nargs="?")
    parser.add_argument("-f", "--follow", action="store_true")
    parser.add_argument("-n", "--lines", type=int, default=20)


def _airflow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the airflow command line (after --)")


def _airflow(cfg: StackConfig, args: argparse.Namespace) -> int:
    words = args.args[1:] if args.args[:1] == ["--"] else args.args
    return airflow_cli.run(cfg, words)


def _task_logs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dag_id")
    parser.add_argument("task_id")
    parser.add_argument("run_id", nargs="?", help="default: the DAG's newest run")
    parser.add_argument("--try", dest="try_number", type=int, help="default: the task's latest try")
    parser.add_argument("--map-index", type=int, default=-1, help="the index of a mapped task instance")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing until the task ends")
    parser.add_argument("--path", action="store_true", help="print only the log file's path (for tail -f)")


def _task_logs(cfg: StackConfig, args: argparse.Namespace) -> int:
    return task_logs.show(cfg, args.dag_id, args.task_id, args.run_id, args.try_number, args.map_index,
                          args.follow, args.path)


def _up(cfg: StackConfig, args: argparse.Namespace) -> int:
    cmd_up(cfg)
    return 0


def _down(cfg: StackConfig, args: argparse.Namespace) -> int:
    cmd_down(cfg)
    return 0


def _env(cfg: StackConfig, args: argparse.Namespace) -> int:
    print(cfg.env_file)
    return 0


COMMANDS: dict[str, Command] = {
    "up": Command("start every component and wait until all are healthy", _up),
    "down": Command("stop every component; check that no process is left", _down),
    "status": Command("one line per component: port, process state, health", lambda cfg, a: cmd_status(cfg)),
    "logs": Command("tail the logs (one component's with COMPONENT)",
                    lambda cfg, a: cmd_logs(cfg, a.component, a.follow, a.lines), _logs_arguments),
    "env": Command("create the env file if missing and print its path", _env),
    "airflow": Command("run the airflow CLI with the scheduler's environment, as its user (bin/airflow)",
                       _airflow, _airflow_arguments),
    "task-logs": Command("a task's log through the REST API (Airflow 3 has no `airflow tasks logs`)",
                         _task_logs, _task_logs_arguments),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the sub-command and run it; errors print one clear message, exit 1."""
    parser = argparse.ArgumentParser(prog="stack", description=__doc__)
    parser.add_argument("--env-file", type=Path, help="default: $STACK_ENV_FILE or .env")
    parser.add_argument("--bench-bundle", action="store_true", help="also load benchmarks/dags (benchmark only)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, command in COMMANDS.items():
        command.arguments(sub.add_parser(name, help=command.help))
    args = parser.parse_args(argv)
    try:
        cfg = load(args.env_file.resolve() if args.env_file else None, bench_bundle=args.bench_bundle)
        if cfg.added_vars and args.cmd != "up":
            _log_added(cfg)
        return COMMANDS[args.cmd].run(cfg, args)
    except PermissionError as exc:
        # e.g. the env file (root's, mode 600) read by another user: `bin/airflow` without sudo.
        print(f"stack: error: {exc}: run it as root (sudo)", file=sys.stderr)
        return 1
    except (StackError, envfile.EnvFileError, safefs.UnsafePathError) as exc:
        print(f"stack: error: {exc}", file=sys.stderr)
        if args.cmd == "up" and isinstance(exc, (StackError, safefs.UnsafePathError)):
            print("stack: what did start keeps running: see `make status`, stop it with `make down`",
                  file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
