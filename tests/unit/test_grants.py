"""The login tables of stack/grants.py: every password is a generated secret of .env.example, no
component user may run a forbidden Redis command, and the compose one-shot writes what both
stacks render (web configs that bcrypt verifies, Redis users as SHA-256 digests)."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import bcrypt
import yaml

from stack import envfile, grants
from stack.config import EXAMPLE_ENV


def _env() -> dict[str, str]:
    example = envfile.parse(EXAMPLE_ENV)
    return {k: (v or envfile.generate_secret(k)) if envfile.is_secret(k) else v for k, v in example.items()}


def test_every_login_password_is_a_generated_secret_of_the_example() -> None:
    example = envfile.parse(EXAMPLE_ENV)
    env = _env()
    variables = [r.password_var for r in grants.pg_roles(env)] + [u.password_var for u in grants.REDIS_USERS]
    variables += [u.password_var for u in grants.WEB_USERS] + [grants.REDIS_ADMIN_PASSWORD_VAR]
    assert len(variables) == len(set(variables))
    for var in variables:
        assert var in example and example[var] == "" and envfile.is_secret(var), var
    roles = grants.pg_roles(env)
    assert example["POSTGRES_USER"] not in {r.name for r in roles}  # the superuser is nobody's login
    assert {r.owns for r in roles} >= {env["POSTGRES_DB"], env["MLFLOW_DB"], env["MLFLOW_AUTH_DB"]}


def test_no_component_user_may_run_a_forbidden_command() -> None:
    forbidden = {c.lower() for c in grants.FORBIDDEN_COMMANDS} | {"flushdb", "debug", "acl", "keys", "client|kill",
                                                                   "script|flush", "save", "bgsave", "replicaof"}
    for user in grants.REDIS_USERS:
        assert not (set(user.commands) & forbidden), user.name
        rule = user.acl_rule(_env())
        assert " -@all " in rule and "+@all" not in rule and " reset " in rule


def test_compose_one_shot_writes_digests_and_bcrypt_hashes(tmp_path: Path, monkeypatch) -> None:
    env = _env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    acl = tmp_path / "redis" / "users.acl"
    owner = f"{Path('/').stat().st_uid}:{Path('/').stat().st_gid}"
    assert grants.main(["--redis-acl", str(acl), "--logins-dir", str(tmp_path), "--owner", owner]) == 0
    text = acl.read_text()
    for user in grants.REDIS_USERS:
        assert env[user.password_var] not in text
        assert f"#{hashlib.sha256(env[user.password_var].encode()).hexdigest()}" in text
    for server in grants.WEB_SERVERS:
        users = yaml.safe_load((tmp_path / server / "web.yml").read_text())["basic_auth_users"]
        for user in grants.WEB_USERS:
            if user.server == server:
                assert bcrypt.checkpw(env[user.password_var].encode(), users[user.name].encode())
        password = tmp_path / server / "prometheus-password"
        assert password.read_text() == env[[u for u in grants.WEB_USERS if u.server == server
                                            and u.name == "prometheus"][0].password_var]
        assert stat.S_IMODE(password.stat().st_mode) == 0o600
    monkeypatch.setenv("REDIS_WORKER_PASSWORD", "not url-safe/")
    assert grants.main(["--redis-acl", str(acl), "--logins-dir", str(tmp_path), "--owner", owner]) == 1
