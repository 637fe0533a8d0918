"""The prediction service on the containers (`model-server`): healthy, it serves the champion the
pipeline deployed, answers /predict with that version, logs the predictions, and follows the
alias when it moves (a new version of the same model, registered and deployed over MLflow's REST
API with the pipeline's login, as the deploy task does)."""

from __future__ import annotations

import json

import requests

from testkit.compose_stack import ComposeStack

WEEK = "2013-W03"


def _rows(n: int = 20) -> list[dict]:
    """Raw rows of a genuine week, with the columns a client sends."""
    from mlops.config import load_schema
    from mlops.data import load_source, week_labels
    from mlops.served import request_columns

    schema = load_schema()
    source = load_source(schema)
    week = source[week_labels(source, schema) == WEEK].head(n)
    required, optional = request_columns(schema)
    return json.loads(week[[*required, *optional]].to_json(orient="records"))


def _health(stack: ComposeStack) -> dict:
    return requests.get(f"{stack.url('SERVING_PORT')}/health", timeout=10).json()


def test_model_server_serves_and_follows_the_champion(compose_stack: ComposeStack, pipeline_run: dict) -> None:
    stack = compose_stack
    states = stack.wait_healthy()
    assert any("model-server" in name and state == "healthy" for name, state in states.items()), states
    champion = stack.champion()
    assert champion is not None
    stack.wait_for(f"model-server serves v{champion}", lambda: _health(stack).get("model_version") == champion,
                   timeout=120)
    url, auth = stack.url("SERVING_PORT"), {"Authorization": f"Bearer {stack.env['SERVING_TOKEN']}"}
    rows = _rows()
    assert requests.post(f"{url}/predict", json={"rows": rows}, timeout=30).status_code == 401
    resp = requests.post(f"{url}/predict", json={"rows": rows}, headers=auth, timeout=60)
    assert resp.status_code == 200, resp.text[:500]
    body = resp.json()
    assert body["model_version"] == champion and len(body["predictions"]) == len(rows)
    assert all(0 <= p["probability"] <= 1 for p in body["predictions"])
    # Logged in the predictions database (the read-only role sees it).
    sql = f"SELECT count(*) FROM predictions WHERE request_id = '{body['request_id']}'"
    stack.wait_for("the request's predictions logged", lambda: stack.exec(
        "postgres", "env", f"PGPASSWORD={stack.env['PREDICTIONS_READER_PASSWORD']}", "psql", "-h", "127.0.0.1",
        "-U", stack.env["PREDICTIONS_READER_USER"], "-d", stack.env["PREDICTIONS_DB"], "-tAc", sql,
    ).stdout.strip() == str(len(rows)), timeout=30)
    # A deploy: a new version of the same model (same artifact and digest), then the alias moves.
    model = stack.env["MLOPS_MODEL_NAME"]
    mv = stack.mlflow("/api/2.0/mlflow/model-versions/get", name=model, version=champion).json()["model_version"]
    digest = {t["key"]: t["value"] for t in mv.get("tags", [])}["model_sha256"]
    created = stack.mlflow_request("POST", "/api/2.0/mlflow/model-versions/create", account="pipeline", json={
        "name": model, "source": mv["source"], "run_id": mv.get("run_id"),
        # MLflow 3: a version's source `models:/<id>` must come with that logged model's id.
        "model_id": mv.get("model_id") or mv["source"].removeprefix("models:/"),
        "tags": [{"key": "model_sha256", "value": digest}]})
    assert created.status_code == 200, created.text
    new = created.json()["model_version"]["version"]
    moved = stack.mlflow_request("POST", "/api/2.0/mlflow/registered-models/alias", account="pipeline",
                                 json={"name": model, "alias": "champion", "version": new})
    assert moved.status_code == 200, moved.text
    stack.wait_for(f"model-server follows the alias to v{new}", lambda: _health(stack).get("model_version") == new,
                   timeout=60)
    again = requests.post(f"{url}/predict", json={"rows": rows}, headers=auth, timeout=60).json()
    assert again["model_version"] == new
    assert [p["probability"] for p in again["predictions"]] == [p["probability"] for p in body["predictions"]]
