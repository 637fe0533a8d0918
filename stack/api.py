"""A small client of the Airflow REST API (JWT from /auth/token), Flower and MLflow for the demo
and the benchmark."""

from __future__ import annotations

import re
import time
from typing import Any

import requests

from stack.config import StackConfig


class Airflow:
    """Airflow REST API v2 as one user."""

    def __init__(self, cfg: StackConfig, user: str, password: str) -> None:
        self.base = cfg.api_url
        resp = requests.post(f"{self.base}/auth/token", json={"username": user, "password": password}, timeout=30)
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"login as {user} at {self.base}/auth/token failed: HTTP {resp.status_code}")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"

    def get(self, path: str, **params: Any) -> Any:
        """GET /api/v2<path> and return the JSON, raising on an error status."""
        resp = self.session.get(f"{self.base}/api/v2{path}", params=params, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def trigger(self, dag_id: str, conf: dict | None = None) -> dict:
        """Trigger a run now; return the run JSON."""
        resp = self.session.post(f"{self.base}/api/v2/dags/{dag_id}/dagRuns",
                                 json={"logical_date": None, "conf": conf or {}}, timeout=30)
        if resp.status_code != 200:
            raise RuntimeError(f"trigger {dag_id}: HTTP {resp.status_code} {resp.text[:300]}")
        return resp.json()

    def wait_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Wait until the dag-processor has parsed `dag_id`."""
        deadline = time.monotonic() + timeout
        while True:
            resp = self.session.get(f"{self.base}/api/v2/dags/{dag_id}", timeout=30)
            if resp.status_code == 200:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"DAG {dag_id} not parsed after {timeout:.0f} s")
            time.sleep(1)

    def run(self, dag_id: str, run_id: str) -> dict:
        """One DAG run."""
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Task instances of one run."""
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]


def flower_workers(cfg: StackConfig) -> dict[tuple[str, str, str], str]:
    """(dag_id, run_id, task_id) -> Celery worker name, from Flower's task API."""
    auth = (cfg.env["FLOWER_USER"], cfg.env["FLOWER_PASSWORD"])
    tasks = requests.get(f"{cfg.flower_url}/api/tasks", auth=auth, timeout=30).json()
    out = {}
    for task in tasks.values():
        found = re.search(r"dag_id=([^/]+)/run_id=([^/]+)/task_id=([^/]+)/", task.get("args") or "")
        if found and task.get("worker"):
            out[found.groups()] = task["worker"]
    return out
