"""Workers killed mid-training, then the control plane disrupted, under one pipeline run and one
retraining in flight (one fault after the other, each while tasks are in flight):

1. `train` runs on the second host's heavy worker (the main host's is stopped until then): Flower
   and the task's host name say so, its log is read through the api-server from that host's log
   server, its StatsD metrics arrive from that host's address. Then that host dies: SIGKILL of its
   supervisord and every process under it, so nothing restarts them.
2. While the retraining's `retrain_model` runs on the main host's heavy worker, that worker's whole
   process tree is killed (SIGKILL; supervisord restarts it).
   Each dead attempt is failed by the scheduler's heartbeat timeout (airflow/airflow.env) and
   retried as a fresh Celery message on the next free heavy slot, the main host's: not the
   broker's redelivery after its visibility timeout.
3. Redis stopped for a few seconds and started again while a heavy task runs and another waits in
   the queue (the append-only file keeps the queued messages, the workers reconnect and consume
   again; the scheduler, whose Celery state fetch fails without Redis, is restarted by supervisord).
4. The api-server restarted while a task runs (tasks reach the Execution API through it).
5. PostgreSQL restarted mid-run.
6. The scheduler's process tree killed (SIGKILL) mid-run; supervisord restarts it and the new
   scheduler adopts what the dead one had queued.

Both runs end `success` with nothing half-done.
"""

from __future__ import annotations


import pytest
import requests

from stack.health import celery_ping
from testkit.faultsuite import LONG, PIPELINE, RETRAIN, assert_nothing_half_done, heartbeat_timeouts, recipe_index
from testkit import faults

HEAVY_MAIN = "airflow:worker-heavy1"
RECIPES = ["recent_6", "recent_12"]
REDIS_DOWN_S = 5
CONTROL = {"postgres", "redis", "api-server", "scheduler", "worker-light1", "worker-light2", "worker-heavy1"}
# With Airflow's default heartbeat timeout (300 s) a dead attempt stayed `running` five minutes,
# and the broker would redeliver its message only after its visibility timeout (21600 s).
FAILED_WITHIN_S = 120


def _task_log(fs, dag_id: str, run_id: str, task_id: str, try_number: int) -> list:
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
    resp = fs.api.session.get(f"{fs.cfg.api_url}/api/v2{path}", params={"full_content": True},
                              headers={"Accept": "application/json"}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()["content"]


def _events(log: list) -> str:
    return " ".join(str(line.get("event")) for line in log)


def _running_recipe(api, run_id: str) -> int | None:
    """The map index of a retrain_model of RECIPES that runs, if one does."""
    for recipe in RECIPES:
        ti = faults.task(api, RETRAIN, run_id, "retrain_model", recipe_index(recipe))
        if ti and ti["state"] == "running":
            return recipe_index(recipe)
    return None


def _in_flight(api, runs: list[tuple[str, str]], states: set[str]) -> list[dict]:
    return [t for dag_id, run_id in runs for t in api.task_instances(dag_id, run_id) if t["state"] in states]


def _recover(fs, fault: faults.Fault, runs: list[tuple[str, str]]) -> dict:
    """Wait until the control plane is healthy again and a task started after the fault."""
    faults.wait_for(lambda: faults.healthy(fs.cfg, CONTROL), f"stack healthy after {fault.name}", 300, poll=1)
    started = faults.wait_for(
        lambda: faults.first_start_after([t for d, r in runs for t in faults.tries(fs.api, d, r)], fault.at)
        or all(fs.api.run(d, r)["state"] in faults.TERMINAL for d, r in runs),
        f"a task started after {fault.name}", 600, poll=1)
    ended = {r: faults.ts(fs.api.run(d, r)["end_date"]) for d, r in runs}
    return {"fault": fault, "resumed": started if isinstance(started, dict) else None, "ended": ended}


def _pace(api, runs: list[tuple[str, str]], seconds: int) -> str:
    """Start a long CPU-bound training (fault_long_training) and wait until it runs; it joins `runs`.
    The warm workers finish the pipeline's and the retraining's tasks in seconds, so without it a
    fault could find nothing in flight: it keeps a heavy task running (and the heavy retries
    queued behind it) for `seconds`."""
    run_id = api.trigger(LONG, {"seconds": seconds})["dag_run_id"]
    faults.wait_task(api, LONG, run_id, "long_training", {"running"}, timeout=600)
    runs.append((LONG, run_id))
    return run_id


@pytest.fixture(scope="module")
def disrupted(fault_stack) -> dict:
    fs, api, cfg = fault_stack, fault_stack.api, fault_stack.cfg
    out: dict = {"before": fs.registry()}
    stopped = False
    try:
        # 1. Only the second host's heavy worker consumes while `train` is queued.
        faults.stop(cfg, HEAVY_MAIN)
        stopped = True
        week = fs.replay("2013-W07")
        pipeline = api.trigger(PIPELINE)["dag_run_id"]
        out["train"] = faults.wait_task(api, PIPELINE, pipeline, "train", {"running"}, timeout=600)
        faults.start(cfg, HEAVY_MAIN)
        stopped = False
        # The running task's log, through the api-server from the second host's log server (read
        # again until the task has written its first lines: on a loaded machine it may not have yet).
        out["log"] = faults.wait_for(lambda: (lambda log: log if "Filling up the DagBag" in _events(log) else None)(
            _task_log(fs, PIPELINE, pipeline, "train", 1)), "the first lines of train's log", 120, poll=1)
        out["remote_metrics"] = set(fs.statsd.senders.get(fs.host.address, set()))
        out["host_fault"] = faults.kill_host(fs.host_cfg, "the second host died")
        out["train_at_kill"] = faults.task(api, PIPELINE, pipeline, "train")

        # 2. The main host's heavy worker, mid-retrain_model.
        retrain = api.trigger(RETRAIN, {"recipes": RECIPES, "max_rows": 2000})["dag_run_id"]
        runs = [(PIPELINE, pipeline), (RETRAIN, retrain)]
        out.update(week=week, pipeline_id=pipeline, retrain_id=retrain)
        index = faults.wait_for(lambda: _running_recipe(api, retrain), "a retrain_model of the conf's recipes runs",
                                600, poll=0.3)
        out["index"] = index
        out["retrain_at_kill"] = faults.task(api, RETRAIN, retrain, "retrain_model", index)
        out["worker_fault"] = faults.kill_tree(cfg, HEAVY_MAIN, "SIGKILL of the main host's heavy worker tree")
        # Both dead attempts failed (for retry) before the control plane is disrupted.
        out["train_failed"] = faults.wait_task(api, PIPELINE, pipeline, "train", {"up_for_retry", "failed"},
                                               timeout=300, poll=0.5)
        out["retrain_failed"] = faults.wait_task(api, RETRAIN, retrain, "retrain_model", {"up_for_retry", "failed"},
                                                 map_index=index, timeout=300, poll=0.5)

        # 3. Redis, while a heavy task runs and another waits for the one heavy slot left (the
        # retries wait behind the long training).
        _pace(api, runs, 40)

        def running_and_queued():
            heavy = [t for t in _in_flight(api, runs, {"running", "queued"}) if t["queue"] == "heavy"]
            running = [t for t in heavy if t["state"] == "running"]
            queued = [t for t in heavy if t["state"] == "queued"]
            return (running, queued) if running and queued else None

        out["redis_at"] = faults.wait_for(running_and_queued, "a heavy task running and one queued", 600, poll=0.3)
        out["redis"] = _recover(fs, faults.outage(cfg, "redis", REDIS_DOWN_S), runs)
        out["pings"] = celery_ping(cfg, timeout=5)

        # 4. The api-server, while a task runs: one on its first try (a restart longer than the
        # heartbeat timeout, as on an overloaded machine, costs the running tasks a retry).
        _pace(api, runs, 30)
        out["api_at"] = faults.wait_for(lambda: (lambda r: r if r and all(t["try_number"] == 1 for t in r) else None)(
            _in_flight(api, runs, {"running"})), "a task running on its first try", 600, poll=0.3)
        out["api"] = _recover(fs, faults.restart(cfg, "airflow:api-server"), runs)

        # 5. PostgreSQL, mid-run.
        _pace(api, runs, 20)
        faults.wait_for(lambda: _in_flight(api, runs, {"running", "queued"}), "a task in flight", 600, poll=0.3)
        out["postgres"] = _recover(fs, faults.restart(cfg, "postgres"), runs)

        # 6. The scheduler, mid-run.
        _pace(api, runs, 20)
        faults.wait_for(lambda: _in_flight(api, runs, {"running", "queued"}), "a task in flight", 600, poll=0.3)
        pid_before = faults.program_tree(cfg, "airflow:scheduler")[0].pid
        out["scheduler"] = _recover(fs, faults.kill_tree(cfg, "airflow:scheduler", "SIGKILL of the scheduler"), runs)
        out["scheduler_pids"] = (pid_before, faults.program_tree(cfg, "airflow:scheduler")[0].pid)

        out["pipeline"] = faults.wait_run(api, PIPELINE, pipeline)
        out["retrain"] = faults.wait_run(api, RETRAIN, retrain)
        out["paced"] = {run_id: faults.wait_run(api, dag_id, run_id)["state"] for dag_id, run_id in runs if dag_id == LONG}
    finally:
        if stopped:
            faults.start(cfg, HEAVY_MAIN)
    return out


def test_train_runs_on_the_second_host(fault_stack, disrupted) -> None:
    fs = fault_stack
    assert disrupted["train"]["hostname"] == fs.host.address, disrupted["train"]
    source = next(str(line["event"]) for line in disrupted["log"] if "/log/" in str(line.get("event")))
    assert source.startswith(f"http://{fs.host.address}:{fs.cfg.ports['AIRFLOW_LOG_SERVER_PORT']}/log/"), source
    assert "Filling up the DagBag" in _events(disrupted["log"]), _events(disrupted["log"])[:2000]
    assert disrupted["remote_metrics"], f"no StatsD datagram from {fs.host.address}: {sorted(fs.statsd.senders)}"
    auth = (fs.cfg.env["FLOWER_USER"], fs.cfg.env["FLOWER_PASSWORD"])
    tasks = requests.get(f"{fs.cfg.flower_url}/api/tasks", auth=auth, timeout=30).json()
    workers = {t.get("worker") for t in tasks.values()
               if disrupted["pipeline_id"] in (t.get("args") or "") and "task_id=train/" in (t.get("args") or "")}
    # The first try on the second host's worker, the retry on the main host's.
    assert f"heavy2@{fs.host.hostname}" in workers and any((w or "").startswith("heavy1@") for w in workers), workers


def test_a_dead_second_host_is_noticed_and_train_retried_on_the_main_host(fault_stack, disrupted) -> None:
    fs = fault_stack
    assert disrupted["train_at_kill"]["state"] == "running", disrupted["train_at_kill"]
    assert disrupted["train_failed"]["state"] == "up_for_retry", disrupted["train_failed"]
    tries = [t for t in faults.tries(fs.api, PIPELINE, disrupted["pipeline_id"]) if t["task_id"] == "train"]
    assert [t["state"] for t in tries] == ["failed", "success"], tries
    assert tries[0]["hostname"] == fs.host.address and tries[1]["hostname"] == fs.host.main_address, tries
    assert heartbeat_timeouts(fs, PIPELINE, disrupted["pipeline_id"], "train")
    assert tries[0]["end"] - disrupted["host_fault"].at < FAILED_WITHIN_S, tries
    trained = fs.xcom(PIPELINE, disrupted["pipeline_id"], "train")
    assert [b.rsplit("/", 1)[-1] for b in trained["batches"]] == [disrupted["week"].rsplit("/", 1)[-1]], trained


def test_a_killed_heavy_worker_is_noticed_and_retrain_model_retried(fault_stack, disrupted) -> None:
    fs = fault_stack
    assert disrupted["retrain_at_kill"]["state"] == "running", disrupted["retrain_at_kill"]
    assert disrupted["retrain_at_kill"]["hostname"] == fs.host.main_address
    tries = [t for t in faults.tries(fs.api, RETRAIN, disrupted["retrain_id"])
             if t["task_id"] == "retrain_model" and t["map_index"] == disrupted["index"]]
    assert [t["state"] for t in tries] == ["failed", "success"], tries
    assert tries[0]["end"] - disrupted["worker_fault"].at < FAILED_WITHIN_S, tries
    assert heartbeat_timeouts(fs, RETRAIN, disrupted["retrain_id"], "retrain_model")


def test_redis_restart_keeps_the_queued_tasks_and_the_workers_consume_again(fault_stack, disrupted) -> None:
    _, queued = disrupted["redis_at"]
    assert disrupted["pings"] >= {"light1", "light2", "heavy1"}, disrupted["pings"]
    # The tasks that waited in the queue while Redis was down ran from their surviving message.
    for ti in queued:
        final = faults.task(fault_stack.api, ti["dag_id"], ti["dag_run_id"], ti["task_id"], ti["map_index"])
        assert final["state"] in ("success", "skipped") and final["try_number"] == ti["try_number"], (ti, final)
    assert disrupted["redis"]["resumed"] is not None


def _went_on(recovered: dict) -> bool:
    """After the fault the stack started a task, or (when the fault caught the runs' last tasks,
    the warm workers finish them in seconds) it ended the runs still in flight at the fault
    (`_recover` waits until every run ended): both need a working control plane; the runs'
    success is checked on its own."""
    return recovered["resumed"] is not None or any(end and end > recovered["fault"].at
                                                   for end in recovered["ended"].values())


def test_api_server_restart_while_a_task_runs(fault_stack, disrupted) -> None:
    for ti in disrupted["api_at"]:
        final = faults.task(fault_stack.api, ti["dag_id"], ti["dag_run_id"], ti["task_id"], ti["map_index"])
        assert final["state"] in ("success", "skipped"), final
    assert _went_on(disrupted["api"]), disrupted["api"]


def test_postgres_restart_mid_run(fault_stack, disrupted) -> None:
    assert _went_on(disrupted["postgres"]), disrupted["postgres"]


def test_scheduler_killed_mid_run_is_restarted_and_the_runs_go_on(fault_stack, disrupted) -> None:
    before, after = disrupted["scheduler_pids"]
    assert before != after
    assert _went_on(disrupted["scheduler"]), disrupted["scheduler"]


def test_all_these_faults_leave_nothing_half_done(fault_stack, disrupted) -> None:
    assert disrupted["paced"] and set(disrupted["paced"].values()) == {"success"}, disrupted["paced"]
    assert_nothing_half_done(fault_stack, disrupted["before"],
                             [(PIPELINE, disrupted["pipeline_id"]), (RETRAIN, disrupted["retrain_id"])], trainings=2)
