"""A worker host: Celery workers on another machine, joining the main host's native stack.

On the main host (its `.env` sets `BIND_ADDRESS` to an address the worker host reaches):

    python -m stack.workerhost export --address 10.0.0.6 --out worker-host.env

writes what a worker host needs and nothing else: the main host's address and ports, the password
of the `worker` Redis user (the broker, as every worker holds it), the Pushgateway's push login,
the API secret key (held by the worker host's log server only, to verify the api-server's signed
log requests; it signs no UI session: docs/security.md), the shared data folder's path and the
non-secret Airflow settings (DAG bundles). No database password, Fernet key, signing key, Redis
admin password or UI session key.
On the worker host (same checkout and `make install`; the data folder mounted at the same path,
see docs/production.md):

    python -m stack.workerhost --env-file worker-host.env up | status | down

runs, under its own supervisord, the workers named in `WORKER_HOST_WORKERS` (`name:queue:
concurrency`, comma-separated; names start with their queue) and the host's task-log server on
its `BIND_ADDRESS`, which its tasks record as their host name (stack/hostname.py): the api-server
reads a running task's log from there. The programs are the main host's (stack/components.py),
with the same users and environments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stack import access, envfile, health, render
from stack.components import Component, Folder, log_server, worker
from stack.config import (CONTROL_USER, PORT_VARS, VENV_BIN, WORKER_USER, StackConfig, Worker, bind_address,
                          env_file_path, load)
from stack.procs import stack_process_list, stack_processes, terminate, wait_gone
from stack.run import StackError, log, run_logged

# What a worker host's env file holds besides the ports (PORT_VARS) and AIRFLOW__* settings.
REQUIRED_VARS = ("STACK_HOME", "MLOPS_DATA_DIR", "BIND_ADDRESS", "CONTROL_PLANE_ADDRESS", "REDIS_WORKER_PASSWORD",
                 "PUSHGATEWAY_PUSH_PASSWORD", "AIRFLOW_API_SECRET_KEY", "MLOPS_MODEL_NAME", "WORKER_HOST_WORKERS")
# Secret Airflow settings never exported (a worker host gets the broker URL from REDIS_WORKER_PASSWORD).
SECRET_PREFIXES = ("AIRFLOW__DATABASE__", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__", "AIRFLOW__API__SECRET_KEY",
                   "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__FLOWER_BASIC_AUTH",
                   "AIRFLOW__FAB__")
UP_TIMEOUT_S = float(os.environ.get("STACK_UP_TIMEOUT", "300"))


def parse_workers(raw: str, env_file: Path) -> list[Worker]:
    """`name:queue:concurrency,...` -> workers; EnvFileError naming the entry otherwise."""
    workers = []
    for entry in (part.strip() for part in raw.split(",") if part.strip()):
        fields = entry.split(":")
        if len(fields) != 3 or not fields[2].isdigit() or int(fields[2]) < 1 or not fields[0].startswith(fields[1]):
            raise envfile.EnvFileError(f"{env_file}: WORKER_HOST_WORKERS entry {entry!r} is not name:queue:concurrency "
                                       f"with a name that starts with its queue (e.g. heavy2:heavy:1)")
        workers.append(Worker(fields[0], fields[1], int(fields[2])))
    if not workers:
        raise envfile.EnvFileError(f"{env_file}: WORKER_HOST_WORKERS names no worker")
    return workers


def export_env(main: StackConfig, address: str, home: Path, workers: str = "heavy2:heavy:1") -> str:
    """The env file of a worker host at `address` joining the stack `main` (text, holds secrets)."""
    if main.bind_address == "127.0.0.1":
        raise StackError(f"{main.env_file}: BIND_ADDRESS is loopback: set it to an address of this host that the "
                         f"worker host reaches, then restart the stack (`make down up`)")
    settings = {k: v for k, v in main.env.items() if k.startswith("AIRFLOW__") and not k.startswith(SECRET_PREFIXES)}
    # The DAG bundles must be the main host's (a worker parses the DAG file of the task it runs).
    settings["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = main.airflow_settings(main.worker_home)[
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"]
    values = {"STACK_HOME": str(home), "MLOPS_DATA_DIR": str(main.data_dir),
              "BIND_ADDRESS": bind_address(address, main.env_file, "--address"),
              "CONTROL_PLANE_ADDRESS": main.bind_address, "REDIS_WORKER_PASSWORD": main.env["REDIS_WORKER_PASSWORD"],
              "PUSHGATEWAY_PUSH_PASSWORD": main.env["PUSHGATEWAY_PUSH_PASSWORD"],
              "AIRFLOW_API_SECRET_KEY": main.env["AIRFLOW_API_SECRET_KEY"],
              "MLOPS_MODEL_NAME": main.env["MLOPS_MODEL_NAME"], "WORKER_HOST_WORKERS": workers,
              "HEAVY_WORKER_STOP_GRACE_S": main.env.get("HEAVY_WORKER_STOP_GRACE_S", ""),
              **{var: str(main.ports[var]) for var in PORT_VARS}, **settings}
    lines = [f"# Worker host joining the stack of {main.env_file} (python -m stack.workerhost export): "
             f"keep it private, it holds the workers' broker and push logins and the log servers' key."]
    lines += [f"{key}={value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def load_worker_host(env_file: Path) -> StackConfig:
    """The settings of a worker host from its env file (see `export_env`)."""
    env = envfile.parse(env_file)
    for name in REQUIRED_VARS:
        if not env.get(name):
            raise envfile.EnvFileError(f"{env_file}: {name} is empty")
    ports = {}
    for name in PORT_VARS:
        raw = env.get(name, "")
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise envfile.EnvFileError(f"{env_file}: {name}={raw!r} is not a TCP/UDP port number")
        ports[name] = int(raw)
    base = env_file.parent
    home = (base / env["STACK_HOME"]).resolve()
    data_dir = Path(env["MLOPS_DATA_DIR"])
    if not data_dir.is_absolute():
        raise envfile.EnvFileError(f"{env_file}: MLOPS_DATA_DIR must be the absolute path the data folder has on "
                                   f"every host, got {data_dir}")
    return StackConfig(env_file, env, home, data_dir, ports, False, parse_workers(env["WORKER_HOST_WORKERS"], env_file),
                       [], bind_address(env["BIND_ADDRESS"], env_file),
                       bind_address(env["CONTROL_PLANE_ADDRESS"], env_file, "CONTROL_PLANE_ADDRESS"))


def components(cfg: StackConfig) -> list[Component]:
    """The programs of a worker host: its log server and its workers."""
    return [log_server(cfg), *(worker(cfg, spec) for spec in cfg.workers)]


def folders(cfg: StackConfig) -> list[Folder]:
    """The worker host's own state folders (the data folder is the shared mount: left as it is)."""
    return [Folder(cfg.home, "root", 0o755), Folder(cfg.run_dir, "root", 0o755), Folder(cfg.env_dir, "root", 0o711),
            Folder(cfg.logs, "root", 0o751), Folder(cfg.task_logs, CONTROL_USER, 0o2770, shared=True),
            Folder(cfg.worker_home, WORKER_USER, 0o700)]


def check_all(cfg: StackConfig) -> list[health.Health]:
    """Supervisor state and health of every program of the worker host."""
    states = health.supervisor_states(cfg) or {}
    probes = health.Probes(cfg)
    table = components(cfg)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: c.health(cfg, probes), table))
    return [health.Health(c.name, c.port_column, (states.get(c.name) or {}).get("statename", "-"), ok, detail)
            for c, (ok, detail) in zip(table, results)]


def _check_data_dir(cfg: StackConfig) -> None:
    if not cfg.data_dir.is_dir():
        raise StackError(f"{cfg.env_file}: MLOPS_DATA_DIR {cfg.data_dir} is not a folder here: mount the main host's "
                         f"data folder at that same path first (docs/production.md)")


def cmd_up(cfg: StackConfig) -> float:
    """Start the worker host's programs and wait until each is healthy; return seconds taken."""
    started = time.monotonic()
    if health.pid_alive(cfg.run_dir / "supervisord.pid"):
        raise StackError(f"the worker host of {cfg.env_file} already runs; stop it with `down` first")
    leftovers = stack_processes(cfg)
    if leftovers:
        raise StackError(f"processes of a previous run of this worker host still live: {leftovers}; run `down`")
    _check_data_dir(cfg)
    line = access.ensure_accounts(cfg.logs / "system-users.log")
    if line:
        log(line)
    for line in access.prepare_folders(folders(cfg)):
        log(line)
    for user in (CONTROL_USER, WORKER_USER):
        granted = access.grant_traversal([user], [*access.code_paths(), cfg.home, cfg.data_dir])
        if granted:
            log(f"granted {user} traversal (ACL, nothing else) of {granted}")
    table = components(cfg)
    render.write_env_files(cfg, table)
    render.write_private(cfg.supervisord_conf, render.render_supervisord(cfg, table))
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    run_logged([str(VENV_BIN / "supervisord"), "-c", str(cfg.supervisord_conf)], cfg.logs / "supervisord-start.log",
               env={**keep, "MLOPS_STACK_HOME": str(cfg.home)}, what="supervisord")
    rpc = health.supervisor(cfg).supervisor
    deadline = started + UP_TIMEOUT_S
    while True:
        try:
            rpc.getState()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise StackError(f"supervisord did not answer; see {cfg.logs / 'supervisord.log'}") from None
            time.sleep(0.2)
    for comp in table:
        rpc.startProcess(comp.program, False)
    hint = (f"The worker host is left as it is for inspection (`--env-file {cfg.env_file} status`); fix the "
            f"cause, then `--env-file {cfg.env_file} down` and `up`.")
    rows = health.poll(cfg, lambda: check_all(cfg), lambda found: all(h.healthy for h in found), deadline, 0.5, hint)
    bad = [h for h in rows if not h.healthy]
    if bad:
        raise StackError(f"worker host not healthy after {UP_TIMEOUT_S:.0f} s: "
                         + ", ".join(f"{h.name} ({h.state}: {h.detail})" for h in bad) + f"; logs in {cfg.logs}")
    took = time.monotonic() - started
    log(f"worker host {cfg.bind_address} healthy {took:.1f} s after `up` "
        f"(workers {', '.join(w.name for w in cfg.workers)}; control plane at {cfg.control_address})")
    return took


def cmd_down(cfg: StackConfig, timeout: float | None = None) -> None:
    """Stop the worker host's supervisord and programs; make sure none of its processes is left
    (waiting by default for the longest stop grace: a heavy worker's training may finish)."""
    if timeout is None:
        timeout = max([90, *(c.stopwait + 60 for c in components(cfg))])
    pid = health.pid_alive(cfg.run_dir / "supervisord.pid")
    if pid:
        try:
            health.supervisor(cfg).supervisor.shutdown()
        except OSError:
            os.kill(pid, 15)
        wait_gone(pid, timeout)
    leftovers = stack_process_list(cfg)
    if leftovers:
        log(f"terminating left-over processes of this worker host: {[p.pid for p in leftovers]}")
        terminate(leftovers)
    left = stack_processes(cfg)
    if left:
        raise StackError(f"processes still running after down: {left}")
    log("worker host stopped; no process of it is left" if pid or leftovers else "worker host not running")


def cmd_status(cfg: StackConfig) -> int:
    """One line per program; 0 when all are healthy."""
    rows = check_all(cfg)
    for h in rows:
        print(f"{h.name:<16} {h.port:<8} {h.state:<9} {'healthy' if h.healthy else 'UNHEALTHY':<9} {h.detail}")
    return 0 if all(h.healthy for h in rows) else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point; errors print one clear message and exit 1."""
    parser = argparse.ArgumentParser(prog="stack.workerhost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-file", type=Path, help="up/down/status: the worker host's env file; "
                        "export: the main host's (default $STACK_ENV_FILE or .env)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    export = sub.add_parser("export", help="on the main host: write a worker host's env file")
    export.add_argument("--address", required=True, help="the worker host's own address (its log server binds it)")
    export.add_argument("--home", type=Path, default=Path("/var/lib/mlops-worker-host"),
                        help="the worker host's state folder (logs, AIRFLOW_HOME)")
    export.add_argument("--workers", default="heavy2:heavy:1", help="name:queue:concurrency,... (default heavy2:heavy:1)")
    export.add_argument("--out", type=Path, required=True)
    for name in ("up", "down", "status"):
        sub.add_parser(name)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "export":
            main_cfg = load(args.env_file.resolve() if args.env_file else env_file_path())
            text = export_env(main_cfg, args.address, args.home, args.workers)
            render.write_private(args.out, text)
            log(f"wrote {args.out} for the worker host {args.address} (mode 600: it holds the broker password)")
            return 0
        if args.env_file is None:
            parser.error("--env-file (the worker host's) is required")
        cfg = load_worker_host(args.env_file.resolve())
        if args.cmd == "up":
            cmd_up(cfg)
            return 0
        if args.cmd == "down":
            cmd_down(cfg)
            return 0
        return cmd_status(cfg)
    except (StackError, envfile.EnvFileError) as exc:
        print(f"stack.workerhost: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
