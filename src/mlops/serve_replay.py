"""``mlops serve-replay``: send a week's flights to the prediction service, as a client would
before the week's labelled batch exists.

The rows come from the data set itself (the source the weekly replay cuts batches from), without
the outcome columns (the schema's ``leaking`` columns and the label's column), in requests of
``chunk`` rows to ``$MLOPS_SERVING_URL/predict`` with ``Authorization: Bearer $SERVING_TOKEN``.
The service logs each prediction with its row key; :mod:`mlops.monitoring` joins them with the
labels once the week's batch is accepted.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from mlops import config
from mlops.config import Schema, load_schema
from mlops.errors import MonitoringError
from mlops.util import WEEK_RE

if TYPE_CHECKING:
    import pandas as pd

CHUNK_ROWS = 500
TIMEOUT_S = 60.0


def outcome_columns(schema: Schema) -> list[str]:
    """Columns a client cannot know before departure: never sent to /predict."""
    return sorted({*schema.leaking, schema.target_column})


def week_rows(week: str, schema: Schema | None = None) -> "pd.DataFrame":
    """The raw rows of ``week`` from the data set, outcome columns dropped."""
    from mlops.data import _source_with_weeks

    if not WEEK_RE.match(week):
        raise ValueError(f"week {week!r} is not an ISO week like 2013-W07")
    schema = schema or load_schema()
    source, weeks = _source_with_weeks(schema)
    rows = source[weeks == week]
    if rows.empty:
        raise MonitoringError(f"{schema.path}: the data set has no rows in week {week}")
    return rows.drop(columns=[c for c in outcome_columns(schema) if c in rows.columns])


def request_bodies(rows: "pd.DataFrame", chunk: int = CHUNK_ROWS) -> list[dict[str, Any]]:
    """``{"rows": [...]}`` bodies of at most ``chunk`` rows, missing values as JSON null."""
    records = rows.to_dict(orient="records")
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
             for r in records]
    return [{"rows": clean[i:i + chunk]} for i in range(0, len(clean), chunk)]


def token() -> str:
    """The service token (``SERVING_TOKEN``)."""
    value = os.environ.get("SERVING_TOKEN", "")
    if not value:
        raise MonitoringError("SERVING_TOKEN is not set: /predict needs the service token "
                              "(see .env)")
    return value


def serve_week(week: str, url: str | None = None, chunk: int = CHUNK_ROWS) -> dict[str, Any]:
    """POST the week's rows to ``/predict``; the rows sent, the requests made, the rows answered
    per model version and the mean probability.

    A row the service refuses because the model in service never saw one of its categories (422
    ``unknown category``) is left out of its request, which is sent again, and counted in
    ``refused`` by field; any other refusal stops with the service's answer.
    """
    import httpx

    url = (url or config.serving_url()).rstrip("/")
    bodies = request_bodies(week_rows(week), chunk)
    versions: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    total, count, requests = 0.0, 0, 0
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=TIMEOUT_S,
                      headers={"Authorization": f"Bearer {token()}"}) as client:
        for index, body in enumerate(bodies):
            rows = list(body["rows"])
            while rows:
                requests += 1
                try:
                    resp = client.post("/predict", json={"rows": rows})
                except httpx.HTTPError as exc:
                    raise ConnectionError(f"{url}/predict: request {index + 1}/{len(bodies)} of "
                                          f"week {week} failed: {exc}") from exc
                answer = _json(resp)
                if (resp.status_code == 422 and isinstance(answer.get("row"), int)
                        and "unknown category" in str(answer.get("problem", ""))
                        and 0 <= answer["row"] < len(rows)):
                    refused[str(answer.get("field"))] += 1
                    del rows[answer["row"]]
                    continue
                if resp.status_code != 200:
                    raise MonitoringError(f"{url}/predict answered {resp.status_code} to request "
                                          f"{index + 1}/{len(bodies)} of week {week}: "
                                          f"{resp.text[:300]}")
                for pred in answer["predictions"]:
                    versions[str(pred["model_version"])] += 1
                    total += float(pred["probability"])
                    count += 1
                break
    return {"week": week, "url": url, "rows": count, "requests": requests,
            "refused": dict(sorted(refused.items())),
            "model_versions": dict(sorted(versions.items())),
            "mean_probability": total / count if count else None,
            "seconds": round(time.monotonic() - started, 2)}


def _json(resp: Any) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
