"""Logins on the compose stack, the claims of tests/stack/test_stack_4_logins.py where they apply:
MLflow (anonymous 401, the viewer reads only, the pipeline account moves an alias but deletes
nothing, /metrics for admins only while Prometheus scrapes the login-free exporter), Redis (refuses
a client on the compose network without its password; the password only in its config file),
Airflow's JWTs (EdDSA, signed with the key pair airflow-init generated; a token signed with the env
file's shared secret is refused; only the signers mount the private key) and Prometheus (no
lifecycle API; reloads on SIGHUP)."""

from __future__ import annotations

import json
import time

import jwt
import requests

from testkit.compose_stack import PROJECT, ComposeStack

MLFLOW_API = "/api/2.0/mlflow"


def _champion(stack: ComposeStack) -> str:
    champion = stack.champion()
    assert champion is not None, "no champion after the pipeline run"
    return champion


def test_mlflow_anonymous_gets_401_only_health_is_open(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    name = stack.env["MLOPS_MODEL_NAME"]
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
        assert stack.mlflow_request(method, path, None, **kwargs).status_code == 401, (method, path)
    user, password = stack.mlflow_login("pipeline")
    wrong = requests.get(f"{stack.url('MLFLOW_PORT')}{MLFLOW_API}/experiments/search", params={"max_results": 1},
                         auth=(user, password + "x"), timeout=30)
    assert wrong.status_code == 401
    assert stack.mlflow_request("GET", "/health", None).status_code == 200


def test_mlflow_viewer_reads_but_cannot_move_or_delete(compose_stack: ComposeStack, pipeline_run: dict) -> None:
    stack = compose_stack
    name = stack.env["MLOPS_MODEL_NAME"]
    champion = _champion(stack)
    assert stack.mlflow_request("GET", f"{MLFLOW_API}/registered-models/get", params={"name": name}).status_code == 200
    for method, path, body in (
        ("POST", "/registered-models/alias", {"name": name, "alias": "champion", "version": champion}),
        ("POST", "/registered-models/alias", {"name": name, "alias": "security_probe", "version": champion}),
        ("DELETE", "/registered-models/alias", {"name": name, "alias": "champion"}),
        ("POST", "/model-versions/create", {"name": name, "source": "models:/x", "run_id": ""}),
        ("POST", "/registered-models/delete", {"name": name}),
    ):
        resp = stack.mlflow_request(method, MLFLOW_API + path, "viewer", json=body)
        assert resp.status_code == 403, (method, path, resp.status_code, resp.text[:200])
    assert _champion(stack) == champion


def test_pipeline_account_moves_an_alias_but_cannot_delete(compose_stack: ComposeStack, pipeline_run: dict) -> None:
    stack = compose_stack
    name = stack.env["MLOPS_MODEL_NAME"]
    champion = _champion(stack)
    body = {"name": name, "alias": "security_probe", "version": champion}
    try:
        moved = stack.mlflow_request("POST", f"{MLFLOW_API}/registered-models/alias", "pipeline", json=body)
        assert moved.status_code == 200, moved.text[:300]
        got = stack.mlflow("/api/2.0/mlflow/registered-models/alias", name=name, alias="security_probe")
        assert got.json()["model_version"]["version"] == champion
        # EDIT, not MANAGE: it may not delete, nor manage who may do what.
        assert stack.mlflow_request("DELETE", f"{MLFLOW_API}/registered-models/alias", "pipeline",
                                    json={"name": name, "alias": "security_probe"}).status_code == 403
        assert stack.mlflow_request("POST", f"{MLFLOW_API}/registered-models/delete", "pipeline",
                                    json={"name": name}).status_code == 403
    finally:
        stack.mlflow_request("DELETE", f"{MLFLOW_API}/registered-models/alias", "admin",
                             json={"name": name, "alias": "security_probe"})
    assert _champion(stack) == champion


def test_mlflow_metrics_for_admins_only_prometheus_scrapes_the_exporter(compose_stack: ComposeStack,
                                                                         pipeline_run: dict) -> None:
    """MLflow's own /metrics: 401 anonymous, 403 for a non-admin login, 200 for the admin; Prometheus
    holds no MLflow login and gets the same series from the mlflow-metrics exporter."""
    stack = compose_stack
    assert stack.mlflow_request("GET", "/metrics", None).status_code == 401
    assert stack.mlflow_request("GET", "/metrics", "viewer").status_code == 403
    admin = stack.mlflow_request("GET", "/metrics", "admin")
    assert admin.status_code == 200 and "mlflow_http_request_total" in admin.text
    query = 'mlflow_http_request_total{job="mlflow"}'
    stack.wait_for(f"{query} in Prometheus", lambda: stack.prometheus_query(query), timeout=60)
    prometheus = stack.prometheus_get("/api/v1/status/config")["data"]["yaml"]
    assert stack.env["MLFLOW_ADMIN_PASSWORD"] not in prometheus and stack.env["MLFLOW_VIEWER_PASSWORD"] not in prometheus


_REDIS_PROBE = """
import json, os
from urllib.parse import urlsplit
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
broker = os.environ["AIRFLOW__CELERY__BROKER_URL"]
once = Retry(NoBackoff(), 0)
out = {}
url = urlsplit(broker)
for label, user, password in (("none", None, None), ("wrong", url.username, url.password + "x")):
    try:
        redis.Redis(host="redis", username=user, password=password, socket_timeout=5, retry=once).ping()
        out[label] = "accepted"
    except redis.RedisError as exc:
        out[label] = type(exc).__name__
client = redis.Redis.from_url(broker, socket_timeout=5)
out["broker"] = client.ping()
print(json.dumps(out))
"""


def test_redis_refuses_without_its_password(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    # From another container of the compose network (a light worker, which holds the broker URL).
    probe = stack.exec("airflow-worker-light", "python", "-c", _REDIS_PROBE)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result == {"none": "AuthenticationError", "wrong": "AuthenticationError", "broker": True}, result
    # Append-only on (asked as the admin, whose password only the redis container holds).
    appendonly = stack.exec("redis", "sh", "-c", 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli config get appendonly')
    assert appendonly.stdout.split() == ["appendonly", "yes"], appendonly.stdout + appendonly.stderr
    password = stack.env["REDIS_PASSWORD"]
    (redis_container,) = stack.containers("redis", all_states=False)
    config = redis_container["Config"]
    # Not in the command, the arguments or the health check (REDISCLI_AUTH from the environment) ...
    assert password not in json.dumps([config["Cmd"], config.get("Entrypoint"), redis_container["Args"],
                                       config["Healthcheck"]])
    cmdline = stack.exec("redis", "cat", "/proc/1/cmdline")
    assert cmdline.returncode == 0 and "redis-server" in cmdline.stdout and password not in cmdline.stdout
    # ... and not even in its files: the ACL file holds SHA-256 digests (stack/grants.py).
    conf = stack.exec("redis", "stat", "-c", "%a %U", "/tmp/redis-conf/redis.conf")
    assert conf.stdout.split() == ["600", "redis"], conf.stdout + conf.stderr
    acl = stack.exec("redis", "cat", "/etc/redis-acl/users.acl")
    assert acl.returncode == 0 and "user worker " in acl.stdout, acl.stderr
    assert not [k for k, v in stack.env.items() if k.startswith("REDIS_") and v and v in acl.stdout]


def test_jwts_are_signed_with_the_key_pair_airflow_init_made(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    token = stack.token("viewer")
    header = jwt.get_unverified_header(token)
    jwks_file = stack.exec("airflow-apiserver", "cat", "/opt/airflow/jwks/jwks.json")
    assert jwks_file.returncode == 0, jwks_file.stderr
    jwks = jwt.PyJWKSet.from_json(jwks_file.stdout)
    assert header["alg"] == "EdDSA" and header["kid"] in {k.key_id for k in jwks.keys}
    claims = jwt.decode(token, jwks[header["kid"]].key, algorithms=["EdDSA"], options={"verify_aud": False})
    assert claims["sub"]
    # The env file's shared HS512 secret signs nothing: a token made with it is refused.
    forged = jwt.encode({**claims, "exp": int(time.time()) + 600}, stack.env["AIRFLOW_JWT_SECRET"],
                        algorithm="HS512", headers={"kid": header["kid"]})
    refused = stack.api("GET", "/dags", role=None, headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 403 and "Invalid JWT token" in refused.text, refused.text
    assert stack.api("GET", "/dags", role=None, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # Only the two signers mount the private key; it is the airflow user's, mode 600.
    volume = f"{PROJECT}_airflow-jwt-signing-key"
    holders = {c["Config"]["Labels"]["com.docker.compose.service"] for c in stack.containers()
               if any(m.get("Name") == volume for m in c["Mounts"])}
    assert holders == {"airflow-init", "airflow-apiserver", "airflow-scheduler"}, holders
    key = stack.exec("airflow-apiserver", "stat", "-c", "%a %U", "/opt/airflow/jwt-signing-key/jwt-signing.pem")
    assert key.stdout.split() == ["600", "airflow"], key.stdout + key.stderr


def test_prometheus_has_no_lifecycle_api_and_reloads_on_sighup(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    url = stack.url("PROMETHEUS_PORT")
    for path in ("/-/quit", "/-/reload"):
        resp = requests.post(url + path, timeout=30)
        assert resp.status_code in (403, 404), (path, resp.status_code)
    assert requests.get(f"{url}/-/ready", timeout=30).status_code == 200
    (prometheus,) = stack.containers("prometheus", all_states=False)

    def reloads() -> int:
        logs = stack.docker("logs", prometheus["Id"])
        return (logs.stdout + logs.stderr).count("Completed loading of configuration file")

    before = reloads()
    assert stack.docker("kill", "--signal", "HUP", prometheus["Id"]).returncode == 0
    stack.wait_for("Prometheus reloads its configuration after SIGHUP", lambda: reloads() > before, timeout=30,
                   every=0.5)
    assert requests.get(f"{url}/-/ready", timeout=30).status_code == 200
