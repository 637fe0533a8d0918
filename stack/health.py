"""Health probes of a running native stack (the checks themselves; stack/components.py says which
component uses which) and the supervisord XML-RPC client."""

from __future__ import annotations

import os
import socket
import threading
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import requests
from supervisor.xmlrpc import SupervisorTransport
from tenacity import Retrying, retry_if_result, wait_fixed

from stack.config import StackConfig
from stack.run import StackError

ABSENT_NOTE = "absent (binary not on PATH): runs in the compose stack (docker-compose.celery.yml)"
# Lines of a FATAL program's log that `up` shows.
FATAL_LOG_LINES = 15
T = TypeVar("T")


@dataclass
class Health:
    """One line of `make status`."""

    name: str
    port: str
    state: str
    healthy: bool
    detail: str = ""


class Probes:
    """Results that several components' checks share (the api-server's health document, one Celery
    ping for every worker), computed once per round even when checks run in parallel threads."""

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._results: dict[str, object] = {}

    def shared(self, key: str, probe: Callable[[StackConfig], object]) -> object:
        """`probe(cfg)`, run at most once per round under `key`."""
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._results:
                self._results[key] = probe(self.cfg)
        return self._results[key]


def supervisor(cfg: StackConfig) -> xmlrpc.client.ServerProxy:
    """XML-RPC proxy to this stack's supervisord over its Unix socket."""
    transport = SupervisorTransport(None, None, f"unix://{cfg.run_dir / 'supervisor.sock'}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def supervisor_states(cfg: StackConfig) -> dict[str, dict] | None:
    """Process info by program name, or None when supervisord does not answer."""
    try:
        infos = supervisor(cfg).supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Fault):
        return None
    return {info["name"]: info for info in infos}


# What `up` says to do once it stopped at a FATAL program (the native stack's commands).
INSPECT_HINT = ("The stack is left as it is for inspection (`make status`, `make logs C=<component>`); fix the "
                "cause, then `make down` and `make up`.")


def fail_on_fatal(cfg: StackConfig, hint: str = INSPECT_HINT) -> None:
    """Raise StackError when supervisord gave up on a program (FATAL: it exited at once on every
    start it was allowed), naming each, its log and the log's last lines, then `hint`: `up`
    cannot succeed then."""
    fatal = sorted((info for info in (supervisor_states(cfg) or {}).values() if info["statename"] == "FATAL"),
                   key=lambda i: i["name"])
    if not fatal:
        return
    parts = []
    for info in fatal:
        full = f"{info['group']}:{info['name']}"
        try:
            text = supervisor(cfg).supervisor.tailProcessStdoutLog(full, 0, 8000)[0]
        except (OSError, xmlrpc.client.Fault) as exc:
            text = f"(its log could not be read: {exc})"
        tail = "\n".join(f"    {line}" for line in text.splitlines()[-FATAL_LOG_LINES:])
        parts.append(f"{full} is FATAL ({info['description'] or info['spawnerr']}); its log (stdout and stderr): "
                     f"{info['stdout_logfile']}; its last lines:\n{tail}")
    raise StackError("supervisord gave up on " + ", ".join(i["name"] for i in fatal) + ": `up` stops waiting.\n"
                     + "\n".join(parts) + "\n" + hint)


def poll(cfg: StackConfig, probe: Callable[[], T], done: Callable[[T], bool], deadline: float,
         interval: float, hint: str = INSPECT_HINT) -> T:
    """`probe()` every `interval` s until `done(result)` or the monotonic `deadline`; return the last
    result. Raises at once (fail_on_fatal, with `hint`) when a program of the stack is FATAL."""

    def attempt() -> T:
        fail_on_fatal(cfg, hint)
        return probe()

    return Retrying(stop=lambda _: time.monotonic() > deadline, wait=wait_fixed(interval),
                    retry=retry_if_result(lambda result: not done(result)),
                    retry_error_callback=lambda state: state.outcome.result())(attempt)


def _get(url: str, **kwargs) -> requests.Response | None:
    """GET with a short timeout; None when nothing answers."""
    try:
        return requests.get(url, timeout=kwargs.pop("timeout", 10), **kwargs)
    except requests.RequestException:
        return None


def check_postgres(cfg: StackConfig, superuser: bool = False) -> tuple[bool, str]:
    """`SELECT version()` as the metadata database's owner role (as the superuser while `up`
    waits for the cluster, before the roles exist)."""
    import psycopg2

    from stack import grants

    if superuser:
        user, password, dbname = cfg.env["POSTGRES_USER"], cfg.env["POSTGRES_PASSWORD"], "postgres"
    else:
        role = grants.pg_role(cfg.env, cfg.env["POSTGRES_DB"])
        user, password, dbname = role.name, cfg.env[role.password_var], role.owns
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=cfg.ports["POSTGRES_PORT"], user=user, password=password,
                                dbname=dbname, connect_timeout=2)
    except psycopg2.Error as exc:
        return False, str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
    with conn:
        with conn.cursor() as cur:
            cur.execute("SELECT version()")
            version = cur.fetchone()[0].split(" on ")[0]
    conn.close()
    return True, f"{version}, login as {user}"


def check_redis(cfg: StackConfig) -> tuple[bool, str]:
    """PING, with the password."""
    import redis

    try:
        ok = redis.Redis.from_url(cfg.broker_url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return False, str(exc)
    return bool(ok), "PONG"


def check_http(url: str, auth: tuple[str, str] | None = None) -> tuple[bool, str]:
    """HTTP 200 from `url`."""
    resp = _get(url, auth=auth)
    if resp is None:
        return False, f"no answer from {url}"
    return resp.status_code == 200, f"HTTP {resp.status_code}"


def airflow_health(cfg: StackConfig) -> dict | None:
    """The api-server's /api/v2/monitor/health document, or None."""
    resp = _get(f"{cfg.api_url}/api/v2/monitor/health")
    if resp is None or resp.status_code != 200:
        return None
    return resp.json()


def celery_ping(cfg: StackConfig, timeout: float = 1.5) -> set[str]:
    """Names (light1, ...) of the workers that answered a Celery ping."""
    from celery import Celery

    app = Celery(broker=cfg.broker_url)
    try:
        replies = app.control.ping(timeout=timeout)
    except Exception:  # broker down: every worker counts as unhealthy
        replies = []
    finally:
        app.close()
    return {name.split("@", 1)[0] for reply in replies for name in reply}


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pidfile: Path) -> int | None:
    """The pid in `pidfile` when that process still runs."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid
