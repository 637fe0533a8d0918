"""The serving part of `make demo`: the champion answers the flights of the next week before that
week's batch lands, the service follows the retraining's deploy, and what it served is measured.

1. `before_batch`: wait until the prediction service serves the first champion, then send the
   flights of the coming week to /predict (`mlops serve-replay`), and watch /health in the
   background (the version served, second by second);
2. `after_pipeline`: once the week's batch was accepted and the pipeline (and retraining) ran,
   print the version that served those flights, the swap the retraining's deploy caused (when
   the alias moved, when the service answered with the new version), the drift check's source,
   and the realised ROC AUC per version that served_monitoring_dag computed and pushed.

Without a prediction service (`SERVING_PORT` not answering) the demo says so and goes on.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
from tenacity import RetryError, retry, retry_if_result, stop_after_delay, wait_fixed

from stack.api import Airflow
from stack.config import VENV_BIN, StackConfig

MONITOR_DAG_ID = "served_monitoring_dag"


def serving_url(cfg: StackConfig) -> str:
    """The prediction service of this stack (MLOPS_SERVING_URL, else SERVING_PORT on loopback)."""
    url = os.environ.get("MLOPS_SERVING_URL") or cfg.env.get("MLOPS_SERVING_URL")
    return (url or cfg.serving_url).rstrip("/")


def health(url: str) -> dict[str, Any] | None:
    """/health's JSON when the service is ready, else None."""
    try:
        resp = requests.get(f"{url}/health", timeout=5)
    except requests.RequestException:
        return None
    return resp.json() if resp.status_code == 200 else None


@dataclass
class HealthWatch:
    """Polls /health once a second in a thread; records each change of the version served."""

    url: str
    changes: list[tuple[float, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "HealthWatch":
        threading.Thread(target=self._run, daemon=True, name="demo-health-watch").start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            answer = health(self.url)
            version = str(answer["model_version"]) if answer else None
            if not self.changes or self.changes[-1][1] != version:
                self.changes.append((time.time(), version))
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()


def wait_serving(url: str, version: str | None, timeout: float = 60) -> dict[str, Any] | None:
    """/health once the service serves `version` (any version when None); None on timeout."""
    @retry(retry=retry_if_result(lambda answer: answer is None or (
               version is not None and str(answer.get("model_version")) != version)),
           stop=stop_after_delay(timeout), wait=wait_fixed(1))
    def ready() -> dict[str, Any] | None:
        return health(url)

    try:
        return ready()
    except RetryError:
        return None


def champion_version(cfg: StackConfig) -> str | None:
    """The version behind alias champion (MLflow viewer login)."""
    resp = requests.get(f"{cfg.mlflow_url}/api/2.0/mlflow/registered-models/alias",
                        params={"name": cfg.env["MLOPS_MODEL_NAME"], "alias": "champion"},
                        auth=(cfg.env["MLFLOW_VIEWER_USER"], cfg.env["MLFLOW_VIEWER_PASSWORD"]), timeout=30)
    return str(resp.json()["model_version"]["version"]) if resp.status_code == 200 else None


def before_batch(cfg: StackConfig, week: str) -> HealthWatch | None:
    """Serve the flights of `week` with the current champion; return the /health watcher."""
    url = serving_url(cfg)
    champion = champion_version(cfg)
    print(f"\n== the champion answers: the flights of {week} go to {url}/predict before its batch lands",
          flush=True)
    if wait_serving(url, champion) is None:
        print(f"  the prediction service at {url} does not serve version {champion} (is `serving` "
              f"running? `make status`): skipping the serving part of the demo")
        return None
    env = {**os.environ, "MLOPS_DATA_DIR": str(cfg.data_dir), "MLOPS_SERVING_URL": url,
           "SERVING_TOKEN": cfg.env.get("SERVING_TOKEN", "")}
    proc = subprocess.run([str(VENV_BIN / "mlops"), "serve-replay", "--week", week], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  mlops serve-replay --week {week} failed: {proc.stderr.strip()}")
        return None
    import json

    sent = json.loads(proc.stdout)
    versions = ", ".join(f"version {v}: {n} rows" for v, n in sent["model_versions"].items())
    print(f"  served {sent['rows']} flights of {week} in {sent['requests']} requests "
          f"({sent['seconds']:.1f} s; {versions}; mean delay probability {sent['mean_probability']:.3f})")
    return HealthWatch(url).start()


def _stamp(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def monitored_weeks(api: Airflow, run: dict) -> set[str]:
    """The weeks a served_monitoring_dag run monitors: its conf's ``week`` when triggered by hand,
    else the ``week`` of each accepted_batches event that triggered it."""
    given = (run.get("conf") or {}).get("week")
    if given:
        return {given}
    events = api.get(f"/dags/{MONITOR_DAG_ID}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents")["asset_events"]
    return {week for event in events for week in [(event.get("extra") or {}).get("week"),
                                                 *((event.get("extra") or {}).get("weeks") or [])] if week}


def monitoring_run(api: Airflow, week: str, since: float, timeout: float = 90) -> tuple[dict, dict | None]:
    """``(run, result)``: the served_monitoring_dag run (queued since ``since``) that monitors
    ``week`` (from the accepted batch's asset event, or one triggered here with conf
    {"week": week} when none came), followed to its end, and its result for ``week`` (a run
    triggered by several accepted weeks has one result per week; None when it has none)."""
    from stack.demo import follow, xcom

    @retry(retry=retry_if_result(lambda run: run is None), stop=stop_after_delay(20), wait=wait_fixed(2))
    def triggered() -> dict | None:
        runs = api.get(f"/dags/{MONITOR_DAG_ID}/dagRuns", limit=100, order_by="-id")["dag_runs"]
        return next((r for r in runs if (_stamp(r.get("queued_at") or r.get("start_date")) or 0) >= since
                     and week in monitored_weeks(api, r)), None)

    try:
        run = triggered()
        print(f"  {MONITOR_DAG_ID} run {run['dag_run_id']} ({run.get('run_type')}, "
              f"scheduled on the accepted_batches asset of {week})", flush=True)
    except RetryError:
        run = api.trigger(MONITOR_DAG_ID, {"week": week})
        print(f"  no accepted_batches event of {week} reached {MONITOR_DAG_ID}: triggered run "
              f"{run['dag_run_id']} for {week}", flush=True)
    run = follow(api, MONITOR_DAG_ID, run["dag_run_id"], timeout=timeout)
    results = xcom(api, run, "monitor_served") or []
    return run, next((r for r in results if r.get("week") == week), None)


def after_pipeline(cfg: StackConfig, api: Airflow, watch: HealthWatch, week: str, since: float,
                   pipeline_run: dict, retrain: dict | None) -> None:
    """Print the version that served `week`, the swap after the retraining, the realised AUC."""
    from stack.demo import xcom

    champion = champion_version(cfg)
    if retrain is not None and champion is not None:
        wait_serving(watch.url, champion, timeout=45)
    watch.stop()
    print(f"\nwhat the prediction service served ({watch.url}):")
    drift = xcom(api, pipeline_run, "check_drift", key="drift") or {}
    model = (drift.get("signals") or {}).get("model") or {}
    if model.get("source"):
        print(f"  check_drift measured the champion's ROC AUC on {week} from the "
              f"{model['source']} predictions ({model.get('served_rows') or 0} labelled rows served"
              f"{', versions ' + ', '.join(model['served_versions']) if model.get('served_versions') else ''})")
    moves = [(t, v) for t, v in watch.changes if v is not None]
    if retrain is not None:
        deploy = next((ti for ti in api.task_instances(retrain["dag_id"], retrain["dag_run_id"])
                       if ti["task_id"] == "deploy_new_model" and ti["state"] == "success"), None)
        if deploy is None:
            print(f"  the retraining did not deploy: the service kept version {champion}")
        else:
            moved_at = _stamp(deploy["end_date"]) or 0
            first_other = next((i for i, (_, v) in enumerate(moves) if v != champion), None)
            swap = (next(((t, v) for t, v in moves[first_other:] if v == champion), None)
                    if first_other is not None else None)
            if swap:
                print(f"  swap: deploy_new_model moved champion from version {moves[first_other][1]} "
                      f"to {champion}; /health answered with {champion} from "
                      f"{swap[0] - moved_at:+.1f} s after the task ended (polled every second; "
                      f"requests in flight finish on the old model)")
            else:
                print(f"  swap: champion is version {champion}, the service still answered with "
                      f"{moves[-1][1] if moves else '?'} when the demo looked")
    run, result = monitoring_run(api, week, since)
    if not result:
        print(f"  {MONITOR_DAG_ID}: no result for {week} (run {run['dag_run_id']}: {run['state']})")
        return
    print(f"  realised on {result['week']} (labels of its accepted batch joined by row key; "
          f"score drift against the champion's holdout {result.get('reference_week')}):")
    print(f"    {'VERSION':<8} {'SERVED':>7} {'LABELLED':>9} {'ROC AUC':>8}  SCORE DRIFT")
    for version, v in result["versions"].items():
        auc = f"{v['roc_auc']:.4f}" if v["roc_auc"] is not None else "-"
        drift_text = ("-" if not v.get("score_drift") else
                      f"{'drifted' if v['score_drift']['drifted'] else 'no'} "
                      f"({v['score_drift']['method']} {v['score_drift']['score']:.3f})")
        print(f"    {version:<8} {v['rows_served']:>7} {v['rows_labelled']:>9} {auc:>8}  {drift_text}")
    print(f"    pushed to Prometheus: mlops_served_roc_auc{{version=...}} (job serving_monitor); "
          f"report {result['report_json']}")
