"""The lifecycle on the running stack: a retraining that rolls back (a useless candidate, the
champion unchanged) and one that deploys while MLflow is down during `deploy_new_model`: the task
fails and is retried by Airflow (the outage is never read as "no champion"), the champion does not
move while MLflow is away, and the run completes once MLflow is back.

The deploying run is forced through with the Airflow Variable mlops_deploy_margin = -1 (the
operator's lever): the two candidates the stack can train on its four replayed weeks are too
close to the champion for a deterministic honest win (tests/dags shows one)."""

from __future__ import annotations

import time

import pytest
import requests

from stack.health import supervisor

RETRAIN = "model_retraining_dag"
POOL = "model_registry"


def _champion(stack) -> str | None:
    resp = requests.get(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/registered-models/alias",
                        params={"name": stack.cfg.env["MLOPS_MODEL_NAME"], "alias": "champion"},
                        auth=stack.mlflow_login("viewer"), timeout=30)
    assert resp.status_code in (200, 400, 404), resp.text
    return resp.json()["model_version"]["version"] if resp.status_code == 200 else None


def _xcom(stack, run_id: str, task_id: str) -> dict:
    resp = stack.api("GET", f"/dags/{RETRAIN}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
    assert resp.status_code == 200, resp.text
    value = resp.json()["value"]
    import json

    return json.loads(value) if isinstance(value, str) else value


def _task(stack, run_id: str, task_id: str) -> dict:
    return next(t for t in stack.task_instances(RETRAIN, run_id) if t["task_id"] == task_id)


def _wait_task(stack, run_id: str, task_id: str, states: set[str], timeout: float = 300,
               poll: float = 0.2) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = [t for t in stack.task_instances(RETRAIN, run_id) if t["task_id"] == task_id]
        if found and found[0]["state"] in states:
            return found[0]
        assert time.monotonic() < deadline, f"{task_id} not in {states} after {timeout} s: {found}"
        time.sleep(poll)


def _set_pool(stack, slots: int) -> None:
    resp = stack.api("PATCH", f"/pools/{POOL}", params={"update_mask": "slots"},
                     json={"name": POOL, "slots": slots, "include_deferred": False})
    assert resp.status_code == 200, resp.text


def _wait_mlflow(stack, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{stack.cfg.mlflow_url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "MLflow did not come back"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def rolled_back(dags_ready, runs) -> dict:
    """A retraining on 300 label-shuffled rows: its candidate cannot beat the champion."""
    stack = dags_ready
    before = _champion(stack)
    run_id = stack.trigger(RETRAIN, conf={"max_rows": 300, "shuffle_labels": True,
                                          "recipes": ["recent_6"]})
    return {"run": stack.wait_run(RETRAIN, run_id), "champion_before": before}


def test_a_useless_candidate_is_rolled_back_and_the_champion_kept(dags_ready, rolled_back) -> None:
    stack, run = dags_ready, rolled_back["run"]
    states = {t["task_id"]: t["state"] for t in stack.task_instances(RETRAIN, run["dag_run_id"])}
    assert run["state"] == "success", states
    assert states["rollback_model"] == "success" and states["deploy_new_model"] == "skipped", states
    evaluation = _xcom(stack, run["dag_run_id"], "evaluate_new_model")
    assert evaluation["recipe"] == "recent_6" and evaluation["decision"]["deploy"] is False
    rollback = _xcom(stack, run["dag_run_id"], "rollback_model")
    assert rollback["reason"] == evaluation["decision"]["reason"]
    assert "does not beat the margin" in rollback["reason"]
    assert _champion(stack) == rolled_back["champion_before"] is not None


def test_deploy_fails_closed_while_mlflow_is_down_and_completes_once_back(dags_ready, rolled_back) -> None:
    stack = dags_ready
    champion = _champion(stack)
    resp = stack.api("POST", "/variables", json={"key": "mlops_deploy_margin", "value": "-1"})
    assert resp.status_code in (200, 201), resp.text
    procs = supervisor(stack.cfg).supervisor
    try:
        run_id = stack.trigger(RETRAIN, conf={"recipes": ["weekly", "slow_learner"]})
        # Hold the registry pool while MLflow goes down, so deploy_new_model starts only then.
        # The approval gate before it (off: approves at once) reads the recorded decision in
        # MLflow: MLflow goes only after it.
        _wait_task(stack, run_id, "approve_new_model", {"queued", "running", "success"})
        _set_pool(stack, 0)
        _wait_task(stack, run_id, "approve_new_model", {"success"})
        procs.stopProcess("mlflow")
        _set_pool(stack, 1)
        failed = _wait_task(stack, run_id, "deploy_new_model", {"up_for_retry", "failed", "success"},
                            poll=1)
        assert failed["state"] == "up_for_retry", failed  # retried, not failed for good
        assert failed["try_number"] == 1
        procs.startProcess("mlflow")
        _wait_mlflow(stack)
        assert _champion(stack) == champion  # nothing moved during the outage
        run = stack.wait_run(RETRAIN, run_id)
    finally:  # leave the stack as it was, whatever failed
        if procs.getProcessInfo("mlflow")["statename"] != "RUNNING":
            procs.startProcess("mlflow")
        stack.api("PATCH", f"/pools/{POOL}", params={"update_mask": "slots"},
                  json={"name": POOL, "slots": 1, "include_deferred": False})
        stack.api("DELETE", "/variables/mlops_deploy_margin")
    assert run["state"] == "success"
    deployed = _task(stack, run_id, "deploy_new_model")
    assert deployed["state"] == "success" and deployed["try_number"] == 2, deployed
    evaluation = _xcom(stack, run_id, "evaluate_new_model")
    assert evaluation["decision"]["deploy"] is True and evaluation["decision"]["margin"] == -1.0
    assert {c["recipe"] for c in evaluation["candidates"]} == {"weekly", "slow_learner"}
    result = _xcom(stack, run_id, "deploy_new_model")
    new = _champion(stack)
    if evaluation["version"] == champion:  # the best recipe's candidate is the champion itself
        assert result["deployed"] is False and new == champion
    else:
        assert result["deployed"] is True and new == evaluation["version"] != champion
