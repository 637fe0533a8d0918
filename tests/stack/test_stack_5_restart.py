"""`down` then `up` keeps DAG run history, the model registry and the landing data; `down` leaves
no process behind. Runs last (file order): it restarts the shared test stack."""

from __future__ import annotations

import requests

from stack import health
from stack.ctl import stack_processes


def _registry(stack) -> dict:
    name = stack.cfg.env["MLOPS_MODEL_NAME"]
    viewer = stack.mlflow_login("viewer")
    resp = requests.get(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/model-versions/search",
                        params={"filter": f"name='{name}'"}, auth=viewer, timeout=30)
    assert resp.status_code == 200, resp.text
    versions = {v["version"]: v.get("aliases", []) for v in resp.json().get("model_versions", [])}
    champion = requests.get(f"{stack.cfg.mlflow_url}/api/2.0/mlflow/registered-models/alias",
                            params={"name": name, "alias": "champion"}, auth=viewer, timeout=30)
    return {"versions": versions, "champion": champion.json().get("model_version", {}).get("version")}


def _history(stack) -> dict[str, str]:
    out = {}
    for dag_id in ("ml_pipeline_dag", "model_retraining_dag", "data_validation_dag"):
        resp = stack.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})
        assert resp.status_code == 200, resp.text
        out.update({f"{dag_id}/{r['dag_run_id']}": r["state"] for r in resp.json()["dag_runs"]})
    return out


def test_restart_keeps_history_registry_and_landing(stack, runs) -> None:
    history = _history(stack)
    registry = _registry(stack)
    landing = sorted(p.name for p in (stack.cfg.data_dir / "landing").glob("*.csv"))
    assert history and registry["versions"] and registry["champion"] and landing

    down = stack.ctl("down", timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert stack_processes(stack.cfg) == []
    for var in ("AIRFLOW_API_PORT", "POSTGRES_PORT", "MLFLOW_PORT", "FLOWER_PORT", "REDIS_PORT"):
        assert not health.port_in_use(stack.cfg.ports[var]), f"{var} still bound after down"
    status = stack.ctl("status")
    assert status.returncode == 0 and "not running" in status.stdout

    up = stack.ctl("up")
    assert up.returncode == 0, up.stdout + up.stderr
    stack._tokens.clear()
    after = _history(stack)
    assert {k: v for k, v in after.items() if k in history} == history
    assert _registry(stack) == registry
    assert sorted(p.name for p in (stack.cfg.data_dir / "landing").glob("*.csv")) == landing
