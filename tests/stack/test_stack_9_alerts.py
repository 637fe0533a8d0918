"""The alerts, proven on the live test stack: each condition is driven for real, each alert reaches
the session's webhook receiver through Prometheus and Alertmanager (on the receiver of its
severity's route), then resolves.

The test stack runs the production rules and routes on a compressed clock (tests/lib/testkit/
alert_clock.py: every `for:` at most 5 s, every duration inside a rule at most 30 s; Prometheus
evaluates every 2 s, Alertmanager groups within 1-2 s). promtool's unit tests
(observability/prometheus/tests) cover the production durations.

What is driven, all on the real stack:
- the heavy worker stopped, then ml_pipeline_dag triggered: its `train` waits queued on `heavy`
  (AirflowQueueHasNoWorker, AirflowTasksQueuedTooLong);
- that run's new batches: 2013-W04 without its `carrier` column (rejected and quarantined:
  MlBatchRejected) and 2013-W05 with its labels shuffled among its flights, so the champion
  cannot rank them (check_drift: the model signal fires, MlDriftDetected, and the champion's
  ROC AUC on the batch is about 0.5, MlChampionAucBelowFloor);
- stack_alert_probe, a test DAG whose task fails every attempt (AirflowTaskFailingRepeatedly,
  AirflowDagRunFailed);
- the scheduler and the MLflow metrics exporter stopped through supervisord
  (AirflowSchedulerHeartbeatStalled, ScrapeTargetDown);
- MlPipelineRunOverdue fires whenever no ml_pipeline_dag run succeeded for the (compressed)
  schedule allowance, and resolves when the run above succeeds.
Resolved: the processes started again, the train runs, the run succeeds, a drift check of a
normal week (`mlops drift --week 2013-W03`, the operator's CLI) replaces the drifted figures, the
one-off events age out of their windows. The retraining the drift triggers waits in its paused DAG
and is deleted: it would only slow the rest down. Runs last (file order); it restarts what it
stops, also when it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from stack.components import mlflow_metrics_available
from stack.health import supervisor

REPO = Path(__file__).resolve().parents[2]
MLOPS = str(REPO / ".venv" / "bin" / "mlops")
PIPELINE, RETRAIN, PROBE = "ml_pipeline_dag", "model_retraining_dag", "stack_alert_probe"
BAD_WEEK, DRIFTED_WEEK, NORMAL_WEEK = "2013-W04", "2013-W05", "2013-W03"
# Supervisor program names of what the test stops.
HEAVY, SCHEDULER, MLFLOW_EXPORTER = "airflow:worker-heavy1", "airflow:scheduler", "mlflow-metrics"


def _replay_week(week: str) -> pd.DataFrame:
    """One real week of the data set, as `mlops data replay` writes it (into a scratch folder)."""
    with tempfile.TemporaryDirectory(prefix="alert-replay-") as tmp:
        proc = subprocess.run([MLOPS, "data", "replay", "--from", week, "--until", week],
                              env={**os.environ, "MLOPS_DATA_DIR": tmp}, capture_output=True, text=True,
                              timeout=300, cwd=REPO)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return pd.read_csv(Path(tmp) / "landing" / f"{week}.csv", dtype=str, keep_default_na=False)


def _feed_batches(stack) -> None:
    """A batch missing a column and a batch whose labels no longer belong to its flights."""
    landing = stack.cfg.data_dir / "landing"
    bad = _replay_week(BAD_WEEK).drop(columns=["carrier"])
    bad.to_csv(landing / f"{BAD_WEEK}.csv", index=False)
    drifted = _replay_week(DRIFTED_WEEK)
    known = drifted["arr_delay"] != ""
    shuffled = drifted.loc[known, "arr_delay"].to_numpy()
    np.random.default_rng(13).shuffle(shuffled)
    drifted.loc[known, "arr_delay"] = shuffled
    drifted.to_csv(landing / f"{DRIFTED_WEEK}.csv", index=False)


def _drift_check(stack, week: str) -> subprocess.Popen:
    """Start `mlops drift --week WEEK` against the stack, as an operator runs it (MLflow's viewer
    login, the stack's Pushgateway); `_result` waits for its answer."""
    env = {**os.environ, "MLOPS_DATA_DIR": str(stack.cfg.data_dir), "MLFLOW_TRACKING_URI": stack.cfg.mlflow_url,
           "MLFLOW_TRACKING_USERNAME": stack.cfg.env["MLFLOW_VIEWER_USER"],
           "MLFLOW_TRACKING_PASSWORD": stack.cfg.env["MLFLOW_VIEWER_PASSWORD"],
           "MLOPS_MODEL_NAME": stack.cfg.env["MLOPS_MODEL_NAME"], "MLOPS_PUSHGATEWAY_URL": stack.cfg.pushgateway_url,
           **dict(zip(("MLOPS_PUSHGATEWAY_USER", "MLOPS_PUSHGATEWAY_PASSWORD"),
                      stack.cfg.web_login("pushgateway", "pusher")))}
    return subprocess.Popen([MLOPS, "drift", "--week", week], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    return json.loads(out)


def _firing(stack) -> set[str]:
    resp = requests.get(f"{stack.cfg.prometheus_url}/api/v1/alerts", timeout=30)
    return {a["labels"]["alertname"] for a in resp.json()["data"]["alerts"] if a["state"] == "firing"}


def _wait_task(stack, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = [t for t in stack.task_instances(dag_id, run_id) if t["task_id"] == task_id]
        if found and found[0]["state"] in states:
            return found[0]
        assert time.monotonic() < deadline, f"{dag_id}.{task_id} not in {states} after {timeout} s: {found}"
        time.sleep(1)


def _wait_parsed(stack, dag_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while stack.api("GET", f"/dags/{dag_id}").status_code != 200:
        assert time.monotonic() < deadline, f"{dag_id} not parsed within {timeout} s"
        time.sleep(1)


def _pause(stack, dag_id: str, paused: bool) -> None:
    resp = stack.api("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})
    assert resp.status_code == 200, resp.text


@pytest.fixture()
def restored(dags_ready):
    """Whatever the test stops or pauses is running again afterwards, also when it fails."""
    stack = dags_ready
    rpc = supervisor(stack.cfg).supervisor
    yield rpc
    for program in (HEAVY, SCHEDULER, MLFLOW_EXPORTER):
        if rpc.getProcessInfo(program)["statename"] != "RUNNING":
            rpc.startProcess(program)
    # A retraining the drifted batch triggered waits in the paused DAG: never let it start.
    for run in stack.api("GET", f"/dags/{RETRAIN}/dagRuns", params={"state": "queued"}).json()["dag_runs"]:
        stack.api("DELETE", f"/dags/{RETRAIN}/dagRuns/{run['dag_run_id']}")
    _pause(stack, RETRAIN, False)


def test_every_alert_reaches_the_webhook_and_resolves(dags_ready, runs, restored) -> None:
    stack, rpc, hook = dags_ready, restored, dags_ready.alerts
    assert mlflow_metrics_available()  # its exporter is the scrape target this test stops
    started = time.monotonic()
    t0 = time.time()
    _wait_parsed(stack, PROBE)
    # The drift of the session's summer week (runs) is still firing: a normal week's check ends it
    # (meanwhile), so that the drifted batch below makes it fire anew.
    was_drifting = "MlDriftDetected" in _firing(stack)
    first_check = _drift_check(stack, NORMAL_WEEK)

    _pause(stack, RETRAIN, True)  # the drift below triggers a retraining: keep it from running
    _feed_batches(stack)
    rpc.stopProcess(HEAVY)
    t_fed = time.time()
    probe_run = stack.trigger(PROBE)
    ml_run = stack.trigger(PIPELINE, role="ml")
    assert stack.wait_run(PROBE, probe_run, timeout=180)["state"] == "failed"
    tries = _wait_task(stack, PROBE, probe_run, "always_fails", {"failed"})
    assert tries["try_number"] == 3, tries  # two retries, then failed for good
    _wait_task(stack, PIPELINE, ml_run, "train", {"queued"})
    # The training waits for a heavy worker: the scheduler reports it queued (every 5 s here).
    fired = {
        "AirflowQueueHasNoWorker": hook.wait("AirflowQueueHasNoWorker", "firing", t_fed, queue="heavy"),
        "AirflowTasksQueuedTooLong": hook.wait("AirflowTasksQueuedTooLong", "firing", t_fed, queue="heavy",
                                               dag_id=PIPELINE, task_id="train"),
        "AirflowDagRunFailed": hook.wait("AirflowDagRunFailed", "firing", t_fed, dag_id=PROBE),
        "AirflowTaskFailingRepeatedly": hook.wait("AirflowTaskFailingRepeatedly", "firing", t_fed,
                                                  dag_id=PROBE, task_id="always_fails"),
        "MlBatchRejected": hook.wait("MlBatchRejected", "firing", t_fed),
        # No successful ml_pipeline_dag run for longer than the (compressed) schedule allows.
        "MlPipelineRunOverdue": hook.wait("MlPipelineRunOverdue", "firing", 0, dag_id=PIPELINE),
    }
    assert BAD_WEEK in fired["MlBatchRejected"]["annotations"]["summary"], fired["MlBatchRejected"]
    assert "schema" in fired["MlBatchRejected"]["annotations"]["summary"]
    assert (stack.cfg.data_dir / "quarantine" / f"{BAD_WEEK}.csv").is_file()

    normal = _result(first_check)
    assert normal["drift_detected"] is False and normal["champion_version"], normal["summary"]
    if was_drifting:
        hook.wait("MlDriftDetected", "resolved", since=t0)

    # Then the scheduler and MLflow's metrics exporter down too.
    rpc.stopProcess(SCHEDULER)
    rpc.stopProcess(MLFLOW_EXPORTER)
    t_stopped = time.time()
    fired["AirflowSchedulerHeartbeatStalled"] = hook.wait("AirflowSchedulerHeartbeatStalled", "firing", t_stopped)
    fired["ScrapeTargetDown"] = hook.wait("ScrapeTargetDown", "firing", t_stopped, job="mlflow")
    marks = {"fed, probe failed, queue alerts": t_stopped - t_fed, "scheduler down until its alert": time.time() - t_stopped}

    t_restarted = time.time()
    for program in (MLFLOW_EXPORTER, SCHEDULER):
        rpc.startProcess(program)
    # The heavy worker only once the new scheduler has reported the training queued: Airflow
    # resets to 0 only the per-task gauges its own process sent, and the exporter keeps a gauge's
    # last value, so a task that left the queue before that report would stay "queued" in Prometheus.
    queued = f"airflow.ti.queued.heavy.{PIPELINE}.train:"
    deadline = time.monotonic() + 120
    while not any(t >= t_restarted and line.startswith(queued) for t, line in stack.statsd.lines):
        assert time.monotonic() < deadline, "the restarted scheduler did not report the queued training"
        time.sleep(1)
    rpc.startProcess(HEAVY)
    for name, labels in (("AirflowSchedulerHeartbeatStalled", {}), ("ScrapeTargetDown", {"job": "mlflow"}),
                         ("AirflowQueueHasNoWorker", {"queue": "heavy"}),
                         ("AirflowTasksQueuedTooLong", {"queue": "heavy", "task_id": "train"})):
        hook.wait(name, "resolved", t_restarted, **labels)

    run = stack.wait_run(PIPELINE, ml_run, timeout=420)
    marks["restart until the run succeeded"] = time.time() - t_restarted
    states = {t["task_id"]: t["state"] for t in stack.task_instances(PIPELINE, ml_run)}
    assert run["state"] == "success", states
    drift = stack.api("GET", f"/dags/{PIPELINE}/dagRuns/{ml_run}/taskInstances/check_drift/xcomEntries/drift").json()
    drift = json.loads(drift["value"]) if isinstance(drift["value"], str) else drift["value"]
    assert drift["week"] == DRIFTED_WEEK and "model" in drift["fired"], drift["summary"]
    assert drift["signals"]["model"]["roc_auc"] < 0.6, drift["summary"]
    fired["MlDriftDetected"] = hook.wait("MlDriftDetected", "firing", t_restarted)
    fired["MlChampionAucBelowFloor"] = hook.wait("MlChampionAucBelowFloor", "firing", t_restarted)
    assert "model" in fired["MlDriftDetected"]["annotations"]["description"], fired["MlDriftDetected"]
    hook.wait("MlPipelineRunOverdue", "resolved", t_restarted, dag_id=PIPELINE)

    t_checked = time.time()
    assert _result(_drift_check(stack, NORMAL_WEEK))["drift_detected"] is False
    hook.wait("MlDriftDetected", "resolved", t_checked)
    hook.wait("MlChampionAucBelowFloor", "resolved", t_checked)
    # The one-off events age out of their windows (30 s on the compressed clock).
    hook.wait("AirflowDagRunFailed", "resolved", t_fed, dag_id=PROBE)
    hook.wait("AirflowTaskFailingRepeatedly", "resolved", t_fed, dag_id=PROBE, task_id="always_fails")
    hook.wait("MlBatchRejected", "resolved", t_fed)
    marks["drift check of a normal week, resolutions"] = time.time() - t_checked

    # One route per severity: each alert reached the receiver named after its severity.
    assert {name: (e["receiver"], e["labels"]["severity"]) for name, e in fired.items()} == {
        name: (e["labels"]["severity"],) * 2 for name, e in fired.items()}
    assert {e["labels"]["severity"] for e in fired.values()} == {"critical", "warning"}
    retraining = f"drift__{ml_run}"  # triggered by check_drift, held by the paused DAG
    assert stack.api("GET", f"/dags/{RETRAIN}/dagRuns/{retraining}").json()["state"] == "queued"
    assert stack.api("DELETE", f"/dags/{RETRAIN}/dagRuns/{retraining}").status_code == 204
    print(f"\nalert test: {len(fired)} alerts fired and resolved in {time.monotonic() - started:.0f} s ("
          + ", ".join(f"{k} {v:.0f} s" for k, v in marks.items()) + ")")
