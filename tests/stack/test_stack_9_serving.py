"""The prediction service (program `serving`) on the live test stack.

Versions are trained here on the shared world's weeks and registered with the pipeline's MLflow
login in the stack's MLflow (as the pipeline's tasks do), so the module needs no DAG run; the
champion alias is moved with mlops.registry, and put back where it was at the end. The test stack
polls the alias every second (SERVING_POLL_S=1 in stack_session.py).
"""

from __future__ import annotations

import json
import os
import pwd
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import psutil
import psycopg2
import pytest
import requests

from stack import envfile
from stack.components import by_name
from stack.config import SERVING_USER
from stack.render import env_file
from testkit import faults

pytestmark = pytest.mark.stack
WEEKS = {"train_weeks": ["2013-W01", "2013-W02"], "holdout_week": "2013-W03"}
WEEK = "2013-W03"


class Service:
    """The test stack's prediction service over HTTP."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.url = stack.cfg.serving_url
        self.auth = {"Authorization": f"Bearer {stack.cfg.env['SERVING_TOKEN']}"}

    def health(self) -> dict:
        """/health's JSON ({} while nothing answers, e.g. during a restart)."""
        try:
            return requests.get(f"{self.url}/health", timeout=10).json()
        except (requests.ConnectionError, ValueError):
            return {}

    def predict(self, rows: list[dict], headers: dict | None = None, **kwargs) -> requests.Response:
        return requests.post(f"{self.url}/predict", json={"rows": rows} if rows is not None else None,
                             headers=self.auth if headers is None else headers, timeout=60, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(f"{self.url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0

    def wait_version(self, version: str, timeout: float = 60) -> float:
        """Seconds until /health serves `version`."""
        started = time.monotonic()
        faults.wait_for(lambda: self.health().get("model_version") == version, f"serving v{version}", timeout, 0.2)
        return time.monotonic() - started


@pytest.fixture(scope="module")
def mlflow_env(stack, world, shared_world: Path):
    """This process points at the stack's MLflow with the pipeline login and at the world's data."""
    with pytest.MonkeyPatch.context() as mp:
        world.use_data_dir(shared_world, mp)
        user, password = stack.mlflow_login("pipeline")
        mp.setenv("MLFLOW_TRACKING_URI", stack.cfg.mlflow_url)
        mp.setenv("MLFLOW_TRACKING_USERNAME", user)
        mp.setenv("MLFLOW_TRACKING_PASSWORD", password)
        mp.setenv("MLOPS_MODEL_NAME", stack.cfg.env["MLOPS_MODEL_NAME"])
        yield


@pytest.fixture(scope="module")
def versions(stack, mlflow_env) -> dict:
    """Two good versions (a, b) and one to break (c); the champion of the stack before the module
    (restored after it)."""
    from mlops.registry import champion_version, set_champion
    from mlops.train import train_model

    before = champion_version()
    made = {name: train_model(**WEEKS, max_rows=rows)["version"]
            for name, rows in (("a", 2100), ("b", 2600), ("c", 3100))}
    assert len(set(made.values())) == 3
    set_champion(made["a"], "test_stack_9_serving: start", expected_champion=before)
    service = Service(stack)
    service.wait_version(made["a"])
    yield {**made, "before": before}
    if before is not None:
        set_champion(before, "test_stack_9_serving: restore", expected_champion=champion_version())


@pytest.fixture(scope="module")
def week_rows(world, shared_world: Path) -> list[dict]:
    """Every row of a genuine week, as a client sends it (the columns known before departure)."""
    from mlops.config import load_schema
    from mlops.data import read_batch
    from mlops.served import request_columns

    required, optional = request_columns(load_schema())
    raw = read_batch(shared_world / "accepted" / f"{WEEK}.csv")
    return json.loads(raw[[*required, *optional]].to_json(orient="records", date_format="iso"))


def test_serving_runs_as_its_own_user_and_holds_only_its_secrets(stack) -> None:
    comp = by_name(stack.cfg)["serving"]
    assert comp.user == SERVING_USER
    pid = faults.health.supervisor(stack.cfg).supervisor.getProcessInfo(comp.program)["pid"]
    assert {pwd.getpwuid(uid).pw_name for uid in psutil.Process(pid).uids()} == {SERVING_USER}
    env = json.loads(env_file(stack.cfg, comp).read_text())
    secrets = {k: v for k, v in stack.cfg.env.items() if envfile.is_secret(k) and v}
    held = sorted(name for name, value in secrets.items() if any(value in v for v in env.values()))
    assert held == ["MLFLOW_SERVING_PASSWORD", "PREDICTIONS_DB_PASSWORD", "SERVING_TOKEN"], held
    # Its MLflow login reads the registry but cannot move an alias.
    auth = (stack.cfg.env["MLFLOW_SERVING_USER"], stack.cfg.env["MLFLOW_SERVING_PASSWORD"])
    model = stack.cfg.env["MLOPS_MODEL_NAME"]
    api = f"{stack.cfg.mlflow_url}/api/2.0/mlflow/registered-models"
    assert requests.get(f"{api}/get", params={"name": model}, auth=auth, timeout=30).status_code == 200
    moved = requests.post(f"{api}/alias", json={"name": model, "alias": "champion", "version": "1"}, auth=auth,
                          timeout=30)
    assert moved.status_code == 403, moved.text
    # Its database role is no superuser and owns only the prediction log.
    with _db(stack, "PREDICTIONS_DB_USER", "PREDICTIONS_DB_PASSWORD") as conn, conn.cursor() as cur:
        cur.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (False, False, False)


def _db(stack, user_var: str, password_var: str):
    e = stack.cfg.env
    return psycopg2.connect(host="127.0.0.1", port=stack.cfg.ports["POSTGRES_PORT"], dbname=e["PREDICTIONS_DB"],
                            user=e[user_var], password=e[password_var])


def test_bad_requests_get_a_clear_answer(stack, versions, week_rows) -> None:
    service = Service(stack)
    row = dict(week_rows[0])
    assert service.predict([row]).status_code == 200
    # 401: no token, wrong token
    assert service.predict([row], headers={}).status_code == 401
    assert service.predict([row], headers={"Authorization": "Bearer wrong-token-of-some-length"}).status_code == 401
    # 422 naming the row index and the field
    cases = [
        ({k: v for k, v in row.items() if k != "carrier"}, "carrier", "missing"),
        ({**row, "distance": "far"}, "distance", "wrong type"),
        ({**row, "time_hour": "yesterday"}, "time_hour", "wrong type"),
        ({**row, "carrier": 7}, "carrier", "wrong type"),
        ({**row, "dest": "XXX"}, "dest", "unknown category"),
        ({**row, "arr_delay": 12.0}, "arr_delay", "outcome column"),
        ({**row, "colour": "red"}, "colour", "unknown column"),
        ({**row, "flight": None}, "flight", "missing"),
    ]
    for bad, field, problem in cases:
        resp = service.predict([row, row, bad])
        assert resp.status_code == 422, (field, resp.text)
        body = resp.json()
        assert body["row"] == 2 and body["field"] == field and problem in body["problem"], body
        assert f"row 2, field '{field}'" in body["error"]
    for body in (b"not json", b'{"rows": 5}', b'{"lines": []}', b'{"rows": []}'):
        resp = requests.post(f"{service.url}/predict", data=body, headers=service.auth, timeout=30)
        assert resp.status_code == 422, (body, resp.text)
    # 413: too many rows, too many bytes
    limit = int(stack.cfg.env.get("SERVING_MAX_ROWS") or 10000)
    resp = service.predict([row] * (limit + 1))
    assert resp.status_code == 413 and "SERVING_MAX_ROWS" in resp.json()["error"], resp.text[:300]
    size = int(stack.cfg.env.get("SERVING_MAX_BODY_BYTES") or 8388608)
    resp = requests.post(f"{service.url}/predict", data=b" " * (size + 1), headers=service.auth, timeout=60)
    assert resp.status_code == 413 and "SERVING_MAX_BODY_BYTES" in resp.json()["error"]
    # Refused requests are counted by status; nothing of them was logged.
    assert service.metric("mlops_serving_requests_total", status="422") >= len(cases) + 4
    assert service.metric("mlops_serving_requests_total", status="401") >= 2


def test_offline_equals_online_on_a_whole_week(stack, versions, week_rows) -> None:
    """Every row of a genuine week through /predict and through evaluate's loader and the package's
    feature code (make_features + model_input, as evaluate and the drift check score)."""
    import pandas as pd

    from mlops.config import load_schema
    from mlops.data import build_table, make_features
    from mlops.evaluate import load_version, score_version
    from mlops.modeling import model_input

    service = Service(stack)
    online, request_ids = [], []
    for start in range(0, len(week_rows), 1000):
        resp = service.predict(week_rows[start:start + 1000])
        assert resp.status_code == 200, resp.text[:500]
        body = resp.json()
        assert body["model_version"] == versions["a"]
        online += [p["probability"] for p in body["predictions"]]
        request_ids.append(body["request_id"])
    assert service.health()["compiled"] is True  # the service's fast path is what was compared
    schema = load_schema()
    raw = pd.DataFrame(week_rows)
    offline = load_version(versions["a"]).predict_proba(model_input(make_features(raw, schema), schema))[:, 1]
    assert len(online) == len(week_rows) == len(offline)
    assert float(np.max(np.abs(np.asarray(online) - offline))) <= 1e-9
    # The labelled rows score like evaluate scores them from the training table.
    from mlops.data import read_batch

    batch = read_batch(Path(os.environ["MLOPS_DATA_DIR"]) / "accepted" / f"{WEEK}.csv")
    table = build_table([(WEEK, batch)], schema)
    assert score_version(versions["a"], table)["rows"] == len(table)
    # ... and every prediction is in the log, with the row key and week the monitoring joins on.
    from mlops.served import row_keys

    keys = row_keys(raw, schema)

    def logged() -> int:
        with _db(stack, "PREDICTIONS_READER_USER", "PREDICTIONS_READER_PASSWORD") as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM predictions WHERE request_id = ANY(%s)", (request_ids,))
            return cur.fetchone()[0]

    faults.wait_for(lambda: logged() == len(week_rows), "every prediction logged", 30)
    with _db(stack, "PREDICTIONS_READER_USER", "PREDICTIONS_READER_PASSWORD") as conn, conn.cursor() as cur:
        cur.execute("SELECT row_key, week, model_version, probability FROM predictions WHERE request_id = %s "
                    "ORDER BY row_key", (request_ids[0],))
        got = cur.fetchall()
        expected = sorted(zip(keys[:1000], online[:1000]))
        assert [(k, p) for k, _, _, p in got] == expected
        assert {w for _, w, _, _ in got} == {WEEK} and {v for _, _, v, _ in got} == {versions["a"]}
        # The reader cannot write.
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("DELETE FROM predictions")


class Load:
    """A few threads sending requests (one row or ten) until stopped; records every answer."""

    def __init__(self, service: Service, rows: list[dict], threads: int = 4) -> None:
        self.service, self.rows = service, rows
        self.answers: list[tuple[float, int, str | None, str | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        n = 0
        with requests.Session() as session:
            while not self._stop.is_set():
                n += 1
                batch = self.rows[(n * 7 + i) % 500:(n * 7 + i) % 500 + (10 if n % 2 else 1)]
                try:
                    resp = session.post(f"{self.service.url}/predict", json={"rows": batch},
                                        headers=self.service.auth, timeout=30)
                    body = resp.json() if resp.status_code == 200 else {}
                    versions = {p["model_version"] for p in body.get("predictions", [])}
                    assert len(versions) <= 1
                    self.answers.append((time.time(), resp.status_code, body.get("model_version"),
                                         body.get("request_id")))
                except requests.RequestException as exc:
                    self.answers.append((time.time(), 0, None, str(exc)))

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def test_deploy_and_rollback_under_load_fail_no_request(stack, versions, week_rows) -> None:
    from mlops.registry import rollback, set_champion

    service = Service(stack)
    swaps_before = service.health()["swaps"]
    with Load(service, week_rows) as load:
        time.sleep(1)
        moved = time.time()
        set_champion(versions["b"], "test: deploy under load", expected_champion=versions["a"])
        deploy_s = service.wait_version(versions["b"], 30)
        time.sleep(1)
        rolled = time.time()
        assert rollback("test: rollback under load")["champion_version"] == versions["a"]
        rollback_s = service.wait_version(versions["a"], 30)
        time.sleep(1)
    statuses = {status for _, status, _, _ in load.answers}
    assert statuses == {200}, [a for a in load.answers if a[1] != 200][:5]
    # a, then b, then a again: every answer from the version in service at the time, none mixed.
    # In the order the service scored them (its log's served_at): the answers of a batch arrive
    # within a millisecond, and four client threads may note them in another order.
    answered = {rid: v for _, status, v, rid in load.answers if status == 200}

    def scored() -> list[tuple[str, str]] | None:
        with _db(stack, "PREDICTIONS_READER_USER", "PREDICTIONS_READER_PASSWORD") as conn, conn.cursor() as cur:
            cur.execute("SELECT request_id, min(model_version), max(model_version) FROM predictions "
                        "WHERE request_id = ANY(%s) GROUP BY request_id ORDER BY min(served_at), request_id",
                        (list(answered),))
            rows = cur.fetchall()
        return rows if len(rows) == len(answered) else None

    rows = faults.wait_for(scored, "every answer logged", 30)
    assert all(low == high == answered[rid] for rid, low, high in rows)
    seen = [v for _, v, _ in rows]
    changes = [v for i, v in enumerate(seen) if i == 0 or v != seen[i - 1]]
    assert changes == [versions["a"], versions["b"], versions["a"]], changes
    first_b = min(t for t, _, v, _ in load.answers if v == versions["b"])
    assert first_b - moved < 10 and deploy_s < 10 and rollback_s < 10
    assert max(t for t, _, v, _ in load.answers if v == versions["b"]) > rolled - 0.5
    assert service.health()["swaps"] == swaps_before + 2
    assert len(load.answers) > 20


def test_mlflow_down_keeps_serving_and_reports_staleness(stack, versions, week_rows) -> None:
    service = Service(stack)
    version = service.health()["model_version"]
    faults.stop(stack.cfg, "mlflow")
    try:
        time.sleep(4)
        health = service.health()
        assert health["status"] == "ready" and health["model_version"] == version
        assert health["registry_check_age_s"] > 2.5 and health["registry_check_error"], health
        assert service.metric("mlops_serving_registry_check_age_seconds") > 2.5
        resp = service.predict(week_rows[:3])
        assert resp.status_code == 200 and resp.json()["model_version"] == version
    finally:
        faults.start(stack.cfg, "mlflow")
    faults.wait_for(lambda: service.health()["registry_check_age_s"] < 2, "a registry check after MLflow is back",
                    120, 0.5)
    assert service.metric("mlops_serving_registry_check_age_seconds") < 2.5


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(stack, versions, week_rows) -> None:
    from mlflow.tracking import MlflowClient

    from mlops import config
    from mlops.registry import champion_version, set_champion

    service = Service(stack)
    good, broken = service.health()["model_version"], versions["c"]
    uri = MlflowClient().get_model_version_download_uri(config.model_name(), broken)
    # The server stores artifacts under its --artifacts-destination: the stack's mlflow/artifacts.
    model_file = _artifact_file(stack, uri, "model.skops")
    saved = model_file.read_bytes()
    failures = service.metric("mlops_serving_model_load_failures_total")
    model_file.write_bytes(saved[:-100] + b"x" * 100)
    try:
        set_champion(broken, "test: broken artifact", expected_champion=good)
        faults.wait_for(lambda: broken in service.health()["refused_versions"], f"v{broken} refused", 30, 0.3)
        health = service.health()
        assert health["model_version"] == good and "model_sha256" in health["refused_versions"][broken]
        assert service.metric("mlops_serving_model_load_failures_total") == failures + 1
        # What ServingStaleModel compares: the alias names the refused version, the old one serves.
        assert service.metric("mlops_serving_registry_champion_version") == float(broken)
        assert service.metric("mlops_serving_model_version") == float(good)
        resp = service.predict(week_rows[:2])
        assert resp.status_code == 200 and resp.json()["model_version"] == good
        assert "refused v" + broken in stack.ctl("status").stdout
    finally:
        model_file.write_bytes(saved)
        set_champion(good, "test: restore after the broken artifact", expected_champion=champion_version())


def _artifact_file(stack, uri: str, name: str) -> Path:
    """The file behind a model version's artifact URI (``mlflow-artifacts:/<path>``) on the stack's
    artifact store (MLflow's --artifacts-destination)."""
    parsed = urlparse(uri)
    assert parsed.scheme == "mlflow-artifacts", uri
    path = stack.cfg.home / "mlflow" / "artifacts" / parsed.path.lstrip("/") / name
    assert path.is_file(), (uri, path)
    return path


def test_a_crash_loses_at_most_the_last_second_of_logs(stack, versions, week_rows) -> None:
    """SIGKILL the service under load: every answer older than one second before the kill is in the
    log (the writer flushes every SERVING_LOG_FLUSH_S, 0.5 s by default)."""
    service = Service(stack)
    with Load(service, week_rows, threads=3) as load:
        time.sleep(3)
        fault = faults.kill_tree(stack.cfg, "serving")
        time.sleep(0.5)
    answered = [(t, rid) for t, status, _, rid in load.answers if status == 200 and t <= fault.at]
    assert len(answered) > 10
    faults.wait_for(lambda: service.health().get("status") == "ready", "serving back after SIGKILL", 180, 0.5)
    with _db(stack, "PREDICTIONS_READER_USER", "PREDICTIONS_READER_PASSWORD") as conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT request_id FROM predictions WHERE request_id = ANY(%s)",
                    ([rid for _, rid in answered],))
        logged = {row[0] for row in cur.fetchall()}
    lost = [(t, rid) for t, rid in answered if rid not in logged]
    window = fault.at - min((t for t, _ in lost), default=fault.at)
    print(f"crash loss: {len(lost)} of {len(answered)} answered requests, answered within the last {window:.2f} s")
    assert window <= 1.0, (len(lost), window)


def test_the_log_is_partitioned_by_day_and_old_days_are_dropped(stack) -> None:
    """The writer's retention pruning (run hourly by the service) on the stack's real table: a day
    older than PREDICTIONS_RETENTION_DAYS is dropped, today's partition stays."""
    from datetime import datetime, timedelta, timezone

    from mlops_serving.predlog import partition_ddl, partition_name, prune

    now = datetime.now(timezone.utc)
    old = now - timedelta(days=400)
    with _db(stack, "PREDICTIONS_DB_USER", "PREDICTIONS_DB_PASSWORD") as conn:
        with conn.cursor() as cur:
            cur.execute(partition_ddl(old))
            cur.execute("INSERT INTO predictions VALUES ('old', %s, '1', 'k', '2013-W01', 0.5)", (old,))
        conn.commit()
        assert prune(conn, 90) == [partition_name(old)]
        with conn.cursor() as cur:
            cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'predictions'")
            names = {row[0] for row in cur.fetchall()}
            cur.execute("SELECT count(*) FROM predictions WHERE request_id = 'old'")
            assert cur.fetchone()[0] == 0
    assert partition_name(now) in names and partition_name(old) not in names
