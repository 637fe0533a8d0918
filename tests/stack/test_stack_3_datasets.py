"""Two data sets live in one stack at once: ml_pipeline_dag with conf {"dataset": "synthetic_drift"}
on replayed synthetic weeks, beside the flights (the session's pipeline run, with its champion).
The synthetic run works in its own folder, experiment and registered model (which gets a
champion); the flights' champion, batches and folder are untouched; neither reads the other's
batches; its pushed ML results carry the grouping label ``dataset``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from testkit.stack_session import REPO

DATASET = "synthetic_drift"
MODEL = "synthetic_drift_classifier"
WEEKS = ["2013-W01", "2013-W02", "2013-W03"]


def _digest(folder: Path) -> dict[str, str]:
    """Every file of the flights' data folder outside datasets/ and the run memos, by content."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and rel.parts[0] not in ("datasets", "state") and path.suffix != ".lock":
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _alias(stack, model: str, alias: str = "champion") -> str | None:
    resp = requests.get(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/registered-models/alias",
                        params={"name": model, "alias": alias}, auth=stack.mlflow_login("viewer"), timeout=30)
    assert resp.status_code in (200, 400, 404), resp.text
    return resp.json()["model_version"]["version"] if resp.status_code == 200 else None


def _mlops(stack, *args: str) -> dict:
    """The mlops CLI on the stack's data folder (no MLOPS_SCHEMA: the data set is an option)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLOPS_SCHEMA", "MLOPS_DATASET", "MLOPS_MODEL_NAME")}
    env["MLOPS_DATA_DIR"] = str(stack.cfg.data_dir)
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "mlops"), *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _xcom(stack, run_id: str, task_id: str):
    resp = stack.api("GET", f"/dags/ml_pipeline_dag/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
    assert resp.status_code == 200, resp.text
    value = resp.json()["value"]
    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture(scope="module")
def second(dags_ready, runs) -> dict:
    """The synthetic weeks replayed and run through ml_pipeline_dag beside the flights."""
    stack = dags_ready
    flights = stack.cfg.data_dir
    before = {"digest": _digest(flights), "champion": _alias(stack, stack.cfg.env["MLOPS_MODEL_NAME"]),
              "new": _mlops(stack, "ingest", "new")["batches"]}
    assert before["champion"] is not None and runs["ml"]["state"] == "success"
    replay = _mlops(stack, "--dataset", DATASET, "data", "replay", "--until", WEEKS[-1])
    run_id = stack.trigger("ml_pipeline_dag", conf={"dataset": DATASET}, role="ml")
    run = stack.wait_run("ml_pipeline_dag", run_id, timeout=240)
    return {"before": before, "replay": replay, "run_id": run_id, "run": run}


def test_two_data_sets_in_one_stack(dags_ready, second) -> None:
    stack = dags_ready
    flights = stack.cfg.data_dir
    folder = flights / "datasets" / DATASET
    states = {t["task_id"]: t["state"] for t in stack.task_instances("ml_pipeline_dag", second["run_id"])}
    assert second["run"]["state"] == "success", states
    assert second["replay"]["landing_dir"] == str(folder / "landing")
    # It claimed and accepted its own weeks only, in its own folder.
    claimed = _xcom(stack, second["run_id"], "check_new_data")
    assert [Path(p).stem for p in claimed] == WEEKS
    assert all(Path(p).parent == folder / "landing" for p in claimed), claimed
    assert sorted(p.stem for p in (folder / "accepted").glob("*.csv")) == WEEKS
    assert (folder / "processed" / "training.parquet").is_file()
    trained = _xcom(stack, second["run_id"], "train")
    assert trained["train_weeks"] == WEEKS[:-1] and trained["holdout_week"] == WEEKS[-1]
    # Its own experiment and registered model, which now has a champion.
    version = _alias(stack, MODEL)
    assert version is not None and states["deploy"] == "success", states
    resp = requests.get(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/runs/get", params={"run_id": trained["run_id"]},
                        auth=stack.mlflow_login("viewer"), timeout=30)
    experiment_id = resp.json()["run"]["info"]["experiment_id"]
    resp = requests.get(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/experiments/get",
                        params={"experiment_id": experiment_id}, auth=stack.mlflow_login("viewer"), timeout=30)
    assert resp.json()["experiment"]["name"] == MODEL
    # The flights: champion, batches, folder and watermark untouched; no synthetic batch is new to them.
    assert _alias(stack, stack.cfg.env["MLOPS_MODEL_NAME"]) == second["before"]["champion"]
    assert _digest(flights) == second["before"]["digest"]
    assert _mlops(stack, "ingest", "new")["batches"] == second["before"]["new"]
    assert _mlops(stack, "--dataset", DATASET, "ingest", "new")["batches"] == []
    # Its ML results are pushed under their own group (label dataset), beside the flights'.
    pusher = stack.cfg.web_login("pushgateway", "pusher")
    groups = requests.get(f"{stack.cfg.pushgateway_url}/api/v1/metrics", auth=pusher, timeout=10).json()["data"]
    training = [{k: v for k, v in g["labels"].items() if v} for g in groups
                if g["labels"].get("job") == "mlops_training"]
    assert {"job": "mlops_training", "dataset": DATASET} in training, training
    assert {"job": "mlops_training"} in training, training
