"""A burst of task instances driven through the REST API and what it left behind: shared by
benchmarks/load.py and the load test (tests/stack/test_stack_9_load.py).

`run_burst` triggers bench_fanout (benchmarks/dags/fanout_bench_dag.py) as several concurrent
runs that hold `tasks` task instances in all (each run: its two planning tasks, its light items,
its heavy items), waits until every run ended or the deadline passed, and reads back every task instance of
those runs, the workers Flower saw run them and the scheduler's "stuck in queued" events.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import requests

from stack.api import Airflow
from stack.config import StackConfig
from testkit.faults import TERMINAL, ts

DAG_ID = "bench_fanout"
HEAVY_TASK = "heavy_item"
HEAVY_PER_RUN = 1
# plan_light and plan_heavy: the task instances of a run besides its items.
PLANNERS = 2
# What the API pages at most (Airflow's [api] maximum_page_limit default).
PAGE = 100
# What the scheduler logs when a task instance outlived [scheduler] task_queued_timeout.
QUEUED_TIMEOUT_EVENTS = ("stuck in queued reschedule", "stuck in queued tries exceeded")
UNFINISHED = {None, "scheduled", "queued", "running", "up_for_retry", "up_for_reschedule", "restarting",
              "deferred"}


def plan_runs(tasks: int, runs: int, heavy: int = HEAVY_PER_RUN) -> list[dict[str, int]]:
    """The conf of each of `runs` runs that hold `tasks` task instances in all."""
    base, extra = divmod(tasks, runs)
    if base < PLANNERS + 1 + heavy:
        raise ValueError(f"{tasks} task instances in {runs} runs leave fewer than {PLANNERS + 1 + heavy} per run")
    return [{"light": base + (i < extra) - PLANNERS - heavy, "heavy": heavy} for i in range(runs)]


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of `values`, interpolated; None when empty."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


@dataclass
class Burst:
    """One burst: the runs it triggered and every task instance they had at the end."""

    tasks: int
    runs: list[str]
    started: float
    ended: float
    deadline_passed: bool
    instances: list[dict] = field(default_factory=list)
    workers: dict[str, set[str]] = field(default_factory=dict)
    queued_timeouts: list[dict] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        """First trigger to the end of the last run."""
        return self.ended - self.started

    @property
    def succeeded(self) -> int:
        return sum(1 for ti in self.instances if ti["state"] == "success")

    @property
    def lost(self) -> int:
        """Planned task instances that did not end in success (missing ones included)."""
        return self.tasks - self.succeeded

    @property
    def stuck(self) -> int:
        """Task instances not finished at the end (queued, running, scheduled, ...)."""
        return sum(1 for ti in self.instances if ti["state"] in UNFINISHED)

    @property
    def queue_waits(self) -> list[float]:
        """Queued -> running of each task instance that started, in seconds."""
        out = []
        for ti in self.instances:
            queued, started = ts(ti.get("queued_when")), ts(ti.get("start_date"))
            if queued is not None and started is not None:
                out.append(max(0.0, started - queued))
        return out

    def summary(self) -> dict[str, Any]:
        """The benchmark's figures of this burst."""
        waits = self.queue_waits
        return {
            "tasks": self.tasks,
            "runs": len(self.runs),
            "wall_s": round(self.wall_s, 2),
            "tasks_per_s": round(self.succeeded / self.wall_s, 2) if self.wall_s > 0 else None,
            "queue_wait_p50_s": _round(percentile(waits, 0.5)),
            "queue_wait_p95_s": _round(percentile(waits, 0.95)),
            "queue_wait_max_s": _round(max(waits) if waits else None),
            "lost": self.lost,
            "stuck": self.stuck,
            "queued_timeouts": len(self.queued_timeouts),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def task_instances(api: Airflow, dag_id: str, run_id: str) -> list[dict]:
    """Every task instance of a run (all pages)."""
    out: list[dict] = []
    while True:
        page = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=PAGE, offset=len(out))
        out += page["task_instances"]
        if not page["task_instances"] or len(out) >= page["total_entries"]:
            return out


def celery_workers(cfg: StackConfig, run_ids: list[str]) -> dict[str, set[str]]:
    """task id -> the Celery workers (names before '@') Flower saw run it, in the given runs."""
    auth = (cfg.env["FLOWER_USER"], cfg.env["FLOWER_PASSWORD"])
    resp = requests.get(f"{cfg.flower_url}/api/tasks", auth=auth, timeout=60)
    resp.raise_for_status()
    tasks = resp.json()
    wanted = set(run_ids)
    out: dict[str, set[str]] = {}
    for task in tasks.values():
        found = re.search(r"run_id=([^/]+)/task_id=([^/]+)/", task.get("args") or "")
        if found and found.group(1) in wanted and task.get("worker"):
            out.setdefault(found.group(2), set()).add(task["worker"].split("@")[0])
    return out


def queued_timeouts(api: Airflow, since: float) -> list[dict]:
    """The scheduler's task_queued_timeout events on bench_fanout after `since` (epoch s)."""
    after = datetime.fromtimestamp(since, timezone.utc).isoformat()
    found = api.get("/eventLogs", dag_id=DAG_ID, after=after, limit=PAGE,
                    included_events=list(QUEUED_TIMEOUT_EVENTS))
    return [e for e in found["event_logs"] if e["event"] in QUEUED_TIMEOUT_EVENTS]


def run_burst(cfg: StackConfig, api: Airflow, tasks: int, runs: int, deadline_s: float,
              poll_s: float = 2.0) -> Burst:
    """Trigger the burst, wait for its runs (at most `deadline_s`), read back what happened."""
    confs = plan_runs(tasks, runs)
    started = time.time()
    run_ids = [api.trigger(DAG_ID, conf)["dag_run_id"] for conf in confs]
    pending = set(run_ids)
    ends: dict[str, float] = {}
    deadline = time.monotonic() + deadline_s
    while pending and time.monotonic() < deadline:
        time.sleep(poll_s)
        for run_id in sorted(pending):
            run = api.run(DAG_ID, run_id)
            if run["state"] in TERMINAL:
                ends[run_id] = ts(run["end_date"]) or time.time()
                pending.discard(run_id)
    ended = max(ends.values()) if not pending else time.time()
    burst = Burst(tasks, run_ids, started, ended, deadline_passed=bool(pending))
    for run_id in run_ids:
        burst.instances += task_instances(api, DAG_ID, run_id)
    burst.workers = celery_workers(cfg, run_ids)
    burst.queued_timeouts = queued_timeouts(api, started)
    return burst
