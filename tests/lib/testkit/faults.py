"""Fault injection on a running native stack and what the fault tests and benchmark observe.

Injection goes through supervisord (the stack's process manager): SIGKILL of a program's whole
process tree (`kill_tree`, e.g. a Celery worker with its pool and task processes), stop and start
(`stop`, `start`, `restart`). Observation goes through the public interfaces: the Airflow REST API
(every try of every task instance of a run, `tries`), MLflow's REST API (model versions, runs
left RUNNING, the champion: `registry`) and the watermark file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psutil
import requests

from stack import health
from stack.api import Airflow
from stack.config import StackConfig

TERMINAL = {"success", "failed"}


@dataclass(frozen=True)
class Fault:
    """One injected fault: what, when (epoch seconds) and on which processes."""

    name: str
    at: float
    pids: tuple[int, ...] = ()


def program_tree(cfg: StackConfig, program: str) -> list[psutil.Process]:
    """The process supervisord runs as `program` (e.g. `airflow:worker-heavy1`) and all its descendants."""
    pid = health.supervisor(cfg).supervisor.getProcessInfo(program)["pid"]
    if not pid:
        raise RuntimeError(f"{program} does not run")
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def kill_tree(cfg: StackConfig, program: str, name: str = "") -> Fault:
    """SIGKILL `program` and every descendant at once (supervisord restarts the program)."""
    procs = program_tree(cfg, program)
    return _kill(procs, name or f"SIGKILL {program}")


def kill_host(cfg: StackConfig, name: str = "") -> Fault:
    """SIGKILL a worker host's supervisord and every process under it at once (the host died:
    nothing restarts its programs)."""
    pid = health.pid_alive(cfg.run_dir / "supervisord.pid")
    if pid is None:
        raise RuntimeError(f"no supervisord runs for {cfg.home}")
    root = psutil.Process(pid)
    return _kill([root, *root.children(recursive=True)], name or f"SIGKILL every process of {cfg.home}")


def _kill(procs: list[psutil.Process], name: str) -> Fault:
    at = time.time()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    return Fault(name, at, tuple(p.pid for p in procs))


def stop(cfg: StackConfig, program: str) -> Fault:
    """Stop `program` through supervisord (its stop signal, then SIGKILL after its grace time)."""
    at = time.time()
    health.supervisor(cfg).supervisor.stopProcess(program)
    return Fault(f"stop {program}", at)


def start(cfg: StackConfig, program: str) -> None:
    """Start `program` through supervisord (without waiting for it to be healthy)."""
    health.supervisor(cfg).supervisor.startProcess(program, False)


def outage(cfg: StackConfig, program: str, seconds: float) -> Fault:
    """Stop `program`, leave it down `seconds`, start it again."""
    fault = stop(cfg, program)
    time.sleep(seconds)
    start(cfg, program)
    return Fault(f"{program} down {seconds:.0f} s", fault.at)


def restart(cfg: StackConfig, program: str) -> Fault:
    """Stop then start `program`, as an operator's `supervisorctl restart` does."""
    fault = stop(cfg, program)
    start(cfg, program)
    return Fault(f"restart {program}", fault.at)


def wait_for(check, what: str, timeout: float, poll: float = 0.5) -> Any:
    """Poll `check()` until it returns something truthy; raise naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(poll)


def healthy(cfg: StackConfig, names: set[str]) -> bool:
    """True when the named components of the main stack all pass their health checks."""
    from stack.components import check_all

    return all(h.healthy for h in check_all(cfg) if h.name in names)


def ts(value: str | None) -> float | None:
    """An API timestamp as epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def tries(api: Airflow, dag_id: str, run_id: str) -> list[dict]:
    """Every try of every task instance of a run (earlier tries and the current one), oldest first,
    with `start`/`end` as epoch seconds."""
    out = []
    for ti in api.task_instances(dag_id, run_id):
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
        path += f"/{ti['map_index']}/tries" if ti["map_index"] >= 0 else "/tries"
        for item in api.get(path)["task_instances"]:
            out.append({**item, "start": ts(item.get("start_date")), "end": ts(item.get("end_date"))})
    return sorted(out, key=lambda t: (t["start"] or float("inf"), t["task_id"], t["map_index"]))


def task(api: Airflow, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict | None:
    """The current try of one task instance."""
    return next((t for t in api.task_instances(dag_id, run_id)
                 if t["task_id"] == task_id and t["map_index"] == map_index), None)


def wait_task(api: Airflow, dag_id: str, run_id: str, task_id: str, states: set[str], map_index: int = -1,
              timeout: float = 600, poll: float = 0.3) -> dict:
    """Wait until the task instance is in one of `states`; return it (the error names its last state)."""
    seen: dict = {}

    def check():
        found = task(api, dag_id, run_id, task_id, map_index)
        seen["state"] = found["state"] if found else "absent"
        return found if found and found["state"] in states else None

    try:
        return wait_for(check, f"{dag_id} {run_id} {task_id}[{map_index}] in {sorted(states)}", timeout, poll)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc} (last state: {seen.get('state')})") from None


def wait_run(api: Airflow, dag_id: str, run_id: str, timeout: float = 900) -> dict:
    """Wait until the DAG run ended; return it. The API failing meanwhile (a 500 while PostgreSQL
    restarts, no answer while the api-server does) is polled over, not taken for the run's end."""
    def check() -> dict | None:
        try:
            run = api.run(dag_id, run_id)
        except requests.RequestException:
            return None
        return run if run["state"] in TERMINAL else None

    return wait_for(check, f"{dag_id} {run_id} ended", timeout, poll=1.0)


def first_start_after(found: list[dict], at: float) -> dict | None:
    """The first try (of any task instance) that started after `at`: the retry of a task the fault
    killed, or the first task the stack started once it got over the fault."""
    later = [t for t in found if t["start"] is not None and t["start"] > at]
    return min(later, key=lambda t: t["start"]) if later else None


@dataclass(frozen=True)
class Registry:
    """What the fault checks read from MLflow."""

    versions: dict[str, dict]
    champion: str | None
    running_runs: list[dict]


def registry(cfg: StackConfig, login: tuple[str, str]) -> Registry:
    """Model versions (tags, run id), the champion and the runs still RUNNING in the pipeline's
    experiment, read through MLflow's REST API with `login`."""
    base, name = f"{cfg.mlflow_url}/api/2.0/mlflow", cfg.env["MLOPS_MODEL_NAME"]

    def get(path: str, **params) -> dict:
        resp = requests.get(f"{base}{path}", params=params, auth=login, timeout=30)
        resp.raise_for_status()
        return resp.json()

    versions = {}
    token = None
    while True:
        page = get("/model-versions/search", filter=f"name='{name}'", max_results=200,
                   **({"page_token": token} if token else {}))
        for mv in page.get("model_versions", []):
            versions[mv["version"]] = {"run_id": mv.get("run_id"), "aliases": mv.get("aliases", []),
                                       "tags": {t["key"]: t["value"] for t in mv.get("tags", [])}}
        token = page.get("next_page_token")
        if not token:
            break
    model = get("/registered-models/get", name=name)["registered_model"]
    champion = next((a["version"] for a in model.get("aliases", []) if a["alias"] == "champion"), None)
    experiment = get("/experiments/get-by-name", experiment_name=name)["experiment"]["experiment_id"]
    resp = requests.post(f"{base}/runs/search", auth=login, timeout=30,
                         json={"experiment_ids": [experiment], "filter": "attributes.status = 'RUNNING'",
                               "max_results": 1000})
    resp.raise_for_status()
    running = [{"run_id": r["info"]["run_id"], "tags": {t["key"]: t["value"] for t in r["data"].get("tags", [])}}
               for r in resp.json().get("runs", [])]
    return Registry(versions, champion, running)


@contextlib.contextmanager
def cpu_burners(count: int | None = None) -> Iterator[list[int]]:
    """Load the machine: one busy-looping process per core (or `count`) until the block ends."""
    count = count or os.cpu_count() or 1
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)
