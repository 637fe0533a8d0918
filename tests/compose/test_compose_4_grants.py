"""The logins each service holds on the compose stack's own servers (stack/grants.py), as
tests/stack/test_stack_4_grants.py checks them on the native stack:

- PostgreSQL: every database URL a service holds names its database's owner role, which is no
  superuser (`COPY ... TO PROGRAM` refused); only postgres and airflow-init hold the superuser's
  password;
- Redis: the scheduler, the workers and Flower log in as their own ACL users, which get NOPERM on
  CONFIG, FLUSHALL, SHUTDOWN, MONITOR and EVAL; nothing the pipeline run sent was refused;
- the Pushgateway and Alertmanager refuse anonymous pushes, deletes and silences (401);
- the api-server's UI sessions are signed with their own key, not [api] secret_key.
"""

from __future__ import annotations

import json

import pytest
import requests
from itsdangerous import BadSignature, Signer

from stack import grants

from testkit.compose_stack import ComposeStack

# Run inside a service's container: connect with each URL named in argv (environment variables)
# and report what the role may do.
_PG_PROBE = """
import json, os, sys
from urllib.parse import unquote, urlsplit
import psycopg2
out = {}
for var in sys.argv[1:]:
    url = urlsplit(os.environ[var].replace("postgresql+psycopg2", "postgresql"))
    conn = psycopg2.connect(host=url.hostname, port=url.port or 5432, user=unquote(url.username),
                            password=unquote(url.password), dbname=url.path.lstrip("/"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT current_user, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        user, superuser, createdb, createrole = cur.fetchone()
        cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
        owner = cur.fetchone()[0]
        try:
            cur.execute("COPY (SELECT 1) TO PROGRAM 'true'")
            program = "allowed"
        except psycopg2.Error as exc:
            program = exc.pgcode
    out[var] = {"user": user, "db": url.path.lstrip("/"), "owner": owner, "flags": [superuser, createdb, createrole],
                "program": program}
    conn.close()
print(json.dumps(out))
"""

# Run inside a service that holds a broker URL: its user's answer to each forbidden command.
_REDIS_PROBE = """
import json, os, sys
import redis
client = redis.Redis.from_url(os.environ["AIRFLOW__CELERY__BROKER_URL"], socket_timeout=10)
out = {"user": client.connection_pool.connection_kwargs["username"], "ping": client.ping()}
for call in json.loads(sys.argv[1]):
    try:
        client.execute_command(*call)
        out[call[0]] = "allowed"
    except redis.exceptions.NoPermissionError:
        out[call[0]] = "NOPERM"
print(json.dumps(out))
"""
FORBIDDEN_CALLS = [["CONFIG", "GET", "requirepass"], ["FLUSHALL"], ["SHUTDOWN", "NOSAVE"], ["MONITOR"],
                   ["EVAL", "return 1", "0"]]


def _json(result) -> dict:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_services_connect_as_owner_roles_never_the_superuser(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    env = stack.env
    seen = {}
    for service, variables in (("airflow-apiserver", ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]),
                               ("airflow-scheduler", ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]),
                               ("mlflow", ["MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI"])):
        for var, role in _json(stack.exec(service, "python", "-c", _PG_PROBE, *variables)).items():
            assert role["user"] == role["db"] == role["owner"], (service, var, role)
            assert role["flags"] == [False, False, False], (service, var, role)
            assert role["program"] == "42501", (service, var, role)  # insufficient_privilege
            seen[role["db"]] = role["user"]
    assert seen == {env["POSTGRES_DB"]: env["POSTGRES_DB"], env["MLFLOW_DB"]: env["MLFLOW_DB"],
                    env["MLFLOW_AUTH_DB"]: env["MLFLOW_AUTH_DB"]}, seen
    superuser = env["POSTGRES_PASSWORD"]
    holders = {c["Config"]["Labels"]["com.docker.compose.service"] for c in stack.containers()
               if superuser in json.dumps(c["Config"]["Env"])}
    assert holders == {"postgres", "airflow-init"}, holders


@pytest.mark.parametrize("service, user", [("airflow-scheduler", "scheduler"), ("airflow-worker-light", "worker"),
                                           ("airflow-worker-heavy", "worker"), ("flower", "flower")])
def test_redis_users_get_noperm_on_admin_commands(compose_stack: ComposeStack, service: str, user: str) -> None:
    stack = compose_stack
    assert {c[0] for c in FORBIDDEN_CALLS} == set(grants.FORBIDDEN_COMMANDS)
    for call in FORBIDDEN_CALLS:
        # Asked first as the admin without running it (a SHUTDOWN that passed would stop Redis).
        dry = stack.exec("redis", "sh", "-c", 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ACL DRYRUN "$@"', "sh",
                         user, *call)
        assert dry.returncode == 0 and "no permissions" in dry.stdout, (user, call, dry.stdout + dry.stderr)
    result = _json(stack.exec(service, "python", "-c", _REDIS_PROBE, json.dumps(FORBIDDEN_CALLS)))
    assert result == {"user": user, "ping": True, **{c[0]: "NOPERM" for c in FORBIDDEN_CALLS}}, result


_ACL_LOG = """
import json, sys
import redis
admin = redis.Redis(host="redis", password=sys.stdin.read().strip(), socket_timeout=10)
print(json.dumps([{k: e[k] for k in ("username", "object", "reason")} for e in admin.acl_log(count=128)]))
"""


def test_celery_and_flower_were_refused_nothing(compose_stack: ComposeStack, pipeline_run: dict) -> None:
    """The pipeline run went through with these users: Redis logged no refusal of theirs (the
    admin password goes to the probe on stdin, from the test's env file)."""
    stack = compose_stack
    (scheduler, *_) = stack.containers("airflow-scheduler", all_states=False)
    entries = _json(stack.docker_exec(scheduler["Id"], "python", "-c", _ACL_LOG,
                                      input_text=stack.env[grants.REDIS_ADMIN_PASSWORD_VAR]))
    # The probes of test_redis_users_get_noperm_on_admin_commands; redis-py's CLIENT SETINFO (ignored).
    probes = {c.lower() for c in grants.FORBIDDEN_COMMANDS} | {"config|get", "client|setinfo"}
    users = {u.name for u in grants.REDIS_USERS}
    refused = [e for e in entries if e["username"] in users and e["reason"] != "auth" and e["object"] not in probes]
    assert pipeline_run and not refused, refused


def test_pushgateway_and_alertmanager_refuse_anonymous_writes(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    pushgateway, alertmanager = stack.url("PUSHGATEWAY_PORT"), stack.url("ALERTMANAGER_PORT")
    group = f"{pushgateway}/metrics/job/grants_probe"
    pusher = grants.web_login(stack.env, "pushgateway", "pusher")
    for auth in (None, (pusher[0], pusher[1] + "x")):
        assert requests.put(group, data="grants_probe 1\n", auth=auth, timeout=30).status_code == 401
        assert requests.delete(f"{pushgateway}/metrics/job/mlops_champion", auth=auth, timeout=30).status_code == 401
    assert requests.put(group, data="grants_probe 1\n", auth=pusher, timeout=30).status_code == 200
    assert requests.delete(group, auth=pusher, timeout=30).status_code == 202
    silence = {"matchers": [{"name": "alertname", "value": "GrantsProbe", "isRegex": False}],
               "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z", "createdBy": "test",
               "comment": "grants probe"}
    assert requests.post(f"{alertmanager}/api/v2/silences", json=silence, timeout=30).status_code == 401
    assert requests.post(f"{alertmanager}/-/reload", timeout=30).status_code == 401
    admin = grants.web_login(stack.env, "alertmanager", "admin")
    resp = requests.post(f"{alertmanager}/api/v2/silences", json=silence, auth=admin, timeout=30)
    assert resp.status_code == 200, resp.text
    assert requests.delete(f"{alertmanager}/api/v2/silence/{resp.json()['silenceID']}", auth=admin,
                           timeout=30).status_code == 200


def test_ui_sessions_are_signed_with_their_own_key(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    resp = requests.get(f"{stack.api_url}/auth/login/", timeout=30, allow_redirects=False)
    assert resp.status_code == 200 and "session" in resp.cookies, resp.headers
    cookie = resp.cookies["session"]
    Signer(stack.env["AIRFLOW_UI_SECRET_KEY"], salt="flask-session", key_derivation="hmac").unsign(cookie)
    with pytest.raises(BadSignature):
        Signer(stack.env["AIRFLOW_API_SECRET_KEY"], salt="flask-session", key_derivation="hmac").unsign(cookie)
