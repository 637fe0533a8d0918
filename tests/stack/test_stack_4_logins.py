"""Logins on the live test stack: MLflow (anonymous 401, viewer reads only, the pipeline account
moves aliases, the DAG tasks use it from the Fernet-encrypted Connection), Redis (refuses without
its password), Airflow's JWTs (signed with the stack's EdDSA key; the old shared secret mints
nothing), Prometheus (no lifecycle API; reload by SIGHUP) and the env-file upgrade."""

from __future__ import annotations

import re
import shutil
import time

import jwt
import psycopg2
import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry
from cryptography.fernet import Fernet

from stack import health
from stack.components import components
from stack.render import env_file

MLFLOW_API = "/api/2.0/mlflow"


def _mlflow(stack, method: str, path: str, account: str | None = None, **kwargs) -> requests.Response:
    auth = stack.mlflow_login(account) if account else None
    return requests.request(method, f"{stack.cfg.mlflow_url}{path}", auth=auth, timeout=30, **kwargs)


def _champion(stack) -> str:
    name = stack.cfg.env["MLOPS_MODEL_NAME"]
    resp = _mlflow(stack, "GET", f"{MLFLOW_API}/registered-models/alias", "viewer", params={"name": name, "alias": "champion"})
    assert resp.status_code == 200, resp.text
    return resp.json()["model_version"]["version"]


def test_mlflow_anonymous_gets_401_only_health_is_open(stack) -> None:
    name = stack.cfg.env["MLOPS_MODEL_NAME"]
    for method, path, kwargs in (
        ("GET", f"{MLFLOW_API}/experiments/search", {"params": {"max_results": 1}}),
        ("GET", f"{MLFLOW_API}/registered-models/get", {"params": {"name": name}}),
        ("POST", f"{MLFLOW_API}/registered-models/alias", {"json": {"name": name, "alias": "champion", "version": "1"}}),
        ("DELETE", f"{MLFLOW_API}/registered-models/alias", {"json": {"name": name, "alias": "champion"}}),
        ("POST", f"{MLFLOW_API}/registered-models/delete", {"json": {"name": name}}),
        ("GET", "/ajax-api/2.0/mlflow/experiments/search", {"params": {"max_results": 1}}),
        ("GET", "/metrics", {}),
        ("GET", "/", {}),
    ):
        assert _mlflow(stack, method, path, **kwargs).status_code == 401, (method, path)
    user, password = stack.mlflow_login("pipeline")
    resp = requests.get(f"{stack.cfg.mlflow_url}{MLFLOW_API}/experiments/search", params={"max_results": 1},
                        auth=(user, password + "x"), timeout=30)
    assert resp.status_code == 401
    assert _mlflow(stack, "GET", "/health").status_code == 200


def test_mlflow_viewer_reads_but_cannot_move_or_delete(stack, runs) -> None:
    name = stack.cfg.env["MLOPS_MODEL_NAME"]
    champion = _champion(stack)
    assert _mlflow(stack, "GET", f"{MLFLOW_API}/registered-models/get", "viewer", params={"name": name}).status_code == 200
    for method, path, body in (
        ("POST", "/registered-models/alias", {"name": name, "alias": "champion", "version": champion}),
        ("POST", "/registered-models/alias", {"name": name, "alias": "security_probe", "version": champion}),
        ("DELETE", "/registered-models/alias", {"name": name, "alias": "champion"}),
        ("POST", "/model-versions/create", {"name": name, "source": "models:/x", "run_id": ""}),
        ("POST", "/registered-models/delete", {"name": name}),
    ):
        resp = _mlflow(stack, method, MLFLOW_API + path, "viewer", json=body)
        assert resp.status_code == 403, (method, path, resp.status_code, resp.text[:200])
    assert _champion(stack) == champion


def test_pipeline_account_moves_an_alias_but_cannot_delete(stack, runs) -> None:
    name = stack.cfg.env["MLOPS_MODEL_NAME"]
    champion = _champion(stack)
    body = {"name": name, "alias": "security_probe", "version": champion}
    try:
        assert _mlflow(stack, "POST", f"{MLFLOW_API}/registered-models/alias", "pipeline", json=body).status_code == 200
        got = _mlflow(stack, "GET", f"{MLFLOW_API}/registered-models/alias", "viewer",
                      params={"name": name, "alias": "security_probe"})
        assert got.json()["model_version"]["version"] == champion
        # EDIT, not MANAGE: it may not delete, nor manage who may do what.
        resp = _mlflow(stack, "DELETE", f"{MLFLOW_API}/registered-models/alias", "pipeline",
                       json={"name": name, "alias": "security_probe"})
        assert resp.status_code == 403
        assert _mlflow(stack, "POST", f"{MLFLOW_API}/registered-models/delete", "pipeline",
                       json={"name": name}).status_code == 403
    finally:
        _mlflow(stack, "DELETE", f"{MLFLOW_API}/registered-models/alias", "admin",
                json={"name": name, "alias": "security_probe"})
    assert _champion(stack) == champion


def test_dag_tasks_log_in_with_the_encrypted_connection(stack, runs) -> None:
    """The pipeline ran (registered versions, moved the champion) with the login of the Airflow
    Connection mlflow_default, whose password is Fernet-encrypted in the metadata database."""
    env = stack.cfg.env
    conn = psycopg2.connect(host="127.0.0.1", port=stack.cfg.ports["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                            password=env["POSTGRES_PASSWORD"], dbname=env["POSTGRES_DB"])
    with conn, conn.cursor() as cur:
        cur.execute("SELECT conn_type, host, port, login, password, is_encrypted FROM connection WHERE conn_id = %s",
                    ("mlflow_default",))
        conn_type, host, port, login, raw, encrypted = cur.fetchone()
    conn.close()
    assert (conn_type, host, port, login) == ("http", "127.0.0.1", stack.cfg.ports["MLFLOW_PORT"], env["MLFLOW_PIPELINE_USER"])
    assert encrypted is True and env["MLFLOW_PIPELINE_PASSWORD"] not in raw
    assert Fernet(env["AIRFLOW_FERNET_KEY"].encode()).decrypt(raw.encode()).decode() == env["MLFLOW_PIPELINE_PASSWORD"]
    assert runs["ml"]["state"] == "success" and _champion(stack)
    assert "connection mlflow_default: created" in (stack.cfg.logs / "bootstrap.log").read_text()


def test_redis_refuses_without_its_password(stack) -> None:
    port = stack.cfg.ports["REDIS_PORT"]
    once = Retry(NoBackoff(), 0)  # redis-py retries connection errors (this one included) by default
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, retry=once).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, password=stack.cfg.env["REDIS_PASSWORD"] + "x", socket_timeout=5,
                    retry=once).ping()
    client = redis.Redis.from_url(stack.cfg.broker_url, socket_timeout=5)
    assert client.ping() is True
    assert client.config_get("appendonly") in ({"appendonly": "yes"}, {b"appendonly": b"yes"})
    pid = health.supervisor(stack.cfg).supervisor.getProcessInfo("redis")["pid"]
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode()
    assert stack.cfg.env["REDIS_PASSWORD"] not in cmdline, "the Redis password is on its command line"


def test_jwts_are_signed_with_the_stack_key_pair(stack) -> None:
    token = stack.token("viewer")
    header = jwt.get_unverified_header(token)
    jwks = jwt.PyJWKSet.from_json(stack.cfg.jwks_file.read_text())
    assert header["alg"] == "EdDSA" and header["kid"] in {k.key_id for k in jwks.keys}
    claims = jwt.decode(token, jwks[header["kid"]].key, algorithms=["EdDSA"], options={"verify_aud": False})
    assert claims["sub"]
    # The shared HS512 secret of the env file signs nothing any more: a token made with it is refused
    # (Airflow answers an invalid token with 403 "Invalid JWT token", a missing one with 401).
    forged = jwt.encode({**claims, "exp": int(time.time()) + 600}, stack.cfg.env["AIRFLOW_JWT_SECRET"],
                        algorithm="HS512", headers={"kid": header["kid"]})
    refused = stack.api("GET", "/dags", role=None, headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 403 and "Invalid JWT token" in refused.text, refused.text
    assert stack.api("GET", "/dags", role=None, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # Only the two signers are given the private key.
    holders = {c.name for c in components(stack.cfg) if c.present
               and "AIRFLOW__API_AUTH__JWT_PRIVATE_KEY_PATH" in env_file(stack.cfg, c).read_text()}
    assert holders == {"api-server", "scheduler"}


def test_prometheus_has_no_lifecycle_api_and_reloads_on_sighup(stack) -> None:
    url = stack.cfg.prometheus_url
    for path in ("/-/quit", "/-/reload"):
        resp = requests.post(url + path, timeout=30)
        assert resp.status_code in (403, 404), (path, resp.status_code)
    assert requests.get(f"{url}/-/ready", timeout=30).status_code == 200
    log = stack.cfg.logs / "prometheus.log"
    before = log.read_text().count("Completed loading of configuration file")
    health.supervisor(stack.cfg).supervisor.signalProcess("prometheus", "HUP")
    deadline = time.monotonic() + 30
    while log.read_text().count("Completed loading of configuration file") <= before:
        assert time.monotonic() < deadline, "no reload after SIGHUP"
        time.sleep(0.5)
    assert requests.get(f"{url}/-/ready", timeout=30).status_code == 200


NEW_VARS = ("REDIS_PASSWORD", "MLFLOW_AUTH_DB", "MLFLOW_ADMIN_USER", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_PIPELINE_USER",
            "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_VIEWER_USER", "MLFLOW_VIEWER_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")


def test_older_env_file_gets_the_new_secrets_and_nothing_else_changes(stack, tmp_path) -> None:
    old = tmp_path / "old.env"
    shutil.copy(stack.env_file, old)
    kept = [line for line in old.read_text().splitlines() if not line.startswith(tuple(f"{v}=" for v in NEW_VARS))]
    old.write_text("\n".join(kept) + "\n")
    result = stack.ctl("env", env_file=old)
    assert result.returncode == 0, result.stderr
    added = re.search(r"added to \S+ from \.env\.example \(secrets generated\): (.*)", result.stdout)
    assert added and set(added.group(1).split(", ")) == set(NEW_VARS), result.stdout
    lines = old.read_text().splitlines()
    assert lines[:len(kept)] == kept, "an existing line changed"
    new = dict(line.split("=", 1) for line in lines[len(kept):] if "=" in line)
    assert set(new) == set(NEW_VARS) and all(new.values()), new
    assert new["REDIS_PASSWORD"] != stack.cfg.env["REDIS_PASSWORD"]  # generated afresh
    again = stack.ctl("env", env_file=old)
    assert "added to" not in again.stdout and old.read_text().splitlines() == lines
