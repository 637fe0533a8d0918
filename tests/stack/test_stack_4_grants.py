"""The logins each component holds on the stack's own servers (stack/grants.py), on the live stack:

- PostgreSQL: every role in a rendered URL (each program's environment file, MLflow's user-store
  config) owns its database and is no superuser: `COPY ... TO PROGRAM` is refused, and no
  component holds the superuser's password;
- Redis: the scheduler, the workers and Flower log in as their own ACL users, which get NOPERM on
  CONFIG, FLUSHALL, SHUTDOWN, MONITOR and EVAL, and nothing Celery or Flower sent during the
  session's pipeline runs was refused (Redis' ACL LOG);
- the Pushgateway and Alertmanager refuse anonymous pushes, deletes and silences (401);
- the task-log server's key signs no UI session (the api-server's session cookies verify with the
  UI key only).
"""

from __future__ import annotations

import configparser
import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg2
import pytest
import redis
import requests
from itsdangerous import BadSignature, Signer

from stack import grants
from stack.components import UI_SECRET_VAR, by_name, components
from stack.render import env_file


def _pg_logins(stack) -> dict[tuple[str, str], str]:
    """(role, database) -> password of every PostgreSQL URL rendered for a program (or MLflow's
    user store)."""
    values: list[str] = []
    for comp in components(stack.cfg):
        if comp.present:
            values += json.loads(env_file(stack.cfg, comp).read_text()).values()
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(stack.cfg.mlflow_auth_config)
    values.append(ini["mlflow"]["database_uri"])
    logins = {}
    for value in values:
        url = urlsplit(value) if "postgresql" in value.split("://", 1)[0] else None
        if url is not None and url.password:
            logins[(unquote(url.username), url.path.lstrip("/"))] = unquote(url.password)
    return logins


def _connect(stack, user: str, password: str, database: str):
    return psycopg2.connect(host="127.0.0.1", port=stack.cfg.ports["POSTGRES_PORT"], user=user, password=password,
                            dbname=database, connect_timeout=5)


def test_no_component_connects_as_a_superuser(stack) -> None:
    env = stack.cfg.env
    logins = _pg_logins(stack)
    # The prediction service holds its owner login as a password, not a URL (mlops_serving.settings).
    serving_env = json.loads(env_file(stack.cfg, by_name(stack.cfg)["serving"]).read_text())
    logins[(env["PREDICTIONS_DB_USER"], env["PREDICTIONS_DB"])] = serving_env["PREDICTIONS_DB_PASSWORD"]
    owners = {(env["POSTGRES_DB"],) * 2, (env["MLFLOW_DB"],) * 2, (env["MLFLOW_AUTH_DB"],) * 2,
              (env["PREDICTIONS_DB_USER"], env["PREDICTIONS_DB"])}
    readers = {(env["POSTGRES_EXPORTER_USER"], env["POSTGRES_DB"])}  # the postgres-exporter (read-only)
    assert set(logins) == owners | readers, logins
    for (role, database), password in logins.items():
        assert role != env["POSTGRES_USER"] and password != env["POSTGRES_PASSWORD"]
        conn = _connect(stack, role, password, database)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
                            "FROM pg_roles WHERE rolname = current_user")
                assert cur.fetchone() == (False,) * 5, role
                if (role, database) in owners:
                    cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
                    assert cur.fetchone() == (role,)
                    cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> %s",
                                (role,))
                    assert cur.fetchone() == (0,), f"tables of {database} owned by another role"
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute("COPY (SELECT 1) TO PROGRAM 'true'")
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute("CREATE DATABASE grants_probe")
        finally:
            conn.close()
    logins = {login: password for login, password in logins.items() if login in owners}
    # PUBLIC may not connect to the stack's databases: each role reaches its own only.
    (role, database), password = next(iter(logins.items()))
    other = next(db for _, db in logins if db != database)
    with pytest.raises(psycopg2.OperationalError, match="permission denied"):
        _connect(stack, role, password, other).close()


def _redis(stack, user: str | None, password: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=stack.cfg.ports["REDIS_PORT"], username=user, password=password,
                       socket_timeout=10)


def test_components_use_their_own_redis_users(stack) -> None:
    comps = by_name(stack.cfg)
    expected = {"scheduler": "scheduler", "flower": "flower", "worker-heavy1": "worker", "worker-light1": "worker"}
    for name, user in expected.items():
        env = json.loads(env_file(stack.cfg, comps[name]).read_text())
        for key in ("AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND"):
            assert urlsplit(env[key]).username == user, (name, key)
    admin = stack.cfg.env[grants.REDIS_ADMIN_PASSWORD_VAR]
    for comp in components(stack.cfg):
        if comp.present and comp.name != "redis":
            assert admin not in env_file(stack.cfg, comp).read_text(), f"{comp.name} holds the Redis admin password"


@pytest.mark.parametrize("user", [u.name for u in grants.REDIS_USERS])
def test_redis_users_get_noperm_on_admin_commands(stack, user: str) -> None:
    password = stack.cfg.env[grants.redis_user(user).password_var]
    admin = _redis(stack, None, stack.cfg.env[grants.REDIS_ADMIN_PASSWORD_VAR])
    client = _redis(stack, user, password)
    assert client.ping() is True
    calls = {"CONFIG": ("CONFIG", "GET", "requirepass"), "FLUSHALL": ("FLUSHALL",), "SHUTDOWN": ("SHUTDOWN", "NOSAVE"),
             "MONITOR": ("MONITOR",), "EVAL": ("EVAL", "return 1", "0")}
    assert set(calls) == set(grants.FORBIDDEN_COMMANDS)
    for name, call in calls.items():
        # Asked first without running it (a SHUTDOWN that passed would stop the session's Redis).
        verdict = admin.execute_command("ACL", "DRYRUN", user, *call)
        assert verdict != b"OK", f"{user} may run {name}"
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*call)
    with pytest.raises(redis.AuthenticationError):
        _redis(stack, user, password + "x").ping()
    assert admin.ping() is True  # the refusals stopped nothing


def test_celery_and_flower_were_refused_nothing(stack, runs) -> None:
    """The whole session's pipeline ran with these users: Redis logged no refusal of theirs."""
    admin = _redis(stack, None, stack.cfg.env[grants.REDIS_ADMIN_PASSWORD_VAR])
    users = {u.name for u in grants.REDIS_USERS}
    # The probes of test_redis_users_get_noperm_on_admin_commands are the only expected entries.
    # redis-py announces itself with CLIENT SETINFO (Redis 7.2; not granted) and ignores the refusal.
    probes = {c.lower() for c in grants.FORBIDDEN_COMMANDS} | {"config|get", "client|setinfo"}
    # Failed logins (the wrong-password probes) are logged too, as reason "auth".
    refused = [e for e in admin.acl_log(count=128)
               if e["username"] in users and e["reason"] != "auth" and e["object"] not in probes]
    assert runs["ml"]["state"] == "success"
    assert not refused, refused


def test_pushgateway_and_alertmanager_refuse_anonymous_writes(stack) -> None:
    cfg = stack.cfg
    group = f"{cfg.pushgateway_url}/metrics/job/grants_probe"
    pusher = cfg.web_login("pushgateway", "pusher")
    for auth in (None, (pusher[0], pusher[1] + "x")):
        assert requests.put(group, data="grants_probe 1\n", auth=auth, timeout=10).status_code == 401
        assert requests.delete(f"{cfg.pushgateway_url}/metrics/job/mlops_champion", auth=auth,
                               timeout=10).status_code == 401
    assert requests.get(f"{cfg.pushgateway_url}/metrics", timeout=10).status_code == 401
    assert requests.put(group, data="grants_probe 1\n", auth=pusher, timeout=10).status_code == 200
    assert requests.delete(group, auth=pusher, timeout=10).status_code == 202

    silence = {"matchers": [{"name": "alertname", "value": "GrantsProbe", "isRegex": False}],
               "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z", "createdBy": "test",
               "comment": "grants probe"}
    api = f"{cfg.alertmanager_url}/api/v2"
    assert requests.post(f"{api}/silences", json=silence, timeout=10).status_code == 401
    assert requests.get(f"{api}/alerts", timeout=10).status_code == 401
    assert requests.post(f"{cfg.alertmanager_url}/-/reload", timeout=10).status_code == 401
    admin = cfg.web_login("alertmanager", "admin")
    resp = requests.post(f"{api}/silences", json=silence, auth=admin, timeout=10)
    assert resp.status_code == 200, resp.text
    assert requests.delete(f"{api}/silence/{resp.json()['silenceID']}", auth=admin, timeout=10).status_code == 200
    # Prometheus scrapes both and reaches Alertmanager with its own login.
    targets = requests.get(f"{cfg.prometheus_url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    health = {t["labels"]["job"]: t["health"] for t in targets if t["labels"]["job"] in grants.WEB_SERVERS}
    assert set(health) == set(grants.WEB_SERVERS) and "down" not in health.values(), health
    managers = requests.get(f"{cfg.prometheus_url}/api/v1/alertmanagers", timeout=10).json()["data"]
    assert managers["activeAlertmanagers"], managers


def _session_cookie(stack) -> str:
    """The session cookie the api-server's login page sets (the FAB app's Flask session)."""
    resp = requests.get(f"{stack.cfg.api_url}/auth/login/", timeout=30, allow_redirects=False)
    assert resp.status_code == 200, resp.status_code
    assert "session" in resp.cookies, resp.headers
    return resp.cookies["session"]


def test_log_server_key_signs_no_ui_session(stack) -> None:
    env = stack.cfg.env
    ui_key = env[UI_SECRET_VAR]
    log_env = json.loads(env_file(stack.cfg, by_name(stack.cfg)["log-server"]).read_text())
    assert ui_key not in json.dumps(log_env)
    log_key = log_env["AIRFLOW__API__SECRET_KEY"]
    assert log_key != ui_key
    api_env = json.loads(env_file(stack.cfg, by_name(stack.cfg)["api-server"]).read_text())
    assert api_env["AIRFLOW__API__SECRET_KEY"] == log_key  # it signs the log requests the log server verifies
    # The UI's session cookie (server-side session, signed id: Flask-Session's signer) verifies with
    # the UI key only: the log server's key cannot make one.
    cookie = _session_cookie(stack)
    Signer(ui_key, salt="flask-session", key_derivation="hmac").unsign(cookie)
    with pytest.raises(BadSignature):
        Signer(log_key, salt="flask-session", key_derivation="hmac").unsign(cookie)
    assert Path(api_env["AIRFLOW__FAB__CONFIG_FILE"]).is_file()
