"""Warm workers on the live test stack (issue 16): a task on each queue inherited its worker's
preload (mlops_airflow.preload ran in the Celery main process, the task process was forked
below it and imported nothing heavy itself), and its work gives the same result as the same
work in a cold interpreter (same synthetic inputs, tests/stack/dags/preload_probe_dag.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from stack.config import QUEUE_PRELOAD
from stack.ctl import stack_processes

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")
PROBE_DAGS = REPO / "tests" / "stack" / "dags"
DAG_ID = "stack_preload_probe"
TASKS = {"on_light": "light", "on_heavy": "heavy"}


def _cold(kind: str) -> dict:
    """The probe's work in a fresh interpreter, nothing preloaded."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import preload_probe_dag as m; "
            "print('RESULT ' + json.dumps(m.work(sys.argv[2])))")
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_WORKER_PRELOAD"}
    proc = subprocess.run([PYTHON, "-W", "ignore", "-c", code, str(PROBE_DAGS), kind], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_tasks_inherit_their_queues_preload_and_match_a_cold_run(dags_ready) -> None:
    stack = dags_ready
    deadline = time.monotonic() + 120
    while stack.api("GET", f"/dags/{DAG_ID}").status_code != 200:
        assert time.monotonic() < deadline, f"{DAG_ID} not parsed"
        time.sleep(1)
    run_id = stack.trigger(DAG_ID)
    cold = {kind: _cold(kind) for kind in TASKS.values()}  # while the stack runs the warm ones
    run = stack.wait_run(DAG_ID, run_id, timeout=300)
    states = {t["task_id"]: (t["state"], t["queue"]) for t in stack.task_instances(DAG_ID, run_id)}
    assert run["state"] == "success", states
    assert states == {task: ("success", queue) for task, queue in TASKS.items()}
    live = set(stack_processes(stack.cfg))
    preload_pids = set()
    for task_id, queue in TASKS.items():
        resp = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
        assert resp.status_code == 200, resp.text
        value = resp.json()["value"]
        report = json.loads(value) if isinstance(value, str) else value
        assert report["preloaded"] == QUEUE_PRELOAD[queue].split(","), (task_id, report["preloaded"])
        # Imported by the worker's main process (a live stack process), two forks above the task:
        # main -> pool process -> task process.
        assert report["preload_pid"] != report["pid"], report
        assert report["preload_pid"] in live, report
        assert report["grandparent_pid"] == report["preload_pid"], report
        preload_pids.add(report["preload_pid"])
        assert report["heavy_imported_since_preload"] == [], (task_id, report["heavy_imported_since_preload"])
        assert report["result"] == cold[queue], (task_id, report["result"], cold[queue])
    assert len(preload_pids) == 2  # each queue's own worker
