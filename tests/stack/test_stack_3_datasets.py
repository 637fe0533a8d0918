"""Two data sets live in one stack at once: ml_pipeline_dag with conf {"dataset": "synthetic_drift"}
on replayed synthetic weeks, beside the flights (the session's pipeline run, with its champion).
The synthetic run works in its own folder, experiment and registered model (which gets a
champion); the flights' champion, batches and folder are untouched; neither reads the other's
batches; its pushed ML results carry the grouping label ``dataset``.

Then the synthetic data set's abrupt drift (configs/synthetic_drift.yaml: 2013-W14) on the stack,
with one more pipeline run: the weeks up to one week past it land at once (W04..W15); the run
trains its weekly candidate on W01..W14 (held out on W15), and its check_drift measures W15
against the champion of the first run (W01-W02, old concept): the model signal fires and triggers
model_retraining_dag with the data set in its conf. The weekly candidate, fitted mostly on the old
concept, still beats that champion on W15 and the pipeline deploys it; the retraining validates
every recipe on the tail of W14 (retraining.validation_tail), where only the recipe fitted on the
drift week alone knows the new concept: it wins and is deployed over the weekly candidate. The
same scenario at model level: tests/model/test_synthetic_lifecycle.py; under dag.test():
tests/dags/test_dag_synthetic.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from testkit.stack_session import REPO

DATASET = "synthetic_drift"
MODEL = "synthetic_drift_classifier"
WEEKS = ["2013-W01", "2013-W02", "2013-W03"]
RETRAIN = "model_retraining_dag"
# The abrupt drift of configs/synthetic_drift.yaml, and the week after it (the newest batch the
# second run checks: the retraining then has one training week of the new concept).
DRIFT_WEEK, AFTER_DRIFT = "2013-W14", "2013-W15"


def _digest(folder: Path) -> dict[str, str]:
    """Every file of the flights' data folder outside datasets/ and the run memos, by content."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and rel.parts[0] not in ("datasets", "state") and path.suffix != ".lock":
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _aliased(stack, model: str, alias: str = "champion") -> dict | None:
    """The model version behind `alias` (MLflow's JSON: version, run_id, tags), or None."""
    resp = requests.get(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/registered-models/alias",
                        params={"name": model, "alias": alias}, auth=stack.mlflow_login("viewer"), timeout=30)
    assert resp.status_code in (200, 400, 404), resp.text
    return resp.json()["model_version"] if resp.status_code == 200 else None


def _alias(stack, model: str, alias: str = "champion") -> str | None:
    version = _aliased(stack, model, alias)
    return version["version"] if version else None


def _mlops(stack, *args: str, env: dict[str, str] | None = None) -> dict:
    """The mlops CLI on the stack's data folder (no MLOPS_SCHEMA: the data set is an option)."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("MLOPS_SCHEMA", "MLOPS_DATASET", "MLOPS_MODEL_NAME")},
           **(env or {})}
    env["MLOPS_DATA_DIR"] = str(stack.cfg.data_dir)
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "mlops"), *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _xcom(stack, run_id: str, task_id: str, key: str = "return_value", dag_id: str = "ml_pipeline_dag"):
    resp = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
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
    started = time.monotonic()
    run_id = stack.trigger("ml_pipeline_dag", conf={"dataset": DATASET}, role="ml")
    run = stack.wait_run("ml_pipeline_dag", run_id, timeout=240)
    print(f"ml_pipeline_dag on {DATASET}: {run['state']} in {time.monotonic() - started:.0f} s")
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
    assert {"job": "mlops_training", "dataset": DATASET, "recipe": "weekly"} in training, training
    assert {"job": "mlops_training", "recipe": "weekly"} in training, training


@pytest.fixture(scope="module")
def adapted(dags_ready, second) -> dict:
    """After the first synthetic run: the weeks up to one week past the abrupt drift land, one
    ml_pipeline_dag run takes them all, and the retraining its check_drift triggers runs."""
    stack = dags_ready
    flights_champion = _alias(stack, stack.cfg.env["MLOPS_MODEL_NAME"])
    old_champion = _alias(stack, MODEL)
    assert old_champion is not None and second["run"]["state"] == "success"
    replay = _mlops(stack, "--dataset", DATASET, "data", "replay", "--until", AFTER_DRIFT)
    started = time.monotonic()
    run_id = stack.trigger("ml_pipeline_dag", conf={"dataset": DATASET}, role="ml")
    run = stack.wait_run("ml_pipeline_dag", run_id)
    pipeline_s = time.monotonic() - started
    # check_drift created the retraining run before the pipeline run ended (its id is
    # drift__<run id>, mlops_airflow.drift.retraining_run_id), so it exists by now if it fired.
    retrain_id = f"drift__{run_id}"
    found = stack.api("GET", f"/dags/{RETRAIN}/dagRuns/{retrain_id}")
    retrain = stack.wait_run(RETRAIN, retrain_id) if found.status_code == 200 else None
    print(f"ml_pipeline_dag on {DATASET} across its abrupt drift: {run['state']} in {pipeline_s:.0f} s; "
          f"the retraining it triggered: {retrain and retrain['state']} "
          f"{time.monotonic() - started - pipeline_s:.0f} s later")
    return {"replay": replay, "run_id": run_id, "run": run, "retrain_id": retrain_id, "retrain": retrain,
            "old_champion": old_champion, "flights_champion": flights_champion}


def test_a_drift_triggered_retraining_deploys_after_the_abrupt_drift(dags_ready, adapted) -> None:
    stack = dags_ready
    run_id, retrain_id = adapted["run_id"], adapted["retrain_id"]
    states = {t["task_id"]: t["state"] for t in stack.task_instances("ml_pipeline_dag", run_id)}
    assert adapted["run"]["state"] == "success", states
    landed = [f"2013-W{n:02d}" for n in range(4, 16)]
    assert adapted["replay"]["written"] == landed, adapted["replay"]
    assert [Path(p).stem for p in _xcom(stack, run_id, "check_new_data")] == landed
    # The weekly candidate: every week but the newest, held out on the week after the drift.
    trained = _xcom(stack, run_id, "train")
    assert trained["train_weeks"] == WEEKS + landed[:-1] and trained["holdout_week"] == AFTER_DRIFT

    # check_drift measured W15 against the first run's champion (fitted on the old concept):
    # the model signal fired, and the retraining was triggered with the data set and the result.
    drift = _xcom(stack, run_id, "check_drift", key="drift")
    assert drift["week"] == AFTER_DRIFT and drift["champion_version"] == adapted["old_champion"], drift
    model = drift["signals"]["model"]
    assert "model" in drift["fired"] and model["fired"], drift["summary"]
    assert model["reference_week"] == WEEKS[-1] and model["roc_auc"] < 0.6 < model["reference_roc_auc"], model
    assert adapted["retrain"] is not None, f"check_drift ({states['check_drift']}) triggered no {RETRAIN}"
    conf = adapted["retrain"]["conf"]
    assert conf["dataset"] == DATASET and conf["drift"]["fired"] == drift["fired"], conf
    assert conf["triggered_by"] == {"dag_id": "ml_pipeline_dag", "run_id": run_id}, conf

    # The pipeline's own decision: its weekly candidate, fitted mostly on the old concept, beats
    # the old champion on W15 and is deployed (before the retraining ends).
    evaluation = _xcom(stack, run_id, "evaluate")
    assert evaluation["decision"]["deploy"] and states["deploy"] == "success", (evaluation["decision"], states)

    # The retraining: every recipe of the data set trained and validated on the tail of W14; the
    # best is deployed, nothing rolled back.
    tis = stack.task_instances(RETRAIN, retrain_id)
    done = {t["task_id"]: t["state"] for t in tis if t["map_index"] < 0}
    assert adapted["retrain"]["state"] == "success", done
    assert done["deploy_new_model"] == "success" and done["rollback_model"] == "skipped", done
    chosen = _xcom(stack, retrain_id, "evaluate_new_model", dag_id=RETRAIN)
    candidates = {c["recipe"]: c for c in chosen["candidates"]}
    recipes = ["weekly", "recent_4", "recent_1", "recency_weighted"]  # configs/synthetic_drift.yaml
    assert sorted(candidates) == sorted(recipes)
    assert sum(t["task_id"] == "retrain_model" and t["state"] == "success" for t in tis) == len(recipes)
    assert {c["validation_week"] for c in candidates.values()} == {DRIFT_WEEK}
    assert {c["holdout_week"] for c in candidates.values()} == {AFTER_DRIFT}
    scores = {r: c["validation_roc_auc"] for r, c in candidates.items()}
    assert scores[chosen["recipe"]] == max(scores.values()), scores
    # Only the recipe that learns from the newest week alone (the head of W14, the new concept)
    # knows it: it wins clearly over the weekly recipe (the data decide, not a tie).
    assert chosen["recipe"] == "recent_1" and scores["recent_1"] >= scores["weekly"] + 0.1, scores
    assert chosen["decision"]["deploy"], chosen["decision"]

    # The synthetic model's champion is now the retraining's version, which says what it is.
    champion = _aliased(stack, MODEL)
    assert champion is not None and champion["version"] == str(chosen["version"]) != adapted["old_champion"]
    tags = {t["key"]: t["value"] for t in champion.get("tags", [])}
    assert (tags["recipe"], tags["validation_week"], tags["holdout_week"]) == (chosen["recipe"], DRIFT_WEEK, AFTER_DRIFT)
    # On W15 it ranks far better than the weekly candidate the pipeline deployed before it.
    assert float(tags["holdout_roc_auc"]) >= trained["metrics"]["roc_auc"] + 0.1, (tags, trained["metrics"])
    # The flights' champion did not move.
    assert _alias(stack, stack.cfg.env["MLOPS_MODEL_NAME"]) == adapted["flights_champion"]

    # The operator's drift check of W15 against the new champion is quiet (it also replaces the
    # drifted figures of check_drift at the Pushgateway: the synthetic ML alerts resolve).
    login = dict(zip(("MLOPS_PUSHGATEWAY_USER", "MLOPS_PUSHGATEWAY_PASSWORD"),
                     stack.cfg.web_login("pushgateway", "pusher")))
    quiet = _mlops(stack, "--dataset", DATASET, "drift", "--week", AFTER_DRIFT, env={
        "MLFLOW_TRACKING_URI": stack.cfg.mlflow_url, "MLFLOW_TRACKING_USERNAME": stack.cfg.env["MLFLOW_VIEWER_USER"],
        "MLFLOW_TRACKING_PASSWORD": stack.cfg.env["MLFLOW_VIEWER_PASSWORD"],
        "MLOPS_PUSHGATEWAY_URL": stack.cfg.pushgateway_url, **login})
    assert quiet["champion_version"] == champion["version"] and quiet["drift_detected"] is False, quiet["summary"]
    assert quiet["signals"]["model"]["roc_auc"] >= 0.95, quiet["summary"]
