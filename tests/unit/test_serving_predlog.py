"""The prediction log derives each row's key and week in its writer, off the request path
(mlops_serving.predlog): the values are those mlops.served.row_keys and mlops.data.week_labels give
on the request's own frame, whatever rows share a flush."""

from __future__ import annotations

from datetime import datetime, timezone

from mlops.config import load_schema
from mlops.data import week_labels
from mlops.served import row_keys
from mlops.serve_replay import request_bodies, week_rows
from mlops_serving.predlog import PredictionLog
from mlops_serving.rows import RowSpec, frame


def test_keys_and_weeks_are_derived_as_on_the_request_frame() -> None:
    schema = load_schema()
    spec = RowSpec.from_schema(schema)
    rows = request_bodies(week_rows("2013-W05", schema).iloc[:40], chunk=40)[0]["rows"]
    # Values as a client may write them: a float where the schema has an int, another UTC offset.
    rows[3] = {**rows[3], "flight": float(rows[3]["flight"])}
    rows[5] = {**rows[5], "time_hour": datetime.fromisoformat(rows[5]["time_hour"].replace("Z", "+00:00"))
               .astimezone(timezone.utc).isoformat()}
    log = PredictionLog("dbname=unused", 0.5, 1000, 90, schema)
    served_at = datetime.now(timezone.utc)
    requests = [rows[:1], rows[1:8], rows[8:]]
    for i, request in enumerate(requests):
        log.submit(f"r{i}", served_at, "7", request, [0.25] * len(request))
    assert log.pending() == len(rows)
    log._derive()
    assert log.pending() == len(rows)
    expected_keys, expected_weeks = [], []
    for request in requests:  # what scoring each request alone computed before
        raw = frame(request, spec)
        expected_keys += row_keys(raw, schema)
        expected_weeks += week_labels(raw, schema).tolist()
    assert [row[3] for row in log._ready] == expected_keys
    assert [row[4] for row in log._ready] == expected_weeks
    assert [row[0] for row in log._ready] == ["r0"] + ["r1"] * 7 + ["r2"] * 32
    assert {row[1:3] + row[5:] for row in log._ready} == {(served_at, "7", 0.25)}
    assert len(set(expected_keys)) == len(rows) and set(expected_weeks) == {"2013-W05"}


def test_a_disabled_log_queues_nothing() -> None:
    log = PredictionLog(None, 0.5, 1000, 90, load_schema())
    log.submit("r", datetime.now(timezone.utc), "1", [{"year": 2013}], [0.5])
    assert log.pending() == 0 and not log.enabled
