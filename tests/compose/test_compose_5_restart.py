"""`down` then `up` (volumes kept) keeps the DAG run history, the MLflow registry, the data in the
mlops-data volume, the task logs and the JWT key pair (airflow-init and mlflow-init run again and
change nothing). Runs last (file order): it restarts the shared project."""

from __future__ import annotations

import json

from testkit.compose_stack import ComposeStack


def _registry(stack: ComposeStack) -> dict:
    name = stack.env["MLOPS_MODEL_NAME"]
    resp = stack.mlflow("/api/2.0/mlflow/model-versions/search", filter=f"name='{name}'")
    assert resp.status_code == 200, resp.text
    versions = {v["version"]: sorted(v.get("aliases", [])) for v in resp.json().get("model_versions", [])}
    return {"versions": versions, "champion": stack.champion()}


def _history(stack: ComposeStack) -> dict[str, str]:
    return {f"{dag_id}/{r['dag_run_id']}": r["state"]
            for dag_id in ("ml_pipeline_dag", "model_retraining_dag", "data_validation_dag")
            for r in stack.dag_runs(dag_id)}


def _data(stack: ComposeStack) -> list[str]:
    out = stack.exec("airflow-worker-heavy", "bash", "-c",
                     "cd /opt/mlops/data && find landing accepted processed -type f | sort")
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.split()


def _log(stack: ComposeStack, run_id: str) -> str:
    resp = stack.api("GET", f"/dags/ml_pipeline_dag/dagRuns/{run_id}/taskInstances/train/logs/1",
                     headers={"Accept": "application/json"}, params={"full_content": "true"})
    assert resp.status_code == 200, resp.text[:500]
    return str(resp.json()["content"])


def _jwks(stack: ComposeStack) -> dict:
    out = stack.exec("airflow-apiserver", "cat", "/opt/airflow/jwks/jwks.json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_down_then_up_keeps_history_registry_data_and_logs(compose_stack: ComposeStack, pipeline_run: dict,
                                                           phases) -> None:
    stack = compose_stack
    history, registry, data = _history(stack), _registry(stack), _data(stack)
    log = _log(stack, pipeline_run["run_id"])
    jwks = _jwks(stack)
    assert history and registry["champion"] and any(p.startswith("accepted/") for p in data)

    with phases.phase("down (volumes kept)"):
        stack.compose("down", "--timeout", "60", log="restart.log")
    assert stack.leftovers()["containers"] == []
    assert stack.leftovers()["volumes"], "down without --volumes must keep the named volumes"
    with phases.phase("up -d again until every service is healthy"):
        stack.compose("up", "-d", log="restart.log")
        stack._tokens.clear()
        stack.wait_healthy()

    after = _history(stack)
    assert {k: v for k, v in after.items() if k in history} == history
    assert _registry(stack) == registry
    assert _data(stack) == data
    assert _log(stack, pipeline_run["run_id"]) == log
    assert _jwks(stack) == jwks, "airflow-init replaced the JWT signing key"
    assert "JWT signing key kept" in stack.logs("airflow-init", tail=200)
    assert "accounts and grants in sync (0 changes)" in stack.logs("mlflow-init", tail=20)
