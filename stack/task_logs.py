"""`python -m stack.ctl task-logs DAG_ID TASK_ID [RUN_ID]` (`make task-logs`): a task's log through
the REST API, Airflow 3's replacement for the removed `airflow tasks logs`.

Airflow 3 serves task logs at `GET /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try}`
(`Accept: application/json`: the log's structured lines, and a continuation token while the task
still runs). This logs in as the stack's Viewer (read-only), takes the DAG's newest run when no
RUN_ID is given (manual runs have no logical date: runs are named by their run id) and the task's
latest try unless --try says otherwise, prints one line per log event, follows a running task with
--follow, and names the log file on this host, for `tail -f`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from stack import health
from stack.api import Airflow
from stack.config import StackConfig
from stack.run import StackError

POLL_S = 1.0
# Keys every structured log event has; the others are printed after the message as key=value.
_SHOWN = ("timestamp", "level", "logger", "event")
# Source position, and the task instance's identity that every line of its log repeats.
_HIDDEN = {"chan", "filename", "lineno", "sources", "dag_id", "run_id", "task_id", "map_index", "try_number", "ti_id"}


def _api(cfg: StackConfig) -> Airflow:
    if not health.pid_alive(cfg.run_dir / "supervisord.pid"):
        raise StackError(f"the native stack of {cfg.env_file} is not running (STACK_HOME={cfg.home}): start it "
                         "with `make up`")
    try:
        return Airflow(cfg, cfg.env["AIRFLOW_VIEWER_USER"], cfg.env["AIRFLOW_VIEWER_PASSWORD"])
    except (RuntimeError, requests.RequestException) as exc:
        raise StackError(f"cannot log in to the api-server at {cfg.api_url}: {exc}") from exc


def _get(api: Airflow, path: str, what: str, **params: Any) -> Any:
    try:
        resp = api.session.get(f"{api.base}/api/v2{path}", params=params,
                               headers={"Accept": "application/json"}, timeout=30)
    except requests.RequestException as exc:
        raise StackError(f"the api-server at {api.base} does not answer ({exc}); see `make status`") from exc
    if resp.status_code == 404:
        detail = resp.json().get("detail", resp.text) if resp.headers.get("content-type", "").startswith(
            "application/json") else resp.text
        raise StackError(f"{what}: not found ({detail})")
    if resp.status_code != 200:
        raise StackError(f"{what}: HTTP {resp.status_code} from GET /api/v2{path}: {resp.text[:300]}")
    return resp.json()


def latest_run(api: Airflow, dag_id: str) -> str:
    """Run id of the DAG's newest run (by run_after: manual runs have no logical date)."""
    runs = _get(api, f"/dags/{quote(dag_id, safe='')}/dagRuns", f"DAG {dag_id}", order_by="-run_after",
                limit=1)["dag_runs"]
    if not runs:
        raise StackError(f"DAG {dag_id} has no run yet (trigger one: `bin/airflow dags trigger {dag_id}`)")
    return runs[0]["dag_run_id"]


def _ti_path(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    path = f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances/{quote(task_id, safe='')}"
    return path + (f"/{map_index}" if map_index >= 0 else "")


def log_file(cfg: StackConfig, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> Path:
    """Where a worker of this host writes the task's log (Airflow's default log_filename_template
    under the stack's task-log folder)."""
    path = cfg.task_logs / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        path = path / f"map_index={map_index}"
    return path / f"attempt={try_number}.log"


def format_event(entry: dict[str, Any] | str) -> str:
    """One structured log event as a line: `[time] LEVEL logger - message key=value ...`."""
    if isinstance(entry, str):
        return entry
    head = " ".join({"timestamp": f"[{entry.get('timestamp')}]", "level": str(entry.get("level")).upper()}.get(
        k, str(entry.get(k))) for k in _SHOWN[:3] if entry.get(k) not in (None, ""))
    extra = " ".join(f"{k}={v}" for k, v in entry.items() if k not in _SHOWN and k not in _HIDDEN)
    text = f"{head} - {entry.get('event', '')}" if head else str(entry.get("event", ""))
    return f"{text} {extra}" if extra else text


def read_log(api: Airflow, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1,
             token: str | None = None) -> tuple[list[Any], str | None]:
    """One read of the log endpoint (JSON): the events after `token`'s position and the token to
    continue from (None once the log is complete)."""
    params: dict[str, Any] = {"map_index": map_index}
    if token:
        params["token"] = token
    path = _ti_path(dag_id, run_id, task_id, -1) + f"/logs/{try_number}"
    doc = _get(api, path, f"the log of {dag_id}.{task_id} try {try_number} in run {run_id}", **params)
    return doc.get("content") or [], doc.get("continuation_token")


def show(cfg: StackConfig, dag_id: str, task_id: str, run_id: str | None = None, try_number: int | None = None,
         map_index: int = -1, follow: bool = False, path_only: bool = False) -> int:
    """Print the task's log (and, on stderr, where its file is); with `follow`, until it ends."""
    api = _api(cfg)
    run_id = run_id or latest_run(api, dag_id)
    ti_path = _ti_path(dag_id, run_id, task_id, map_index)
    what = f"task {task_id}{f' [{map_index}]' if map_index >= 0 else ''} in run {run_id} of DAG {dag_id}"
    ti = _get(api, ti_path, what)
    try_number = try_number or ti["try_number"] or 1
    path = log_file(cfg, dag_id, run_id, task_id, try_number, map_index)
    if path_only:
        if not path.is_file():
            raise StackError(f"no log file {path} on this host (the try has not started here yet)")
        print(path)
        return 0
    token = None
    while True:
        content, token = read_log(api, dag_id, run_id, task_id, try_number, map_index, token)
        for entry in content:
            print(format_event(entry), flush=True)
        if not follow or not token:
            break
        time.sleep(POLL_S)
    if follow:
        ti = _get(api, ti_path, what)
    where = (f"log file on this host: {path} (follow it with `tail -f`)" if path.is_file() else
             f"no log file {path} on this host yet")
    print(f"[{dag_id} {run_id} {task_id} try {try_number}, state {ti['state']}] {where}", file=sys.stderr)
    return 0
