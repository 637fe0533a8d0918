"""Upkeep on the running stack: a warm shutdown of the heavy worker and Celery worker recycling.

Warm shutdown: the heavy worker is stopped through supervisord (what `make down` and a restart
do) while a training of 35 s runs (`stack_upkeep_probe.training`, longer than the 30 s the worker
used to get): the training finishes, in its first try, before the worker exits, and a training
queued meanwhile stays in the broker (the worker takes no new task) until the worker is back.

Recycling: a worker started here with the stack's worker environment, on a queue only it consumes,
with `worker_max_tasks_per_child` 1 (the stack's own is 25, airflow/airflow.env): every task ends
in success and each ran in a new pool process under the same worker.
"""

from __future__ import annotations

import grp
import json
import os
import signal
import subprocess
import threading
import time
from datetime import datetime

import psutil
import pytest

from stack.config import SHARED_GROUP, VENV_BIN, WORKER_USER
from stack.health import supervisor

PROBE = "stack_upkeep_probe"
HEAVY = "airflow:worker-heavy1"
TRAINING_S = 35


def _ti(stack, run_id: str, task_id: str) -> dict | None:
    return next((t for t in stack.task_instances(PROBE, run_id) if t["task_id"] == task_id), None)


def _wait_state(stack, run_id: str, task_id: str, states: set[str], timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        ti = _ti(stack, run_id, task_id)
        if ti and ti["state"] in states:
            return ti
        assert time.monotonic() < deadline, f"{task_id} of {run_id} not in {states} after {timeout} s: {ti}"
        time.sleep(0.5)


def _epoch(stamp: str) -> float:
    """Unix time of an API timestamp (ISO 8601 with offset or Z)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _heavy_queue_length(stack) -> int:
    import redis

    client = redis.Redis(host="127.0.0.1", port=stack.cfg.ports["REDIS_PORT"], password=stack.cfg.env["REDIS_PASSWORD"],
                         db=0)
    try:
        return int(client.llen("heavy"))
    finally:
        client.close()


@pytest.fixture()
def probe(dags_ready):
    stack = dags_ready
    deadline = time.monotonic() + 180
    while stack.api("GET", f"/dags/{PROBE}").status_code != 200:
        assert time.monotonic() < deadline, f"{PROBE} not parsed"
        time.sleep(1)
    rpc = supervisor(stack.cfg).supervisor
    yield stack
    if rpc.getProcessInfo(HEAVY)["statename"] != "RUNNING":
        rpc.startProcess(HEAVY)


def test_a_stopped_heavy_worker_lets_the_training_finish_and_takes_no_new_task(probe) -> None:
    stack = probe
    rpc = supervisor(stack.cfg).supervisor
    assert rpc.getProcessInfo(HEAVY)["statename"] == "RUNNING"
    first = stack.trigger(PROBE, conf={"mode": "training", "seconds": TRAINING_S})
    running = _wait_state(stack, first, "training", {"running"})
    second = stack.trigger(PROBE, conf={"mode": "training", "seconds": 0})
    _wait_state(stack, second, "training", {"queued"})

    stopped: dict[str, float] = {}

    def stop() -> None:
        started = time.monotonic()
        supervisor(stack.cfg).supervisor.stopProcess(HEAVY, True)
        stopped["after_s"] = time.monotonic() - started
        stopped["at"] = time.time()

    t_stop = time.time()
    stopper = threading.Thread(target=stop)
    stopper.start()
    stopper.join(timeout=TRAINING_S + 120)
    assert not stopper.is_alive(), "the heavy worker did not stop within the training's time plus two minutes"
    assert rpc.getProcessInfo(HEAVY)["statename"] == "STOPPED"
    done = _wait_state(stack, first, "training", {"success", "failed"}, timeout=30)
    assert done["state"] == "success" and done["try_number"] == 1, done
    # It ran its whole time after the SIGTERM, and the worker waited for it.
    ended = _epoch(done["end_date"])
    assert ended <= stopped["at"] + 1, (done["end_date"], stopped)
    assert stopped["after_s"] > 5, stopped
    # ... and left as soon as it had, without the preloaded interpreter's slow teardown.
    assert stopped["at"] - ended < 20, (done["end_date"], stopped)
    assert "warm shutdown done" in (stack.cfg.home / "logs" / "worker-heavy1.log").read_text()
    started = _epoch(running["start_date"])
    assert ended - started >= TRAINING_S - 1 and started < t_stop
    # The second training was not taken: it waits in the broker's heavy list, queued.
    time.sleep(3)
    assert _ti(stack, second, "training")["state"] == "queued"
    assert _heavy_queue_length(stack) == 1
    rpc.startProcess(HEAVY)
    assert stack.wait_run(PROBE, second, timeout=180)["state"] == "success"
    assert stack.wait_run(PROBE, first, timeout=60)["state"] == "success"
    print(f"\nwarm shutdown: the worker stopped {stopped['after_s']:.0f} s after SIGTERM, once the training ended")


def test_worker_recycling_replaces_the_pool_process_without_losing_a_task(probe) -> None:
    stack = probe
    env = json.loads((stack.cfg.env_dir / "worker-light1.json").read_text())
    extra = json.loads(env["AIRFLOW__CELERY__EXTRA_CELERY_CONFIG"])
    assert extra["worker_max_tasks_per_child"] >= 1 and extra["worker_max_memory_per_child"] > 0
    env["AIRFLOW__CELERY__EXTRA_CELERY_CONFIG"] = json.dumps({**extra, "worker_max_tasks_per_child": 1})
    env["MLOPS_WORKER_PRELOAD"] = ""
    worker = subprocess.Popen(
        [str(VENV_BIN / "airflow"), "celery", "worker", "--celery-hostname", "recycle1@%h", "--queues", "recycle",
         "--concurrency", "1", "--without-gossip", "--without-mingle", "--skip-serve-logs"],
        env=env, user=WORKER_USER, group=WORKER_USER, extra_groups=[grp.getgrnam(SHARED_GROUP).gr_gid],
        cwd=stack.cfg.worker_home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        tasks = 3
        run = stack.trigger(PROBE, conf={"mode": "recycle", "tasks": tasks})
        final = stack.wait_run(PROBE, run, timeout=300)
        mapped = [t for t in stack.task_instances(PROBE, run) if t["task_id"] == "pool_process"]
        if final["state"] != "success":
            mapped = stack.api("GET", f"/dags/{PROBE}/dagRuns/{run}/taskInstances/pool_process/listMapped").json()
        assert final["state"] == "success", (mapped, worker.poll())
        where = []
        for index in range(tasks):
            resp = stack.api("GET", f"/dags/{PROBE}/dagRuns/{run}/taskInstances/pool_process/xcomEntries/return_value",
                             params={"map_index": index})
            assert resp.status_code == 200, resp.text
            value = resp.json()["value"]
            where.append(json.loads(value) if isinstance(value, str) else value)
        tries = stack.api("GET", f"/dags/{PROBE}/dagRuns/{run}/taskInstances/pool_process/listMapped").json()
        assert {t["state"] for t in tries["task_instances"]} == {"success"}
        assert {t["try_number"] for t in tries["task_instances"]} == {1}
        assert {w["worker"] for w in where} == {worker.pid}, where
        assert len({w["pool"] for w in where}) == tasks, f"a pool process ran two tasks: {where}"
        assert worker.poll() is None and psutil.pid_exists(worker.pid)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)


def _aged(path, days: float, owner: str) -> None:
    """A file of `owner` (group mlops-shared) last modified `days` ago."""
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("upkeep test\n")
    for part in (path.parent, path):
        shutil.chown(part, owner, SHARED_GROUP)
    stamp = time.time() - days * 86400
    os.utime(path, (stamp, stamp))


def _mlflow_runs(stack, monkeypatch: pytest.MonkeyPatch) -> tuple[object, str, str]:
    """The pipeline's MLflow login (what a task holds); an unregistered run of the pipeline's
    experiment that started 40 days ago and one that started now, both ended: (client, old, new)."""
    from mlflow.tracking import MlflowClient

    env = stack.cfg.env
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", env["MLFLOW_PIPELINE_USER"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", env["MLFLOW_PIPELINE_PASSWORD"])
    client = MlflowClient(tracking_uri=stack.cfg.mlflow_url, registry_uri=stack.cfg.mlflow_url)
    experiment = client.get_experiment_by_name(env.get("MLOPS_EXPERIMENT") or env["MLOPS_MODEL_NAME"]).experiment_id
    ids = []
    for age_days in (40, 0):
        started = int((time.time() - age_days * 86400) * 1000)
        run = client.create_run(experiment, start_time=started, tags={"upkeep_test": str(age_days)})
        client.set_terminated(run.info.run_id, end_time=started + 1000)
        ids.append(run.info.run_id)
    return client, ids[0], ids[1]


def test_maintenance_dag_cleans_the_database_and_prunes_old_files(probe, monkeypatch: pytest.MonkeyPatch) -> None:
    """`airflow db clean` runs from maintenance_dag (on the maintenance worker): a run older than the
    cut-off is gone, a newer one is still shown by the REST API (what the UI reads); task logs and
    reports older than their retention are deleted, newer ones kept; an MLflow run older than its
    retention is deleted (soft) with the maintenance worker's login, which the pipeline's lacks."""
    from mlflow.exceptions import MlflowException

    from stack.config import CONTROL_USER

    stack = probe
    deadline = time.monotonic() + 180
    while stack.api("GET", "/dags/maintenance_dag").status_code != 200:
        assert time.monotonic() < deadline, "maintenance_dag not parsed"
        time.sleep(1)
    old_run = stack.trigger(PROBE, conf={"mode": "training", "seconds": 0})
    assert stack.wait_run(PROBE, old_run, timeout=180)["state"] == "success"
    time.sleep(1)
    cut = datetime.now().astimezone().isoformat()
    time.sleep(1)
    new_run = stack.trigger(PROBE, conf={"mode": "training", "seconds": 0})
    assert stack.wait_run(PROBE, new_run, timeout=180)["state"] == "success"

    logs, reports = stack.cfg.task_logs, stack.cfg.data_dir / "reports"
    old_files = [logs / "dag_id=upkeep_test" / "old" / "attempt=1.log", reports / "1999-W01" / "validation.json"]
    new_files = [logs / "dag_id=upkeep_test" / "new" / "attempt=1.log", reports / "1999-W02" / "validation.json"]
    for path, days in ((old_files[0], 31), (new_files[0], 29)):
        _aged(path, days, CONTROL_USER)
    for path, days in ((old_files[1], 31), (new_files[1], 29)):
        _aged(path, days, WORKER_USER)

    client, old_mlflow_run, new_mlflow_run = _mlflow_runs(stack, monkeypatch)
    with pytest.raises(MlflowException, match="403|PERMISSION_DENIED|Permission denied"):
        client.delete_run(old_mlflow_run)  # the pipeline's login (EDIT) may not delete

    conf = {"clean_before": cut, "dag_ids": [PROBE], "tables": ["dag_run"],
            "log_retention_days": 30, "report_retention_days": 30, "mlflow_run_retention_days": 30}
    run = stack.trigger("maintenance_dag", conf=conf, role="op")
    final = stack.wait_run("maintenance_dag", run, timeout=300)
    states = {t["task_id"]: (t["state"], t["queue"]) for t in stack.task_instances("maintenance_dag", run)}
    assert final["state"] == "success", states
    assert states["clean_metadata_db"] == ("success", "maintenance")
    # The MLflow run prune runs there too, with its own login (MANAGE on the experiment).
    assert states["prune_mlflow_runs"] == ("success", "maintenance")
    assert client.get_run(old_mlflow_run).info.lifecycle_stage == "deleted"
    assert client.get_run(new_mlflow_run).info.lifecycle_stage == "active"

    assert stack.api("GET", f"/dags/{PROBE}/dagRuns/{old_run}").status_code == 404
    shown = stack.api("GET", f"/dags/{PROBE}/dagRuns/{new_run}")
    assert shown.status_code == 200 and shown.json()["state"] == "success"
    assert stack.api("GET", f"/dags/maintenance_dag/dagRuns/{run}").status_code == 200
    assert [p.exists() for p in old_files] == [False, False]
    assert all(p.exists() for p in new_files)
    for task_id in ("prune_task_logs", "prune_reports"):
        pruned = stack.api("GET", f"/dags/maintenance_dag/dagRuns/{run}/taskInstances/{task_id}/xcomEntries/return_value")
        value = pruned.json()["value"]
        value = json.loads(value) if isinstance(value, str) else value
        assert value["removed_files"] >= 1 and value["kept_files"] >= 1 and value["errors"] == [], (task_id, value)
