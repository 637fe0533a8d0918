"""Health probes of a running native stack (the checks themselves; stack/components.py says which
component uses which) and the supervisord XML-RPC client."""

from __future__ import annotations

import os
import socket
import threading
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests
from supervisor.xmlrpc import SupervisorTransport

from stack.config import StackConfig

ABSENT_NOTE = "absent (binary not on PATH): runs in the compose stack (docker-compose.celery.yml)"


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
