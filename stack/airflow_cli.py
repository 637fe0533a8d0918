"""The Airflow CLI against a running native stack: `bin/airflow ARGS`, `make airflow ARGS="..."`,
`python -m stack.ctl airflow -- ARGS`.

`airflow ARGS` runs exactly as the stack's scheduler runs: with the environment rendered for it at
`up` ($STACK_HOME/run/env/scheduler.json), started through stack/launch.py as supervisord starts
it, as its user `mlops` (so nothing the CLI writes in the stack's folders is root's), in the
caller's current directory. The scheduler's environment is the one that covers the CLI: the
metadata database (almost every command), the Fernet key (Connections and Variables are stored
encrypted), the Celery broker (`airflow celery ...`) and the JWT signing key; it is also the
environment `up` runs `airflow db migrate` and airflow/bootstrap.py with.
"""

from __future__ import annotations

import grp
import os
import pwd
import sys
from pathlib import Path

from stack import access, health
from stack.components import by_name
from stack.config import CONTROL_USER, VENV_BIN, StackConfig
from stack.render import LAUNCHER, env_file
from stack.run import StackError

CLI_COMPONENT = "scheduler"

# Commands of Airflow 2 guides that Airflow 3 removed: what to use on this stack instead.
REMOVED_COMMANDS = {
    ("tasks", "logs"): "Airflow 3 has no `airflow tasks logs`: read a task's log with `python -m stack.ctl "
                       "task-logs DAG_ID TASK_ID [RUN_ID]` (make task-logs DAG=... TASK=... [RUN=...]), which "
                       "uses the REST API's log endpoint and names the log file for `tail -f`",
    ("webserver",): "Airflow 3 has no `airflow webserver`: the stack's api-server serves the UI and the REST "
                    "API (`make status` shows its port)",
    ("db", "init"): "Airflow 3 has no `airflow db init`: `make up` runs `airflow db migrate`; check the "
                    "database with `airflow db check`",
}


def removed_command_hint(args: list[str]) -> str | None:
    """What to use instead when `args` start with a command Airflow 3 removed."""
    words = [a for a in args if not a.startswith("-")]
    for prefix, hint in REMOVED_COMMANDS.items():
        if tuple(words[:len(prefix)]) == prefix:
            return hint
    return None


def cli_env_file(cfg: StackConfig) -> Path:
    """The rendered environment the CLI runs with (the scheduler's)."""
    return env_file(cfg, by_name(cfg)[CLI_COMPONENT])


def check_ready(cfg: StackConfig) -> Path:
    """Refuse, naming the fix, unless the stack is installed and running and this process may
    run as its control-plane user; return the environment file to run with."""
    if not (VENV_BIN / "airflow").is_file():
        raise StackError(f"Airflow is not installed ({VENV_BIN / 'airflow'} is missing): run `make install`")
    missing = access.missing_accounts()
    if missing:
        raise StackError(f"{', '.join(missing)} missing: run `make install` (scripts/system-users.sh) as root")
    me = pwd.getpwuid(os.geteuid()).pw_name
    if me not in ("root", CONTROL_USER):
        raise StackError(f"the stack's Airflow CLI runs as {CONTROL_USER} with the scheduler's environment, which "
                         f"only root and {CONTROL_USER} may read: run it with sudo (you are {me})")
    if not health.pid_alive(cfg.run_dir / "supervisord.pid"):
        raise StackError(f"the native stack of {cfg.env_file} is not running (STACK_HOME={cfg.home}): start it "
                         f"with `make up` (another env file: `python -m stack.ctl --env-file FILE up`)")
    path = cli_env_file(cfg)
    if not path.is_file():
        raise StackError(f"{path} is missing: the running stack was started by an older version; restart it "
                         f"(`make down`, `make up`)")
    return path


def airflow_argv(environment: Path, args: list[str]) -> list[str]:
    """`airflow ARGS` started through stack/launch.py with the environment in `environment`."""
    return [str(VENV_BIN / "python"), "-I", "-S", str(LAUNCHER), str(environment), str(VENV_BIN / "airflow"), *args]


def _become_control_user() -> None:
    """Drop root for the control-plane user, its groups and its programs' umask."""
    if os.geteuid() != 0:
        return
    account = pwd.getpwnam(CONTROL_USER)
    os.setgroups([g.gr_gid for g in grp.getgrall() if CONTROL_USER in g.gr_mem])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    os.umask(0o027)


def run(cfg: StackConfig, args: list[str]) -> int:
    """Replace this process with `airflow ARGS` as the stack's scheduler would run it; return an
    exit status only when refusing (2: a command Airflow 3 removed)."""
    hint = removed_command_hint(args)
    if hint:
        print(f"airflow: {hint}", file=sys.stderr)
        return 2
    environment = check_ready(cfg)
    argv = airflow_argv(environment, args)
    sys.stdout.flush()
    sys.stderr.flush()
    _become_control_user()
    os.execv(argv[0], argv)
    return 1  # not reached
