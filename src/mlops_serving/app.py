"""The HTTP API of the prediction service (FastAPI, run by uvicorn: ``uvicorn mlops_serving.app:app``).

- ``POST /predict`` (``Authorization: Bearer $SERVING_TOKEN``): body ``{"rows": [{raw columns}, ...]}``
  -> 200 ``{"request_id", "model_version", "threshold", "predictions": [{"probability", "delayed",
  "model_version"}, ...]}``; 401 without the token; 413 over ``SERVING_MAX_BODY_BYTES`` or
  ``SERVING_MAX_ROWS``; 422 naming the row index and the field (:mod:`mlops_serving.rows`);
  503 while no model is loaded.
- ``GET /health``: 200 ``{"status": "ready", "model_version", ...}`` once a model is loaded and
  warmed, 503 otherwise; with the seconds since the last successful registry check.
- ``GET /metrics``: Prometheus text (:mod:`mlops_serving.metrics`).
"""

from __future__ import annotations

import gc
import hmac
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlops import config
from mlops.config import load_schema
from mlops_serving import metrics
from mlops_serving.batching import Batcher
from mlops_serving.clock import Clock
from mlops_serving.holder import Holder
from mlops_serving.predlog import PredictionLog
from mlops_serving.rows import RowError, RowSpec, check_rows, frame, predict
from mlops_serving.settings import Settings

log = logging.getLogger("mlops_serving")
# Requests up to this many rows are scored together with those arriving at the same time
# (mlops_serving.batching); bigger ones alone.
BATCH_ROWS = 256


class Service:
    """What the app holds: settings, schema, row spec, the model holder and the prediction log."""

    def __init__(self, settings: Settings) -> None:
        from mlops import tracking

        for key, value in {**tracking.HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                           "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
            os.environ.setdefault(key, value)
        self.settings = settings
        self.schema = load_schema()
        self.spec = RowSpec.from_schema(self.schema)
        self.threshold = config.decision_threshold()
        self.token = f"Bearer {settings.token}".encode()
        self.holder = Holder(self.schema, settings.poll_s)
        self.clock = Clock(settings.replay_clock)
        self.log = PredictionLog(settings.db_dsn, settings.flush_s, settings.log_queue_rows,
                                 settings.retention_days, self.schema, clock=self.clock)
        self.batcher = Batcher(lambda served, requests: _score(self, served, requests), max_rows=BATCH_ROWS)

    def start(self) -> None:
        """Prepare the log's table, start the writer and the alias poller."""
        if self.log.enabled:
            _ensure_table(self.settings.db_dsn, self.clock)
        self.log.start()
        self.holder.start()

    def stop(self) -> None:
        """Stop polling; write what the log still holds."""
        self.holder.stop()
        self.log.stop()


def _ensure_table(dsn: str, clock: Clock) -> None:
    import psycopg2

    from mlops_serving.predlog import ensure_schema

    try:
        conn = psycopg2.connect(dsn)
    except psycopg2.Error as exc:  # the writer retries; serving does not wait for the database
        log.warning("prediction log: database not reachable at start: %s", exc)
        return
    try:
        ensure_schema(conn, today=clock.now())
    finally:
        conn.close()


def _error(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def create_app(settings: Settings | None = None) -> "_PredictFirst":
    """The app; the service starts with it (lifespan) and stops with it."""
    service = Service(settings or Settings.from_env())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(service.start)
        # What is loaded by now (libraries, the first model) lives as long as the process: keep it
        # out of the garbage collector's full passes, which would otherwise stall answers for
        # tens of milliseconds.
        gc.freeze()
        yield
        await service.batcher.close()
        await run_in_threadpool(service.stop)

    app = FastAPI(title="mlops prediction service", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.service = service

    @app.post("/predict")
    async def predict_route(request: Request) -> Response:  # served by _PredictFirst; kept for the API's routes
        return await _predict_measured(service, request)

    @app.get("/health")
    def health() -> JSONResponse:
        served = service.holder.current
        body = {"status": "ready" if served else "loading",
                "model_version": served.version if served else None,
                "model_name": config.model_name(),
                "model_loaded_at": served.loaded_at if served else None,
                # scored by its compiled form (mlops_serving.compiled), else by the pipeline itself
                "compiled": served.scorer is not served.model if served else None,
                "registry_check_age_s": round(service.holder.check_age(), 3),
                "registry_check_error": service.holder.last_check_error,
                "poll_s": service.settings.poll_s,
                "refused_versions": dict(service.holder.refused),
                "swaps": service.holder.swaps,
                "prediction_log": {"enabled": service.log.enabled, "pending_rows": service.log.pending(),
                                   "written_rows": service.log.written, "last_error": service.log.last_error}}
        return JSONResponse(body, status_code=200 if served else 503)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return _PredictFirst(app, service)


class _PredictFirst:
    """The ASGI app uvicorn runs: ``POST /predict`` straight to its handler, everything else (the
    other routes, lifespan) to the FastAPI app. FastAPI's middleware, routing and endpoint
    machinery doubled the event loop's CPU per single-row request (measured in process at
    concurrency 8: 0.16 -> 0.07 ms, against 0.4 ms for its share of a batch's scoring); the
    handler is the same either way (``_predict``: token, body limit, checks, batcher)."""

    def __init__(self, app: FastAPI, service: Service) -> None:
        self.app, self.service = app, service
        self.state = app.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            response = await _predict_measured(self.service, Request(scope, receive))
        except Exception:  # as FastAPI's ServerErrorMiddleware: a 500, and the error in the log
            log.exception("POST /predict failed")
            response = PlainTextResponse("Internal Server Error", status_code=500)
        await response(scope, receive, send)


async def _predict_measured(service: Service, request: Request) -> Response:
    """``_predict`` counted and timed in the service's metrics."""
    started = time.perf_counter()
    status = 500
    try:
        response = await _predict(service, request)
        status = response.status_code
        return response
    finally:
        metrics.REQUESTS.labels(str(status)).inc()
        metrics.DURATION.observe(time.perf_counter() - started)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it exceeds ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _predict(service: Service, request: Request) -> Response:
    settings = service.settings
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, service.token):
        return _error(401, {"error": "missing or wrong service token (Authorization: Bearer $SERVING_TOKEN)"})
    body = await _read_body(request, settings.max_body_bytes)
    if body is None:
        return _error(413, {"error": f"request body over {settings.max_body_bytes} bytes (SERVING_MAX_BODY_BYTES)"})
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _error(422, {"error": f"body is not JSON: {exc}", "row": None, "field": None})
    if not isinstance(doc, dict) or "rows" not in doc:
        return _error(422, RowError(None, "rows", 'expected {"rows": [...]}').detail())
    served = service.holder.current  # one model for the whole request, whatever swaps meanwhile
    if served is None:
        return _error(503, {"error": "no model loaded yet (see /health)"})
    try:
        rows = check_rows(doc["rows"], service.spec, served.categories, settings.max_rows)
    except RowError as exc:
        return _error(422, exc.detail())
    except OverflowError as exc:
        return _error(413, {"error": str(exc)})
    if len(rows) > BATCH_ROWS:  # a big request is a batch of its own
        answer = (await run_in_threadpool(_score, service, served, [rows]))[0]
    else:
        answer = await service.batcher.submit(served, rows)
    return Response(answer, media_type="application/json")


def _score(service: Service, served: Any, requests: list[list[dict]]) -> list[bytes]:
    """Score the rows of several requests in one frame; log and encode each request's answer (the
    log derives row keys and weeks in its writer, off the request path)."""
    raw = frame([row for rows in requests for row in rows], service.spec)
    proba = predict(served.scorer, raw, service.schema).tolist()
    version, threshold, now = served.version, service.threshold, service.clock.now()
    metrics.ROWS.inc(len(proba))
    for p in proba:
        metrics.SCORE.observe(p)
    answers, start = [], 0
    for rows in requests:
        end = start + len(rows)
        request_id = uuid.uuid4().hex
        service.log.submit(request_id, now, version, rows, proba[start:end])
        answers.append(orjson.dumps({"request_id": request_id, "model_version": version, "threshold": threshold,
                                     "predictions": [{"probability": p, "delayed": p >= threshold,
                                                      "model_version": version} for p in proba[start:end]]}))
        start = end
    return answers


def _app_from_env() -> "_PredictFirst":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # a retry per poll while MLflow is down
    return create_app()


# `uvicorn mlops_serving.app:app` (module-level, built on import) or `--factory mlops_serving.app:create_app`.
def __getattr__(name: str) -> Any:
    if name == "app":
        globals()["app"] = value = _app_from_env()
        return value
    raise AttributeError(name)
