"""The prediction service's ASGI app in process (mlops_serving.app): ``POST /predict`` goes straight
to its handler, everything else through FastAPI; the answers, refusals and metrics are those of
the handler either way. (The stack tests run the same through uvicorn, MLflow and PostgreSQL.)"""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from mlops.config import load_schema
from mlops.data import _source_with_weeks, make_features, make_target
from mlops.modeling import build_pipeline, model_input
from mlops.serve_replay import request_bodies
from mlops_serving.app import create_app
from mlops_serving.compiled import compile_pipeline
from mlops_serving.holder import Served
from mlops_serving.rows import RowSpec, frame, model_categories

TOKEN = "t" * 32


@pytest.fixture(scope="module")
def served() -> tuple[Served, list[dict]]:
    """A version fitted on one genuine week (few trees: quick), and request rows of another."""
    schema = load_schema()
    source, weeks = _source_with_weeks(schema)
    train = source[weeks == "2013-W02"]
    keep, y = make_target(train, schema)
    pipeline = build_pipeline(schema, {"max_iter": 20, "max_leaf_nodes": 15, "random_state": 0})
    pipeline.fit(model_input(make_features(train, schema), schema)[keep], y[keep])
    rows = source[weeks == "2013-W05"].drop(columns=[*schema.leaking, schema.target_column]).iloc[:60]
    body = request_bodies(rows, chunk=60)[0]["rows"]
    compiled = compile_pipeline(pipeline, model_input(make_features(rows.iloc[:5], schema), schema))
    assert compiled is not None
    return Served("3", pipeline, model_categories(pipeline, schema), time.time(), 0.0, compiled), body


def _count(status: str) -> float:
    return REGISTRY.get_sample_value("mlops_serving_requests_total", {"status": status}) or 0.0


def test_predict_and_the_other_routes(served, monkeypatch) -> None:
    monkeypatch.setenv("SERVING_TOKEN", TOKEN)
    monkeypatch.delenv("PREDICTIONS_DB_PASSWORD", raising=False)
    version, body = served
    app = create_app()  # no lifespan here: no registry poll, the model is set by hand
    service = app.state.service
    auth = {"Authorization": f"Bearer {TOKEN}"}
    schema = load_schema()
    expected = version.model.predict_proba(model_input(make_features(frame(body, RowSpec.from_schema(schema)),
                                                                     schema), schema))[:, 1]

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
            assert (await client.post("/predict", json={"rows": body[:1]})).status_code == 401
            assert (await client.post("/predict", json={"rows": body[:1]}, headers=auth)).status_code == 503
            assert (await client.get("/health")).status_code == 503
            service.holder.current = version
            health = await client.get("/health")
            assert health.status_code == 200 and health.json()["model_version"] == "3" and health.json()["compiled"]
            assert (await client.get("/predict", headers=auth)).status_code == 405  # FastAPI's route table
            bad = await client.post("/predict", json={"rows": [{**body[0], "carrier": "ZZ"}]}, headers=auth)
            assert bad.status_code == 422 and bad.json()["field"] == "carrier" and bad.json()["row"] == 0
            # single rows at once (batched together) and all rows in one request: the pipeline's answers
            singles = await asyncio.gather(*(client.post("/predict", json={"rows": [row]}, headers=auth)
                                             for row in body))
            assert [r.json()["predictions"][0]["probability"] for r in singles] == expected.tolist()
            assert len({r.json()["request_id"] for r in singles}) == len(body)
            whole = await client.post("/predict", json={"rows": body}, headers=auth)
            assert whole.headers["content-type"] == "application/json"
            assert [p["probability"] for p in whole.json()["predictions"]] == expected.tolist()
            assert all(p["model_version"] == "3" for p in whole.json()["predictions"])
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200 and "mlops_serving_request_duration_seconds_bucket" in metrics.text

    before = {s: _count(s) for s in ("200", "401", "422", "503")}
    asyncio.run(run())
    assert {s: _count(s) - before[s] for s in before} == {"200": len(body) + 1, "401": 1, "422": 1, "503": 1}
    assert np.all((expected > 0) & (expected < 1))


def test_a_failing_handler_answers_500_and_is_counted(served, monkeypatch) -> None:
    monkeypatch.setenv("SERVING_TOKEN", TOKEN)
    monkeypatch.delenv("PREDICTIONS_DB_PASSWORD", raising=False)
    version, body = served
    app = create_app()
    app.state.service.holder.current = version

    def broken(*_args, **_kwargs):  # noqa: ANN002, ANN003 - a scorer that fails
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(app.state.service.batcher, "score", broken)
    before = _count("500")

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
            return await client.post("/predict", json={"rows": body[:1]}, headers={"Authorization": f"Bearer {TOKEN}"})

    answer = asyncio.run(run())
    assert answer.status_code == 500 and _count("500") == before + 1
