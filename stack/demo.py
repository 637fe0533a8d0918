"""`make demo`: bring the native stack up and show the lifecycle on it, through the REST API.

1. replay 2013-W01..DEMO_UNTIL (default 2013-W08) and run ml_pipeline_dag: the first champion;
2. send the flights of the week DEMO_DRIFT_WEEK (default 2013-W17) to the prediction service's
   /predict, where the first champion answers them (stack/demo_serving.py); then replay that
   week (one on which a drift signal fires against that champion with the default thresholds,
   see the README) and run ml_pipeline_dag again: its check_drift (on the served predictions)
   triggers model_retraining_dag, which trains every recipe and deploys or rolls back; the
   service follows the alias, and served_monitoring_dag joins what was served with the week's
   labels (the version that served, the swap, the realised ROC AUC are printed);
3. print which drift signals fired and by how much, the recipes tried with their validation and
   holdout scores, the outcome (deploy or rollback) and its reason, the champion;
   With the approval gate on for this round (Variable ``mlops_require_approval``), a retraining
   that proposes a deploy waits for an answer: the demo prints what the gate asks, approves it
   over the REST API as the Op user and prints who answered; the gate is off again afterwards;
4. print the lifecycle's asset events (``GET /api/v2/assets/events``) and the Prometheus queries (with their values over the runs just made, and graph URLs) of the
   champion's ROC AUC and the drift share, which the steps pushed to the Pushgateway, and the
   alerts that are firing (Alertmanager sends them to the receivers of `.env`).

The stack stays up until `make down`. A second `make demo` finds the batches processed and says
how to replay other weeks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

from mlops import drift_signals
from stack import alerting, demo_serving, envfile
from stack.api import Airflow, flower_workers
from stack.config import VENV_BIN, StackConfig, load
from stack.ctl import StackError, cmd_up

DAG_ID = "ml_pipeline_dag"
RETRAIN_DAG_ID = "model_retraining_dag"


def _seconds(start: str | None, end: str | None) -> float | None:
    """Seconds between two API timestamps."""
    if not start or not end:
        return None
    return (datetime.fromisoformat(end.replace("Z", "+00:00")) -
            datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()


def replay(cfg: StackConfig, until: str, first: str | None = None) -> list[str]:
    """Write the weekly batches `first`..`until` into the landing folder with the mlops CLI."""
    env = {**os.environ, "MLOPS_DATA_DIR": str(cfg.data_dir)}
    proc = subprocess.run([str(VENV_BIN / "mlops"), "data", "replay", "--until", until,
                           *(["--from", first] if first else [])], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"mlops data replay {first or ''}..{until} failed:\n{proc.stdout}{proc.stderr}")
    return sorted(p.stem for p in (cfg.data_dir / "landing").glob("*.csv"))


def task_label(ti: dict) -> str:
    """A task instance's name: its task id, with ``[map index]`` for a mapped one."""
    index = ti.get("map_index", -1)
    return ti["task_id"] if index is None or index < 0 else f"{ti['task_id']}[{index}]"


def follow(api: Airflow, dag_id: str, run_id: str, timeout: float = 1800) -> dict:
    """Print each task instance's state changes until the run ends; return the run."""
    seen: dict[str, str] = {}
    started = time.monotonic()
    while True:
        for ti in api.task_instances(dag_id, run_id):
            state = ti["state"] or "none"
            label = task_label(ti)
            if seen.get(label) != state:
                seen[label] = state
                print(f"  [{time.monotonic() - started:6.1f} s] {dag_id}.{label}: {state}", flush=True)
        run = api.run(dag_id, run_id)
        if run["state"] in ("success", "failed"):
            return run
        if time.monotonic() - started > timeout:
            raise StackError(f"{dag_id} {run_id} still {run['state']} after {timeout:.0f} s")
        time.sleep(2)


def task_table(cfg: StackConfig, api: Airflow, run: dict) -> None:
    """Print state, duration, queue and worker of every task of `run`."""
    workers = flower_workers(cfg)
    print(f"\n{run['dag_id']} run {run['dag_run_id']}: {run['state'].upper()} "
          f"in {(_seconds(run['start_date'], run['end_date']) or 0):.1f} s")
    print(f"  {'TASK':<22} {'STATE':<10} {'DURATION':>9}  {'QUEUE':<6} WORKER")
    for ti in sorted(api.task_instances(run["dag_id"], run["dag_run_id"]), key=lambda t: t["start_date"] or "~"):
        duration = f"{ti['duration']:.1f} s" if ti.get("duration") is not None else "-"
        worker = workers.get((run["dag_id"], run["dag_run_id"], ti["task_id"]), "-")
        print(f"  {task_label(ti):<22} {ti['state'] or '-':<10} {duration:>9}  {ti['queue']:<6} {worker}")


def champion(cfg: StackConfig) -> None:
    """Print the champion model version and its metrics from the MLflow registry."""
    name = cfg.env["MLOPS_MODEL_NAME"]
    viewer = (cfg.env["MLFLOW_VIEWER_USER"], cfg.env["MLFLOW_VIEWER_PASSWORD"])  # MLflow needs a login
    resp = requests.get(f"{cfg.mlflow_url}/api/2.0/mlflow/registered-models/alias",
                        params={"name": name, "alias": "champion"}, auth=viewer, timeout=30)
    if resp.status_code != 200:
        print(f"\nchampion: none yet for model {name} (HTTP {resp.status_code})")
        return
    version = resp.json()["model_version"]
    run = requests.get(f"{cfg.mlflow_url}/api/2.0/mlflow/runs/get", params={"run_id": version["run_id"]},
                       auth=viewer, timeout=30).json()["run"]
    metrics = {m["key"]: round(m["value"], 4) for m in run["data"].get("metrics", [])}
    print(f"\nchampion: {name} version {version['version']} (aliases {version.get('aliases', [])}, "
          f"run {version['run_id']})")
    print(f"  metrics: {json.dumps(metrics, sort_keys=True)}")


def xcom(api: Airflow, run: dict, task_id: str, key: str = "return_value") -> Any:
    """The XCom value of one task of a run (None when it has none)."""
    resp = api.session.get(f"{api.base}/api/v2/dags/{run['dag_id']}/dagRuns/{run['dag_run_id']}"
                           f"/taskInstances/{task_id}/xcomEntries/{key}", timeout=30)
    if resp.status_code != 200:
        return None
    value = resp.json().get("value")
    return json.loads(value) if isinstance(value, str) else value


def drift(api: Airflow, run: dict) -> dict | None:
    """Print the drift signals check_drift measured in `run`; return the result."""
    result = xcom(api, run, "check_drift", key="drift")
    if not result:
        print("\ndrift: not measured in this run (no new batch reached check_drift)")
        return None
    fired = ", ".join(result["fired"]) or "none"
    print(f"\ndrift of {result['week']} against {result['reference']}: signals fired: {fired}")
    for name in drift_signals.names():  # the signal table: every signal of the result, in words
        sig = result["signals"].get(name)
        if sig is None:
            continue
        mark = "FIRED" if sig["fired"] else "-"
        print(f"  {name:<6} {mark:<6} {drift_signals.described(name, sig)} (threshold {sig['threshold']})")
    print(f"  report: {result['report_html']}")
    return result


def retraining(api: Airflow, run: dict) -> None:
    """Print the recipes a retraining run tried, with their scores, and its outcome."""
    evaluation = xcom(api, run, "evaluate_new_model")
    if not evaluation:
        print(f"\n{RETRAIN_DAG_ID}: no evaluation (run {run['state']})")
        return
    print(f"\nrecipes tried by {RETRAIN_DAG_ID} (chosen on validation week, compared on the holdout):")
    print(f"  {'RECIPE':<18} {'VALIDATION':>17} {'HOLDOUT':>17}")
    for cand in evaluation["candidates"]:
        chosen = "  <- chosen" if cand["recipe"] == evaluation["recipe"] else ""
        val = cand["validation_roc_auc"]
        print(f"  {cand['recipe']:<18} {cand['validation_week'] or '-':>8} "
              f"{val if val is None else round(val, 4)!s:>8} {cand['holdout_week']:>8} "
              f"{cand['holdout_roc_auc']:.4f}{chosen}")
    decision = evaluation["decision"]
    outcome = "deploy_new_model" if decision["deploy"] else "rollback_model"
    done = xcom(api, run, outcome) or {}
    print(f"  outcome: {outcome.split('_')[0].upper()} v{evaluation['version']} "
          f"({evaluation['recipe']}): {done.get('reason') or decision['reason']}")


# What `make demo` shows in Prometheus: (what, PromQL), all pushed by the ML steps. The demo runs
# the flights, whose pushes carry no `dataset` label (another data set's do: mlops.metrics).
DEMO_QUERIES = (
    ("champion ROC AUC on its holdout week (each champion)", 'max(mlops_champion_holdout_roc_auc{dataset=""})'),
    ("champion ROC AUC on each new batch (drift check)", 'max(mlops_drift_champion_roc_auc{dataset=""})'),
    ("drift share of each checked batch", 'max(mlops_drift_share{dataset=""})'),
)


def _prometheus(cfg: StackConfig, path: str, **params: Any) -> Any:
    resp = requests.get(f"{cfg.prometheus_url}{path}", params=params, timeout=30)
    resp.raise_for_status()
    return resp.json()["data"]


def wait_evaluated(cfg: StackConfig, since: float, timeout: float = 90) -> None:
    """Wait until Prometheus has scraped a drift check pushed after `since` and evaluated its
    rules on it (one scrape and one evaluation interval at most)."""
    deadline = time.monotonic() + timeout
    scraped = None
    while time.monotonic() < deadline:
        pushed = _prometheus(cfg, "/api/v1/query", query='max(push_time_seconds{job="mlops_drift"})')["result"]
        if scraped is None and pushed and float(pushed[0]["value"][1]) >= since:
            scraped = time.time()
        if scraped is not None:
            groups = _prometheus(cfg, "/api/v1/rules")["groups"]
            evaluated = [g["lastEvaluation"] for g in groups if g["name"] == "ml"]
            if evaluated and datetime.fromisoformat(evaluated[0][:26].rstrip("Z") + "+00:00").timestamp() > scraped:
                return
        time.sleep(1)
    print(f"  (Prometheus has not evaluated a drift check newer than the demo after {timeout:.0f} s)")


def metrics_and_alerts(cfg: StackConfig, started: float) -> None:
    """Print the demo's Prometheus queries with their values over the runs just made, graph URLs,
    and the alerts firing now."""
    wait_evaluated(cfg, started)
    minutes = max(5, int((time.time() - started) / 60) + 2)
    print(f"\nML results in Prometheus ({cfg.prometheus_url}; pushed by the steps to the Pushgateway "
          f"{cfg.pushgateway_url}):")
    for what, query in DEMO_QUERIES:
        result = _prometheus(cfg, "/api/v1/query_range", query=query, start=started, end=time.time(), step=15)["result"]
        values: list[str] = []
        for _, value in (result[0]["values"] if result else []):
            text = f"{float(value):.4f}"
            if not values or values[-1] != text:
                values.append(text)
        url = f"{cfg.prometheus_url}/graph?" + urlencode({"g0.expr": query, "g0.tab": "0",
                                                           "g0.range_input": f"{minutes}m"})
        print(f"  {what}:\n    {query}  ->  {' -> '.join(values) or 'no value in this demo'}\n    {url}")
    alerts = sorted(_prometheus(cfg, "/api/v1/alerts")["alerts"], key=lambda a: a["labels"]["alertname"])
    firing = [a for a in alerts if a["state"] == "firing"]
    sends = alerting.delivery(alerting.render(alerting.load_template(), cfg.env))
    print(f"\nalerts firing ({len(firing)}; Alertmanager {cfg.alertmanager_url}, receivers: "
          + ("; ".join(f"{n}: {', '.join(k)}" for n, k in sends.items() if k)
             or "none, set ALERT_WEBHOOK_URL or ALERT_EMAIL_TO in .env") + "):")
    for alert in firing:
        print(f"  {alert['labels']['alertname']} ({alert['labels'].get('severity', '-')}): "
              f"{alert['annotations'].get('summary', '')}")
    if not firing:
        print("  none")
    print(f"  all rules and their state: {cfg.prometheus_url}/alerts")


def logins(cfg: StackConfig) -> None:
    """Print URLs and logins of the UIs."""
    e = cfg.env
    print("\nUIs (the stack keeps running; `make down` stops it):")
    print(f"  Airflow UI  {cfg.api_url}   admin {e['AIRFLOW_ADMIN_USER']} / {e['AIRFLOW_ADMIN_PASSWORD']}")
    for role, key in (("op", "OP"), ("ML engineer", "ML"), ("viewer", "VIEWER")):
        print(f"              {role:<12} {e[f'AIRFLOW_{key}_USER']} / {e[f'AIRFLOW_{key}_PASSWORD']}")
    print(f"  Flower      {cfg.flower_url}   {e['FLOWER_USER']} / {e['FLOWER_PASSWORD']}")
    print(f"  MLflow      {cfg.mlflow_url}   admin {e['MLFLOW_ADMIN_USER']} / {e['MLFLOW_ADMIN_PASSWORD']}, "
          f"read-only {e['MLFLOW_VIEWER_USER']} / {e['MLFLOW_VIEWER_PASSWORD']}")
    print(f"  Prometheus  {cfg.prometheus_url}   (no login)")
    print(f"  Alertmanager {cfg.alertmanager_url}   {' / '.join(cfg.web_login('alertmanager', 'admin'))}; "
          f"Pushgateway {cfg.pushgateway_url} (pushes: {cfg.web_login('pushgateway', 'pusher')[0]}, see the env file)")
    print(f"  (all from {cfg.env_file})")


def pipeline_round(cfg: StackConfig, api: Airflow, label: str, weeks: tuple[str, str],
                   gated: bool = False) -> tuple[dict, dict | None]:
    """Replay `weeks` (first, last), run ml_pipeline_dag, follow the retraining it triggers
    (`gated`: the approval gate is on; the weekly deploy's gate is answered too)."""
    print(f"\n== {label}: replaying {weeks[0]}..{weeks[1]} into {cfg.data_dir / 'landing'}", flush=True)
    replay(cfg, weeks[1], weeks[0])
    run = api.trigger(DAG_ID)
    print(f"  triggered {DAG_ID} through the REST API: run {run['dag_run_id']}", flush=True)
    if gated:
        answer_gate(cfg, run["dag_run_id"], dag_id=DAG_ID, gate_task="approve_deploy")
    run = follow(api, DAG_ID, run["dag_run_id"])
    retrain_id = f"drift__{run['dag_run_id']}"
    resp = api.session.get(f"{api.base}/api/v2/dags/{RETRAIN_DAG_ID}/dagRuns/{retrain_id}", timeout=30)
    retrain = None
    if resp.status_code == 200:
        print(f"  a drift signal fired: following {RETRAIN_DAG_ID} run {retrain_id}", flush=True)
        answer_gate(cfg, retrain_id)
        retrain = follow(api, RETRAIN_DAG_ID, retrain_id)
    states = {t["task_id"]: t["state"] for t in api.task_instances(DAG_ID, run["dag_run_id"])}
    if states.get("validate_data") == "skipped":
        print(f"  no batch of {weeks[0]}..{weeks[1]} was new (an earlier demo processed them): "
              f"replay other weeks, e.g. `make demo DEMO_DRIFT_WEEK=2013-W38`")
    return run, retrain


# --- the approval gate and the assets (issue 25) -------------------------------------------------
GATE_TASK = "approve_new_model"


def set_gate(api: Airflow, on: bool) -> None:
    """Switch the approval gate with the Variable ``mlops_require_approval`` (off: delete it)."""
    url = f"{api.base}/api/v2/variables"
    if on:
        resp = api.session.post(url, json={"key": "mlops_require_approval", "value": "true"}, timeout=30)
        if resp.status_code == 409:
            resp = api.session.patch(f"{url}/mlops_require_approval",
                                     json={"key": "mlops_require_approval", "value": "true"}, timeout=30)
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"setting mlops_require_approval: HTTP {resp.status_code} {resp.text[:200]}")
    else:
        api.session.delete(f"{url}/mlops_require_approval", timeout=30)


def answer_gate(cfg: StackConfig, run_id: str, timeout: float = 1800, dag_id: str | None = None,
                gate_task: str | None = None) -> None:
    """Wait until a run's gate (default: the retraining's) asks (or is skipped, or the run ends);
    print what is asked, approve as the Op user over the REST API and print who answered."""
    dag_id, gate_task = dag_id or RETRAIN_DAG_ID, gate_task or GATE_TASK
    op = Airflow(cfg, cfg.env["AIRFLOW_OP_USER"], cfg.env["AIRFLOW_OP_PASSWORD"])
    deadline = time.monotonic() + timeout
    while True:
        states = {t["task_id"]: t["state"] for t in op.task_instances(dag_id, run_id)}
        gate = states.get(gate_task)
        if gate == "awaiting_input":
            break
        if gate in ("skipped", "success", "failed", "upstream_failed") or \
                op.run(dag_id, run_id)["state"] in ("success", "failed"):
            print(f"  approval gate: {gate or 'not reached'} (no deploy proposed, nothing to ask)")
            return
        if time.monotonic() > deadline:
            raise StackError(f"{dag_id} {run_id}: the gate did not ask within {timeout:.0f} s")
        time.sleep(2)
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{gate_task}/-1/hitlDetails"
    asked = op.get(path)
    print(f"\n  the approval gate asks: {asked['subject']}")
    for line in (asked.get("body") or "").splitlines():
        print(f"    | {line}")
    resp = op.session.patch(f"{op.base}/api/v2{path}", json={"chosen_options": ["Approve"],
                                                           "params_input": {}}, timeout=30)
    if resp.status_code != 200:
        raise RuntimeError(f"approving as {cfg.env['AIRFLOW_OP_USER']}: HTTP {resp.status_code} {resp.text[:300]}")
    answered = resp.json()
    print(f"  answered {answered['chosen_options']} by {answered['responded_by']['name']} "
          f"(role Op) at {answered['responded_at']}", flush=True)


def asset_events(api: Airflow, since: str) -> None:
    """Print the lifecycle's asset events since ``since`` (what the UI's Assets page lists)."""
    events = api.get("/assets/events", limit=100, order_by="timestamp", timestamp_gte=since)["asset_events"]
    print(f"\nasset events (Airflow UI: Assets; GET /api/v2/assets/events): {len(events)}")
    for ev in events:
        extra = ", ".join(f"{k}={v}" for k, v in (ev.get("extra") or {}).items()
                          if k in ("week", "weeks", "version", "candidate_version", "decision", "signals"))
        print(f"  {ev['timestamp'][:19]} {ev['name']:<17} from {ev['source_dag_id']}.{ev['source_task_id']}: {extra}")


def main() -> int:
    """Run the demo; exit 1 with a clear message when a step fails."""
    until = os.environ.get("DEMO_UNTIL", "2013-W08")
    drift_week = os.environ.get("DEMO_DRIFT_WEEK", "2013-W17")
    started = time.monotonic()
    try:
        cfg = load()
        print("== 1/4 bringing the stack up", flush=True)
        cmd_up(cfg)
        api = Airflow(cfg, cfg.env["AIRFLOW_ADMIN_USER"], cfg.env["AIRFLOW_ADMIN_PASSWORD"])
        api.wait_dag(DAG_ID)
        api.wait_dag(RETRAIN_DAG_ID)
        demo_started = time.time()
        since = datetime.now(timezone.utc).isoformat()
        first, _ = pipeline_round(cfg, api, "2/4 the first champion", ("2013-W01", until))
        serving_since = time.time()
        watch = demo_serving.before_batch(cfg, drift_week)
        set_gate(api, True)
        try:
            run, retrain = pipeline_round(cfg, api, "3/4 a week that drifts (approval gate on)",
                                          (drift_week, drift_week), gated=True)
        finally:
            set_gate(api, False)
        print("\n== 4/4 summary", flush=True)
        for each in (first, run, retrain):
            if each:
                task_table(cfg, api, each)
        drift(api, run)
        if retrain:
            retraining(api, retrain)
        elif xcom(api, run, "check_drift", key="drift"):
            print(f"  no signal fired on {drift_week}: no retraining (try DEMO_DRIFT_WEEK=2013-W38)")
        champion(cfg)
        if watch is not None:
            demo_serving.after_pipeline(cfg, api, watch, drift_week, serving_since, run, retrain)
        asset_events(api, since)
        metrics_and_alerts(cfg, demo_started)
        logins(cfg)
        print(f"\ndemo finished in {time.monotonic() - started:.0f} s")
        ok = first["state"] == run["state"] == "success" and (retrain is None or retrain["state"] == "success")
        return 0 if ok else 1
    except (StackError, envfile.EnvFileError, RuntimeError, requests.RequestException) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
