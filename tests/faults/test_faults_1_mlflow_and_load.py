"""MLflow down for a minute while `train` runs and while `deploy_new_model` runs, and meanwhile a
two-minute CPU-bound training on a machine loaded with one busy loop per core.

MLflow errors are no answer (fail closed): both tasks fail and are retried with their normal
retries, nothing is registered or deployed while MLflow is away, and both runs succeed once it is
back; the killed attempts leave no MLflow run RUNNING. The long training is never taken for dead:
its supervisor heartbeats from its own process however busy the training and the machine are.
The retraining deploys its candidate because the Airflow Variable mlops_deploy_margin is -1 (the
operator's lever, as in tests/stack/test_stack_6_lifecycle.py)."""

from __future__ import annotations

import os
import time

import pytest
import requests

from testkit.faultsuite import LONG, PIPELINE, RETRAIN, assert_nothing_half_done, heartbeat_timeouts
from testkit import faults

OUTAGE_S = 60
POOL = "model_registry"


def _pool(fs, slots: int) -> None:
    resp = fs.api.session.patch(f"{fs.cfg.api_url}/api/v2/pools/{POOL}", params={"update_mask": "slots"},
                                json={"name": POOL, "slots": slots, "include_deferred": False}, timeout=30)
    assert resp.status_code == 200, resp.text


def _variable(fs, key: str, value: str | None) -> None:
    base = f"{fs.cfg.api_url}/api/v2/variables"
    if value is None:
        fs.api.session.delete(f"{base}/{key}", timeout=30)
        return
    resp = fs.api.session.post(base, json={"key": key, "value": value}, timeout=30)
    assert resp.status_code in (200, 201), resp.text


def _mlflow_up(fs) -> bool:
    try:
        return requests.get(f"{fs.cfg.mlflow_url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def outage(fault_stack) -> dict:
    fs, api = fault_stack, fault_stack.api
    before = fs.registry()
    _variable(fs, "mlops_deploy_margin", "-1")
    out: dict = {"before": before}
    try:
        retrain = api.trigger(RETRAIN, {"recipes": ["weekly"], "max_rows": 2000})["dag_run_id"]
        week = fs.replay("2013-W06")
        # Close the registry pool while evaluate_new_model holds its slot: deploy_new_model then
        # starts only when MLflow is down (the pipeline's `evaluate` waits too, after its `train`).
        # A poll that sees it done already is still in time: compare_models runs before deploy.
        faults.wait_task(api, RETRAIN, retrain, "evaluate_new_model", {"running", "success"}, timeout=600)
        _pool(fs, 0)
        # The evaluation itself must be over before MLflow goes (it reads the champion there).
        faults.wait_task(api, RETRAIN, retrain, "compare_models", {"success"}, timeout=600)
        waiting = faults.task(api, RETRAIN, retrain, "deploy_new_model")
        assert waiting and waiting["state"] in (None, "scheduled"), f"deploy_new_model started too early: {waiting}"
        # The approval gate (off: approves at once) reads the recorded decision in MLflow first.
        faults.wait_task(api, RETRAIN, retrain, "approve_new_model", {"success"}, timeout=600)
        # The long training takes one heavy slot (the pipeline's `train` the other), on a machine
        # as busy as it gets.
        long_run = api.trigger(LONG, {"seconds": 130})["dag_run_id"]
        out["long"] = faults.wait_task(api, LONG, long_run, "long_training", {"running"}, timeout=300)
        pipeline = api.trigger(PIPELINE)["dag_run_id"]
        with faults.cpu_burners() as burners:
            out["train_running"] = faults.wait_task(api, PIPELINE, pipeline, "train", {"running"}, timeout=600)
            fault = faults.stop(fs.cfg, "mlflow")
            _pool(fs, 1)
            out["deploy_failed"] = faults.wait_task(api, RETRAIN, retrain, "deploy_new_model",
                                                    {"up_for_retry", "failed", "success"}, timeout=OUTAGE_S + 60)
            out["train_failed"] = faults.wait_task(api, PIPELINE, pipeline, "train",
                                                   {"up_for_retry", "failed", "success"}, timeout=OUTAGE_S + 120)
            time.sleep(max(0.0, fault.at + OUTAGE_S - time.time()))
            faults.start(fs.cfg, "mlflow")
            out["back_at"] = time.time()
            faults.wait_for(lambda: _mlflow_up(fs), "MLflow answers again", 120)
            out["champion_after_outage"] = fs.registry().champion
            out["long_run"] = faults.wait_run(api, LONG, long_run, timeout=600)
            out["load"] = os.getloadavg()[0]
            out["burners"] = burners
        out["retrain"] = faults.wait_run(api, RETRAIN, retrain)
        out["pipeline"] = faults.wait_run(api, PIPELINE, pipeline)
        out.update(fault=fault, week=week, retrain_id=retrain, pipeline_id=pipeline, long_id=long_run)
    finally:  # leave the stack as it was, whatever failed
        if not _mlflow_up(fs):
            faults.start(fs.cfg, "mlflow")
            faults.wait_for(lambda: _mlflow_up(fs), "MLflow answers again", 120)
        _pool(fs, 1)
        _variable(fs, "mlops_deploy_margin", None)
    return out


def test_a_live_training_on_a_loaded_machine_is_never_taken_for_dead(fault_stack, outage) -> None:
    fs = fault_stack
    tries = [t for t in faults.tries(fs.api, LONG, outage["long_id"]) if t["task_id"] == "long_training"]
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "success")], tries
    assert tries[0]["duration"] >= 120, tries
    assert outage["long_run"]["state"] == "success"
    assert outage["load"] >= (os.cpu_count() or 1), f"the machine was not loaded: load average {outage['load']}"
    assert not heartbeat_timeouts(fs, LONG, outage["long_id"], "long_training")
    result = fs.xcom(LONG, outage["long_id"], "long_training")
    assert result["seconds"] >= 120 and result["fits"] >= 1, result


def test_mlflow_outage_during_train_is_retried_and_the_run_succeeds(fault_stack, outage) -> None:
    fs = fault_stack
    assert outage["train_failed"]["state"] == "up_for_retry", outage["train_failed"]
    tries = [t for t in faults.tries(fs.api, PIPELINE, outage["pipeline_id"]) if t["task_id"] == "train"]
    assert tries[0]["state"] == "failed" and tries[-1]["state"] == "success", tries
    # Retried by Airflow, not declared dead: the try ended by itself, with MLflow's error.
    assert not heartbeat_timeouts(fs, PIPELINE, outage["pipeline_id"], "train")
    trained = fs.xcom(PIPELINE, outage["pipeline_id"], "train")
    week = outage["week"].rsplit("/", 1)[-1].split(".")[0]
    assert [b.rsplit("/", 1)[-1] for b in trained["batches"]] == [f"{week}.csv"], trained
    assert week in fs.watermark() and week in fs.accepted()


def test_mlflow_outage_during_deploy_is_retried_and_nothing_moves_meanwhile(fault_stack, outage) -> None:
    fs = fault_stack
    assert outage["deploy_failed"]["state"] == "up_for_retry", outage["deploy_failed"]
    assert outage["champion_after_outage"] == outage["before"].champion
    deploy = [t for t in faults.tries(fs.api, RETRAIN, outage["retrain_id"]) if t["task_id"] == "deploy_new_model"]
    assert deploy[0]["state"] == "failed" and deploy[-1]["state"] == "success", deploy
    evaluation = fs.xcom(RETRAIN, outage["retrain_id"], "evaluate_new_model")
    assert evaluation["decision"]["deploy"] is True


def test_mlflow_outage_leaves_nothing_half_done(fault_stack, outage) -> None:
    after = assert_nothing_half_done(fault_stack, outage["before"],
                                     [(RETRAIN, outage["retrain_id"]), (PIPELINE, outage["pipeline_id"])],
                                     trainings=2)
    assert after.champion is not None
