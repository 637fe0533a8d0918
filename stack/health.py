"""Health checks of every component of a running native stack (used by `make status` and `up`)."""

from __future__ import annotations

import socket
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from supervisor.xmlrpc import SupervisorTransport

from stack.config import StackConfig, optional_binary

ABSENT_NOTE = "absent (binary not on PATH): runs in the compose stack (docker-compose.celery.yml)"


@dataclass
class Health:
    """One line of `make status`."""

    name: str
    port: str
    state: str
    healthy: bool
    detail: str = ""


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


def check_postgres(cfg: StackConfig) -> tuple[bool, str]:
    """`SELECT 1` on the Airflow database."""
    import psycopg2

    try:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=cfg.ports["POSTGRES_PORT"],
            user=cfg.env["POSTGRES_USER"],
            password=cfg.env["POSTGRES_PASSWORD"],
            dbname="postgres",
            connect_timeout=2,
        )
    except psycopg2.Error as exc:
        return False, str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
    with conn:
        with conn.cursor() as cur:
            cur.execute("SELECT version()")
            version = cur.fetchone()[0].split(" on ")[0]
    conn.close()
    return True, version


def check_redis(cfg: StackConfig) -> tuple[bool, str]:
    """PING."""
    import redis

    try:
        ok = redis.Redis(host="127.0.0.1", port=cfg.ports["REDIS_PORT"], socket_timeout=2).ping()
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


def celery_ping(cfg: StackConfig, timeout: float = 1.5) -> dict[str, bool]:
    """Worker name (light1, ...) -> answered a Celery ping."""
    from celery import Celery

    app = Celery(broker=f"redis://127.0.0.1:{cfg.ports['REDIS_PORT']}/0")
    try:
        replies = app.control.ping(timeout=timeout)
    except Exception:  # broker down: every worker counts as unhealthy
        replies = []
    finally:
        app.close()
    answered = {name.split("@", 1)[0] for reply in replies for name in reply}
    return {w.name: w.name in answered for w in cfg.workers}


def check_all(cfg: StackConfig) -> list[Health]:
    """Supervisor state and health of every component, in start order."""
    states = supervisor_states(cfg) or {}
    p = cfg.ports
    flower_auth = (cfg.env["FLOWER_USER"], cfg.env["FLOWER_PASSWORD"])
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {
            "postgres": pool.submit(check_postgres, cfg),
            "redis": pool.submit(check_redis, cfg),
            "prometheus": pool.submit(check_http, f"{cfg.prometheus_url}/-/ready"),
            "mlflow": pool.submit(check_http, f"{cfg.mlflow_url}/health"),
            "flower": pool.submit(check_http, f"{cfg.flower_url}/api/workers", flower_auth),
            "airflow": pool.submit(airflow_health, cfg),
            "workers": pool.submit(celery_ping, cfg),
        }
        results = {name: f.result() for name, f in futures.items()}

    def state(program: str) -> str:
        info = states.get(program)
        return info["statename"] if info else "-"

    out: list[Health] = []
    for name, port_var in (("postgres", "POSTGRES_PORT"), ("redis", "REDIS_PORT"),
                           ("prometheus", "PROMETHEUS_PORT"), ("mlflow", "MLFLOW_PORT")):
        ok, detail = results[name]
        out.append(Health(name, str(p[port_var]), state(name), ok, detail))
    af = results["airflow"]
    out.append(Health("api-server", str(p["AIRFLOW_API_PORT"]), state("api-server"), af is not None,
                      "monitor/health 200" if af else "no answer"))
    for program, key in (("scheduler", "scheduler"), ("dag-processor", "dag_processor"), ("triggerer", "triggerer")):
        status = (af or {}).get(key, {}).get("status") if af else None
        port = str(p["AIRFLOW_LOG_SERVER_PORT"] + 3) if program == "triggerer" else "-"
        out.append(Health(program, port, state(program), status == "healthy", f"heartbeat {status or 'unknown'}"))
    for worker in cfg.workers:
        ok = results["workers"].get(worker.name, False)
        port = "-" if worker.log_port is None else str(worker.log_port)
        out.append(Health(f"worker-{worker.name}", port, state(f"worker-{worker.name}"), ok,
                          f"queue {worker.queue} x{worker.concurrency}, celery ping {'ok' if ok else 'no reply'}"))
    ok, detail = results["flower"]
    out.append(Health("flower", str(p["FLOWER_PORT"]), state("flower"), ok, detail + " (basic auth)"))
    if optional_binary("statsd_exporter", "statsd-exporter"):
        ok, detail = check_http(f"http://127.0.0.1:{p['STATSD_EXPORTER_PORT']}/metrics")
        out.append(Health("statsd-exporter", f"{p['STATSD_EXPORTER_PORT']} (udp {p['STATSD_PORT']})",
                          state("statsd-exporter"), ok, detail))
    else:
        out.append(Health("statsd-exporter", "-", "ABSENT", True, ABSENT_NOTE))
    if optional_binary("grafana", "grafana-server"):
        ok, detail = check_http(f"http://127.0.0.1:{p['GRAFANA_PORT']}/api/health")
        out.append(Health("grafana", str(p["GRAFANA_PORT"]), state("grafana"), ok, detail))
    else:
        out.append(Health("grafana", "-", "ABSENT", True, ABSENT_NOTE))
    return out


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
        import os

        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid
