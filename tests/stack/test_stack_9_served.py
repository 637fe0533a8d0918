"""What the prediction service served is measured once the week's labelled batch is accepted, on
the running native stack (issue 21 item 4).

After the session's pipeline made a champion: the flights of a week that has not landed yet go to
/predict (`mlops serve-replay`, as a client would, outcome columns dropped); they are logged in
the `predictions` database (read back with the read-only login the workers get through the
Connection `predictions_db`); then the week lands and ml_pipeline_dag accepts it. Its
`check_drift` measures the model signal on the served predictions and says so
(`source: served`); `served_monitoring_dag` runs for that week (from the `accepted_batches` asset
event, or triggered with the week when no event reaches it) and pushes the realised ROC AUC per
served version to the Pushgateway, where Prometheus reads it. The drift thresholds are raised for
this run only, so no retraining competes with the rest of the session.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]

WEEK = "2013-W45"
MLOPS = str(REPO / ".venv" / "bin" / "mlops")
MONITOR_DAG = "served_monitoring_dag"
QUIET = {"mlops_drift_share": "1.01", "mlops_auc_drop": "1.01", "mlops_label_shift": "1.01"}


def _serving_url(stack) -> str:
    from stack.demo_serving import serving_url

    return serving_url(stack.cfg)


def _champion(stack) -> str:
    from stack.demo_serving import champion_version

    version = champion_version(stack.cfg)
    assert version is not None, "the session's pipeline made no champion"
    return version


def _wait(what: str, probe, timeout: float = 120, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def _set_variables(stack, values: dict[str, str]) -> dict[str, str | None]:
    """Set Airflow Variables; return their previous values (None: not set)."""
    before = {}
    for key, value in values.items():
        old = stack.api("GET", f"/variables/{key}")
        before[key] = old.json()["value"] if old.status_code == 200 else None
        if old.status_code == 200:
            resp = stack.api("PATCH", f"/variables/{key}", json={"key": key, "value": value})
        else:
            resp = stack.api("POST", "/variables", json={"key": key, "value": value})
        assert resp.status_code in (200, 201), resp.text
    return before


def _restore_variables(stack, before: dict[str, str | None]) -> None:
    for key, value in before.items():
        if value is None:
            stack.api("DELETE", f"/variables/{key}")
        else:
            stack.api("PATCH", f"/variables/{key}", json={"key": key, "value": value})


def _xcom(stack, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
    resp = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
    assert resp.status_code == 200, resp.text
    value = resp.json()["value"]
    return json.loads(value) if isinstance(value, str) else value


def _prediction_log_count(stack, week: str) -> int:
    """Rows logged for `week`, read as the monitoring reads them (predictions_reader)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import URL

    url = URL.create("postgresql+psycopg2", username="predictions_reader",
                     password=stack.cfg.env["PREDICTIONS_READER_PASSWORD"], host="127.0.0.1",
                     port=int(stack.cfg.ports["POSTGRES_PORT"]), database="predictions")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM predictions WHERE week = :w"),
                                    {"w": week}).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def served(runs, stack) -> dict:
    """Serve WEEK with the champion, then let the pipeline accept it; what happened."""
    assert runs["ml"]["state"] == "success"
    url, champion = _serving_url(stack), _champion(stack)
    _wait(f"{url} serving the champion v{champion}", lambda: (
        (r := requests.get(f"{url}/health", timeout=5)).status_code == 200
        and str(r.json()["model_version"]) == champion))
    env = {**os.environ, "MLOPS_DATA_DIR": str(stack.cfg.data_dir), "MLOPS_SERVING_URL": url,
           "SERVING_TOKEN": stack.cfg.env["SERVING_TOKEN"]}
    proc = subprocess.run([MLOPS, "serve-replay", "--week", WEEK], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sent = json.loads(proc.stdout)
    # The log is written off the request path, flushed within a second.
    logged = _wait("the predictions logged", lambda: (n := _prediction_log_count(stack, WEEK)) >= sent["rows"] and n,
                   timeout=30)
    before = _set_variables(stack, QUIET)
    try:
        proc = subprocess.run([MLOPS, "data", "replay", "--from", WEEK, "--until", WEEK],
                              env={**os.environ, "MLOPS_DATA_DIR": str(stack.cfg.data_dir)},
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        t0 = time.time()
        run_id = stack.trigger("ml_pipeline_dag", role="ml")
        pipeline = stack.wait_run("ml_pipeline_dag", run_id, timeout=600)
    finally:
        _restore_variables(stack, before)
    assert pipeline["state"] == "success", stack.task_instances("ml_pipeline_dag", run_id)
    drift = _xcom(stack, "ml_pipeline_dag", run_id, "check_drift", key="drift")

    def monitor_run() -> dict | None:
        resp = stack.api("GET", f"/dags/{MONITOR_DAG}/dagRuns", params={"limit": 100})
        assert resp.status_code == 200, resp.text
        runs_ = resp.json()["dag_runs"]
        return next((r for r in runs_ if r["run_type"] == "asset_triggered"
                     and r["queued_at"] and _stamp(r["queued_at"]) >= t0), None)

    try:
        monitor = _wait("an asset-triggered served_monitoring_dag run", monitor_run, timeout=30)
        how = "asset event"
    except AssertionError:
        monitor = {"dag_run_id": stack.trigger(MONITOR_DAG, conf={"week": WEEK}, role="op")}
        how = "triggered with the week (no accepted_batches event reached it)"
    done = stack.wait_run(MONITOR_DAG, monitor["dag_run_id"], timeout=300)
    assert done["state"] == "success", stack.task_instances(MONITOR_DAG, monitor["dag_run_id"])
    results = _xcom(stack, MONITOR_DAG, monitor["dag_run_id"], "monitor_served")
    print(f"served_monitoring_dag run: {how}")
    return {"sent": sent, "logged": logged, "champion": champion, "drift": drift,
            "result": next(r for r in results if r["week"] == WEEK), "how": how}


def _stamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_the_served_week_is_logged_and_measured_per_version(served: dict) -> None:
    sent, result, champion = served["sent"], served["result"], served["champion"]
    assert sent["rows"] > 1000 and sent["model_versions"] == {champion: sent["rows"]}
    assert served["logged"] == sent["rows"]
    assert result["rows_served"] == sent["rows"]
    mine = result["versions"][champion]
    assert mine["rows_served"] == sent["rows"]
    # every labelled flight of the week was served (only refused rows were not)
    assert 0.8 * sent["rows"] < mine["rows_labelled"] <= sent["rows"]
    assert 0.5 < mine["roc_auc"] < 1.0
    assert mine["score_drift"]["method"] and isinstance(mine["score_drift"]["drifted"], bool)


def test_the_drift_check_used_the_served_predictions(served: dict) -> None:
    model = served["drift"]["signals"]["model"]
    assert model["source"] == "served"
    assert model["served_versions"] == [served["champion"]]
    assert model["served_rows"] == served["result"]["versions"][served["champion"]]["rows_labelled"]
    assert model["roc_auc"] == pytest.approx(served["result"]["versions"][served["champion"]]["roc_auc"], abs=1e-9)


def test_the_realised_auc_reaches_the_pushgateway_and_prometheus(served: dict, stack) -> None:
    champion, auc = served["champion"], served["result"]["versions"][served["champion"]]["roc_auc"]
    # The Pushgateway answers logins only (stack/grants.py): read as Prometheus does.
    resp = requests.get(f"{stack.cfg.pushgateway_url}/metrics", auth=stack.cfg.web_login("pushgateway", "prometheus"),
                        timeout=10)
    assert resp.status_code == 200, resp.text[:200]
    text = resp.text
    line = next(l for l in text.splitlines() if l.startswith("mlops_served_roc_auc{")
                and f'version="{champion}"' in l and f'week="{WEEK}"' in l and 'job="serving_monitor"' in l)
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(auc, abs=1e-9)
    query = f'mlops_served_roc_auc{{job="serving_monitor", version="{champion}", week="{WEEK}"}}'

    def seen() -> list:
        resp = requests.get(f"{stack.cfg.prometheus_url}/api/v1/query", params={"query": query}, timeout=10)
        return resp.json()["data"]["result"]

    (series,) = _wait("Prometheus scraping the realised ROC AUC", seen, timeout=60)
    assert float(series["value"][1]) == pytest.approx(auc, abs=1e-9)


def test_every_serving_panel_has_data_after_a_served_week(served: dict, stack) -> None:
    """The ML dashboard's panels of what was served (left out of test_stack_8_observability's
    check, which runs before any request) draw data once a week was served and measured."""
    from testkit.grafana import has_value, panel_targets, serving_panel

    # The server-error share has a series only once a 5xx was answered: a healthy run has none.
    no_errors = {("ml-model.json", "Server error share", "A")}
    targets = [(key, expr) for key, expr in panel_targets() if serving_panel(expr) and key not in no_errors]
    assert len(targets) >= 8
    start = time.time() - 3600

    def empty() -> list:
        return [key for key, expr in targets if not has_value(stack.cfg.prometheus_url, expr, start, time.time())]

    deadline = time.monotonic() + 60  # a few scrapes after the monitoring's push
    while empty() and time.monotonic() < deadline:
        time.sleep(5)
    assert not empty(), empty()

