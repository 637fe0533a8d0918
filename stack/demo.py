"""`make demo`: bring the native stack up, replay the first weeks, trigger ml_pipeline_dag through
the REST API, show progress, print a summary. The stack stays up until `make down`.

DEMO_UNTIL (default 2013-W06) sets the last replayed week.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import requests

from stack import envfile
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


def replay(cfg: StackConfig, until: str) -> list[str]:
    """Write the weekly batches up to `until` into the landing folder with the mlops CLI."""
    env = {**os.environ, "MLOPS_DATA_DIR": str(cfg.data_dir)}
    proc = subprocess.run([str(VENV_BIN / "mlops"), "data", "replay", "--until", until], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"mlops data replay --until {until} failed:\n{proc.stdout}{proc.stderr}")
    return sorted(p.stem for p in (cfg.data_dir / "landing").glob("*.csv"))


def follow(api: Airflow, dag_id: str, run_id: str, timeout: float = 1800) -> dict:
    """Print each task's state changes until the run ends; return the run."""
    seen: dict[str, str] = {}
    started = time.monotonic()
    while True:
        for ti in api.task_instances(dag_id, run_id):
            state = ti["state"] or "none"
            if seen.get(ti["task_id"]) != state:
                seen[ti["task_id"]] = state
                print(f"  [{time.monotonic() - started:6.1f} s] {dag_id}.{ti['task_id']}: {state}", flush=True)
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
        print(f"  {ti['task_id']:<22} {ti['state'] or '-':<10} {duration:>9}  {ti['queue']:<6} {worker}")


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


def drift(cfg: StackConfig, api: Airflow, run: dict) -> None:
    """Print the newest drift report and whether it triggered a retraining run."""
    reports = sorted((cfg.data_dir / "reports").glob("*/drift.json"))
    if not reports:
        print("\ndrift: no drift report (no new batch reached check_drift)")
        return
    result = json.loads(reports[-1].read_text())
    print(f"\ndrift on {result.get('batch')}: share {result.get('drift_share', 0):.3f} "
          f"(threshold {result.get('threshold')}), detected: {result.get('drift_detected')}, "
          f"drifted columns: {result.get('drifted_columns')}")
    print(f"  report: {reports[-1].with_suffix('.html')}")
    retrain_id = f"drift__{run['dag_run_id']}"
    resp = api.session.get(f"{api.base}/api/v2/dags/{RETRAIN_DAG_ID}/dagRuns/{retrain_id}", timeout=30)
    if resp.status_code == 200:
        print(f"  drift triggered {RETRAIN_DAG_ID} run {retrain_id}: {resp.json()['state']}")


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
    print(f"  (all from {cfg.env_file})")


def main() -> int:
    """Run the demo; exit 1 with a clear message when a step fails."""
    until = os.environ.get("DEMO_UNTIL", "2013-W06")
    try:
        cfg = load()
        print("== 1/4 bringing the stack up", flush=True)
        cmd_up(cfg)
        print(f"\n== 2/4 replaying weeks up to {until} into {cfg.data_dir / 'landing'}", flush=True)
        weeks = replay(cfg, until)
        print(f"  landing: {', '.join(weeks)}")
        api = Airflow(cfg, cfg.env["AIRFLOW_ADMIN_USER"], cfg.env["AIRFLOW_ADMIN_PASSWORD"])
        api.wait_dag(DAG_ID)
        run = api.trigger(DAG_ID)
        print(f"\n== 3/4 triggered {DAG_ID} through the REST API: run {run['dag_run_id']}", flush=True)
        run = follow(api, DAG_ID, run["dag_run_id"])
        retrain_id = f"drift__{run['dag_run_id']}"
        resp = api.session.get(f"{api.base}/api/v2/dags/{RETRAIN_DAG_ID}/dagRuns/{retrain_id}", timeout=30)
        retrain = None
        if resp.status_code == 200:
            print(f"  drift detected: following {RETRAIN_DAG_ID} run {retrain_id}", flush=True)
            retrain = follow(api, RETRAIN_DAG_ID, retrain_id)
        print("\n== 4/4 summary")
        task_table(cfg, api, run)
        states = {t["task_id"]: t["state"] for t in api.task_instances(DAG_ID, run["dag_run_id"])}
        if states.get("validate_data") == "skipped":
            print(f"  no batch up to {until} was new (earlier runs processed them): replay more "
                  f"weeks with `make demo DEMO_UNTIL=2013-W10`")
        if retrain:
            task_table(cfg, api, retrain)
        champion(cfg)
        drift(cfg, api, run)
        logins(cfg)
        return 0 if run["state"] == "success" else 1
    except (StackError, envfile.EnvFileError, RuntimeError, requests.RequestException) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
