"""The approval gate, the lifecycle's asset events and the Op-role hardening (issue 25; issue 22
items 4 and 5) on the running stack, over the REST API.

Retrainings here train one recipe on a few hundred rows (a distinct ``max_rows`` each, so each
registers its own candidate) and are forced to propose a deploy with the Variable
``mlops_deploy_margin = -1``. The gate is switched on with the Variable
``mlops_require_approval``; every test removes the Variables it set."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from threading import Thread

import pytest
import requests

RETRAIN = "model_retraining_dag"
PIPELINE = "ml_pipeline_dag"
GATE = "approve_new_model"


def _champion(stack) -> str | None:
    resp = requests.get(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/registered-models/alias",
                        params={"name": stack.cfg.env["MLOPS_MODEL_NAME"], "alias": "champion"},
                        auth=stack.mlflow_login("viewer"), timeout=30)
    assert resp.status_code in (200, 400, 404), resp.text
    return resp.json()["model_version"]["version"] if resp.status_code == 200 else None


def _version_tags(stack, version: str) -> dict[str, str]:
    resp = requests.get(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/model-versions/get",
                        params={"name": stack.cfg.env["MLOPS_MODEL_NAME"], "version": version},
                        auth=stack.mlflow_login("viewer"), timeout=30)
    assert resp.status_code == 200, resp.text
    return {t["key"]: t["value"] for t in resp.json()["model_version"].get("tags", [])}


def _xcom(stack, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
    resp = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
    assert resp.status_code == 200, resp.text
    value = resp.json()["value"]
    return json.loads(value) if isinstance(value, str) else value


def _states(stack, dag_id: str, run_id: str) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in stack.task_instances(dag_id, run_id)}


def _wait_state(stack, dag_id: str, run_id: str, task_id: str, states: set[str],
                timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = _states(stack, dag_id, run_id).get(task_id)
        if state in states:
            return state
        assert time.monotonic() < deadline, f"{task_id} still {state}, not in {states}"
        time.sleep(1)


def _set_variable(stack, key: str, value: str) -> None:
    resp = stack.api("POST", "/variables", json={"key": key, "value": value})
    if resp.status_code == 409:
        resp = stack.api("PATCH", f"/variables/{key}", json={"key": key, "value": value})
    assert resp.status_code in (200, 201), resp.text


@pytest.fixture()
def gate_on(dags_ready, runs) -> Iterator:
    """Gate on and a deploy always proposed (margin -1) for the duration of one test."""
    stack = dags_ready
    _set_variable(stack, "mlops_require_approval", "true")
    _set_variable(stack, "mlops_deploy_margin", "-1")
    try:
        yield stack
    finally:
        for key in ("mlops_require_approval", "mlops_deploy_margin", "mlops_approval_timeout"):
            stack.api("DELETE", f"/variables/{key}")


def _hitl_api(stack, role: str | None):
    """The official client's TaskInstanceApi as ``role`` (None: no token)."""
    import airflow_client.client as airflow_client
    from airflow_client.client.api import task_instance_api

    config = airflow_client.Configuration(host=stack.cfg.api_url,
                                          access_token=stack.token(role) if role else None)
    return task_instance_api.TaskInstanceApi(airflow_client.ApiClient(config))


def _answer(stack, role: str | None, run_id: str, option: str, reason: str = "") -> int:
    """PATCH the gate's hitlDetails as ``role``; the HTTP status."""
    from airflow_client.client.exceptions import ApiException
    from airflow_client.client.models import UpdateHITLDetailPayload

    payload = UpdateHITLDetailPayload(chosen_options=[option],
                                      params_input={"reason": reason} if reason else {})
    try:
        _hitl_api(stack, role).update_hitl_detail(RETRAIN, run_id, GATE, -1, payload)
    except ApiException as err:
        return err.status
    return 200


def _asked(stack, max_rows: int) -> dict:
    """Trigger a one-recipe retraining and wait until its gate asks; the HITL detail."""
    run_id = stack.trigger(RETRAIN, conf={"recipes": ["weekly"], "max_rows": max_rows}, role="op")
    _wait_state(stack, RETRAIN, run_id, GATE, {"awaiting_input", "deferred", "success", "skipped",
                                                "failed", "upstream_failed"})
    detail = _hitl_api(stack, "op").get_hitl_detail(RETRAIN, run_id, GATE, -1)
    return {"run_id": run_id, "detail": detail}


def test_gate_asks_only_op_and_admin_may_answer_and_reject_keeps_the_champion(gate_on) -> None:
    stack = gate_on
    before = _champion(stack)
    asked = _asked(stack, 310)
    run_id, detail = asked["run_id"], asked["detail"]
    assert _states(stack, RETRAIN, run_id)[GATE] == "awaiting_input"
    evaluation = _xcom(stack, RETRAIN, run_id, "evaluate_new_model")
    candidate = evaluation["version"]
    # What is asked: both versions and ROC AUCs on the same holdout week, gain, margin, drift.
    assert detail.options == ["Approve", "Reject"] and detail.defaults == ["Reject"]
    assert f"v{candidate}" in detail.subject
    body = detail.body
    assert f"candidate v{candidate}" in body and f"{evaluation['metrics']['roc_auc']:.4f}" in body
    assert evaluation["holdout_week"] in body and "margin -1.0000" in body and "Gain" in body
    if before:
        assert f"champion v{before}" in body
    # Viewer, the ML engineer and an anonymous call are refused; nothing was answered.
    assert _answer(stack, "viewer", run_id, "Approve") == 403
    assert _answer(stack, "ml", run_id, "Approve") == 403
    assert _answer(stack, None, run_id, "Approve") == 401
    assert _states(stack, RETRAIN, run_id)[GATE] == "awaiting_input"
    # The Op rejects with a reason: nothing deployed, the reason on the candidate.
    assert _answer(stack, "op", run_id, "Reject", "holdout too small this week") == 200
    run = stack.wait_run(RETRAIN, run_id)
    states = _states(stack, RETRAIN, run_id)
    assert run["state"] == "success", states
    assert states["deploy_new_model"] == "skipped" and states["rollback_model"] == "success", states
    assert _champion(stack) == before
    tags = _version_tags(stack, candidate)
    user = stack.login("op")[0]
    assert tags["rejected_reason"] == f"rejected by {user}: holdout too small this week", tags
    rollback = _xcom(stack, RETRAIN, run_id, "rollback_model")
    assert rollback["reason"] == tags["rejected_reason"]
    answered = _hitl_api(stack, "admin").get_hitl_detail(RETRAIN, run_id, GATE, -1)
    assert answered.chosen_options == ["Reject"] and answered.responded_by_user.name == user


def test_op_approves_and_the_candidate_is_deployed(gate_on, capsys) -> None:
    """As `make demo` does it (stack/demo.py answer_gate): print what is asked, approve as Op."""
    from stack import demo

    stack = gate_on
    asked = _asked(stack, 320)
    run_id = asked["run_id"]
    candidate = _xcom(stack, RETRAIN, run_id, "evaluate_new_model")["version"]
    assert _champion(stack) != candidate  # nothing moves while the gate waits
    demo.answer_gate(stack.cfg, run_id)
    printed = capsys.readouterr().out
    assert f"the approval gate asks: Deploy v{candidate}" in printed, printed
    assert f"answered ['Approve'] by {stack.login('op')[0]} (role Op)" in printed, printed
    run = stack.wait_run(RETRAIN, run_id)
    states = _states(stack, RETRAIN, run_id)
    assert run["state"] == "success", states
    assert states["deploy_new_model"] == "success" and states["rollback_model"] == "skipped", states
    assert _champion(stack) == candidate
    approval = _xcom(stack, RETRAIN, run_id, GATE, key="approval")
    assert approval["approved"] is True and approval["by"] == stack.login("op")[0]


def test_no_answer_before_the_timeout_rejects(gate_on) -> None:
    stack = gate_on
    _set_variable(stack, "mlops_approval_timeout", "3")
    before = _champion(stack)
    asked = _asked(stack, 330)
    run_id = asked["run_id"]
    run = stack.wait_run(RETRAIN, run_id, timeout=180)
    states = _states(stack, RETRAIN, run_id)
    assert run["state"] == "success", states
    assert states["deploy_new_model"] == "skipped" and states["rollback_model"] == "success", states
    assert _champion(stack) == before
    candidate = _xcom(stack, RETRAIN, run_id, "evaluate_new_model")["version"]
    assert _version_tags(stack, candidate)["rejected_reason"] == \
        "no answer within the approval timeout (0:00:03)"
    assert _xcom(stack, RETRAIN, run_id, GATE, key="approval")["timed_out"] is True


def test_gate_is_skipped_when_no_deploy_is_proposed(gate_on) -> None:
    stack = gate_on
    stack.api("DELETE", "/variables/mlops_deploy_margin")
    run_id = stack.trigger(RETRAIN, conf={"recipes": ["weekly"], "max_rows": 300,
                                          "shuffle_labels": True}, role="op")
    run = stack.wait_run(RETRAIN, run_id)
    states = _states(stack, RETRAIN, run_id)
    assert run["state"] == "success", states
    assert states[GATE] == "skipped" and states["rollback_model"] == "success", states
    resp = stack.api("GET", f"/dags/{RETRAIN}/dagRuns/{run_id}/hitlDetails")
    assert resp.status_code == 200 and resp.json()["total_entries"] == 0, resp.text


def test_asset_events_of_a_pipeline_run_name_the_week_and_the_version(dags_ready, runs, capsys) -> None:
    from stack import demo
    from stack.api import Airflow

    stack = dags_ready
    ml_run = runs["ml"]["dag_run_id"]
    resp = stack.api("GET", "/assets/events", params={"limit": 100, "source_dag_id": PIPELINE,
                                                      "source_run_id": ml_run})
    assert resp.status_code == 200, resp.text
    events = {}
    for event in resp.json()["asset_events"]:
        events.setdefault(event["name"] or event["uri"], []).append(event)
    accepted = sorted(e["extra"]["week"] for e in events["accepted_batches"])
    assert accepted == sorted(runs["weeks"]), events["accepted_batches"]  # one event per week
    assert events["training_table"][0]["extra"]["week"] == max(runs["weeks"])
    evaluation = _xcom(stack, PIPELINE, ml_run, "evaluate")
    champion = events["champion"][0]["extra"]
    assert champion["candidate_version"] == evaluation["version"] and champion["decision"] == "deploy"
    assert champion["week"] == evaluation["holdout_week"]
    drift = events["drift"][0]["extra"]
    assert drift["week"] == runs["drift_week"] and drift["signals"], drift
    # The asset list shows the lifecycle's producers and the retraining as drift's consumer.
    assets = {a["name"]: a for a in stack.api("GET", "/assets", params={"limit": 100}).json()["assets"]}
    assert {"accepted_batches", "training_table", "champion", "drift"} <= set(assets)
    assert {(t["dag_id"], t["task_id"]) for t in assets["champion"]["producing_tasks"]} >= {
        (PIPELINE, "deploy"), (RETRAIN, "deploy_new_model"), (RETRAIN, "rollback_model")}
    assert (RETRAIN, "backup_current_model") in {
        (t["dag_id"], t["task_id"]) for t in assets["drift"].get("consuming_tasks", [])}
    # What `make demo` prints of them.
    demo.asset_events(Airflow(stack.cfg, *stack.login("admin")), "2000-01-01T00:00:00+00:00")
    printed = capsys.readouterr().out
    assert f"accepted_batches  from {PIPELINE}.validate_data: week={min(runs['weeks'])}" in printed, printed
    assert f"candidate_version={evaluation['version']}" in printed


def _watermark(stack) -> dict:
    return json.loads((stack.cfg.data_dir / "state" / "processed.json").read_text())


def _clear(stack, dag_id: str, run_id: str, task_ids: list[str]) -> None:
    resp = stack.api("POST", f"/dags/{dag_id}/clearTaskInstances", role="op",
                     json={"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids,
                           "only_failed": False, "reset_dag_runs": True})
    assert resp.status_code == 200, resp.text


def _forge(stack, dag_id: str, run_id: str, task_id: str, value) -> None:
    resp = stack.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                     role="op", json={"value": value})
    assert resp.status_code == 200, resp.text


def test_forged_xcoms_move_no_champion_register_no_run_mark_no_week(dags_ready, runs) -> None:
    """Issue 22 item 4: as Op, edit the pipeline run's XComs and clear the tasks that read them."""
    stack = dags_ready
    ml_run = runs["ml"]["dag_run_id"]
    champion, watermark = _champion(stack), _watermark(stack)
    # A margin no honest re-evaluation meets, which the forged scores (gain 0.999) do meet.
    _set_variable(stack, "mlops_deploy_margin", "0.9")
    try:
        _forge_and_clear(stack, ml_run, champion, watermark)
    finally:
        stack.api("DELETE", "/variables/mlops_deploy_margin")
    assert _champion(stack) == champion
    assert _watermark(stack)["weeks"] == watermark["weeks"]


def _forge_and_clear(stack, ml_run: str, champion: str, watermark: dict) -> None:
    evaluation = _xcom(stack, PIPELINE, ml_run, "evaluate")
    versions = _versions(stack)
    train = _xcom(stack, PIPELINE, ml_run, "train")
    other = next(v["version"] for v in versions if v["version"] != champion)
    foreign = next(r for r in _training_runs(stack) if r != train["run_id"])
    forged_batch = str(stack.cfg.data_dir / "landing" / "2013-W40.csv")
    # A forged decision for another version, a forged run id, forged batch lists.
    _forge(stack, PIPELINE, ml_run, "evaluate", {
        **evaluation, "version": other, "champion_version": champion,
        "metrics": {"roc_auc": 0.999}, "champion_metrics": {"roc_auc": 0.0},
        "decision": {**evaluation["decision"], "deploy": True, "version": other, "reason": "forged"},
        "batches": [forged_batch]})
    _forge(stack, PIPELINE, ml_run, "preprocess", {"batches": [forged_batch]})
    _clear(stack, PIPELINE, ml_run, ["approve_deploy", "deploy"])
    stack.wait_run(PIPELINE, ml_run)
    assert _champion(stack) == champion
    assert _watermark(stack)["weeks"] == watermark["weeks"]
    # train with a forged batch list: the watermark keeps its weeks.
    _forge(stack, PIPELINE, ml_run, "preprocess", {"batches": [forged_batch]})
    _clear(stack, PIPELINE, ml_run, ["train"])
    stack.wait_run(PIPELINE, ml_run)
    assert _watermark(stack)["weeks"] == watermark["weeks"]
    # evaluate with a forged run id (another version's training run): refused, nothing registered.
    _forge(stack, PIPELINE, ml_run, "train", {**train, "run_id": foreign, "version": other})
    _clear(stack, PIPELINE, ml_run, ["evaluate"])
    stack.wait_run(PIPELINE, ml_run)
    # (The run's state follows its leaf tasks, which kept theirs: the refusal shows on evaluate.)
    states = _states(stack, PIPELINE, ml_run)
    assert states["evaluate"] == "failed", (states, foreign, _xcom(stack, PIPELINE, ml_run, "train"))
    assert len(_versions(stack)) == len(versions)
    assert _champion(stack) == champion
    # The run's own XCom back: evaluate succeeds again, the run ends as it was.
    _forge(stack, PIPELINE, ml_run, "train", train)
    _clear(stack, PIPELINE, ml_run, ["evaluate"])
    assert stack.wait_run(PIPELINE, ml_run)["state"] == "success"


def _training_runs(stack) -> list[str]:
    """Run ids of the finished MLflow runs of the model's experiment (the retrainings' recipes)."""
    auth, base = stack.mlflow_login("viewer"), f"{stack.cfg.mlflow_url}/api/2.0/mlflow"
    name = stack.cfg.env["MLOPS_MODEL_NAME"]
    exp = requests.get(f"{base}/experiments/get-by-name", params={"experiment_name": name}, auth=auth,
                       timeout=30)
    assert exp.status_code == 200, exp.text
    resp = requests.post(f"{base}/runs/search", auth=auth, timeout=30,
                         json={"experiment_ids": [exp.json()["experiment"]["experiment_id"]],
                               "filter": "attributes.status = 'FINISHED'", "max_results": 100})
    assert resp.status_code == 200, resp.text
    return [r["info"]["run_id"] for r in resp.json().get("runs", [])]


def _versions(stack) -> list[dict]:
    model = stack.cfg.env["MLOPS_MODEL_NAME"]
    resp = requests.get(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/model-versions/search",
                        params={"filter": f"name = '{model}'"}, auth=stack.mlflow_login("viewer"), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["model_versions"]


class _Harvester(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        _Harvester.seen.append(dict(self.headers))
        self.send_response(404)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_redirected_mlflow_connection_is_refused_and_bootstrap_restores_it(dags_ready, runs) -> None:
    """Issue 22 item 5: an Op points mlflow_default's extra tracking_uri at their own server."""
    from stack.ctl import bootstrap

    stack = dags_ready
    server = HTTPServer(("127.0.0.1", 0), _Harvester)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        before = stack.api("GET", "/connections/mlflow_default").json()
        resp = stack.api("PATCH", "/connections/mlflow_default", role="op",
                         params={"update_mask": "extra"},
                         json={"connection_id": "mlflow_default", "conn_type": before["conn_type"],
                               "extra": json.dumps({"tracking_uri": f"http://127.0.0.1:{server.server_port}"})})
        assert resp.status_code == 200, resp.text
        run_id = stack.trigger(RETRAIN, conf={"recipes": ["weekly"], "max_rows": 300}, role="op")
        run = stack.wait_run(RETRAIN, run_id, timeout=180)
        assert run["state"] == "failed"
        assert _states(stack, RETRAIN, run_id)["backup_current_model"] == "failed"
        assert _Harvester.seen == []  # the login never left for the other server
    finally:
        bootstrap(stack.cfg)
        server.shutdown()
    after = stack.api("GET", "/connections/mlflow_default").json()
    assert not after.get("extra"), after
    assert (after["host"], after["port"], after["login"]) == (before["host"], before["port"], before["login"])
