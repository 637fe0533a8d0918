#!/usr/bin/env python
"""Apply the Airflow state that both stacks declare: the roles and users of airflow/rbac.yaml
(FAB auth manager), the pools of airflow/pools.yaml, the Connection `mlflow_default` (the
MLflow server and the pipeline's service account, from MLFLOW_TRACKING_URI, MLFLOW_PIPELINE_USER
and MLFLOW_PIPELINE_PASSWORD) and the Connection `predictions_db` (the prediction log's read-only
login, from PREDICTIONS_DB_HOST, PREDICTIONS_DB_PORT, PREDICTIONS_DB and
PREDICTIONS_READER_PASSWORD); their passwords are stored Fernet-encrypted.

Idempotent: run it at every start, after `airflow db migrate` (native `make up`, compose
`airflow-init`). Needs only the Airflow environment (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, ...) and
the user variables that rbac.yaml names (AIRFLOW_ADMIN_USER / AIRFLOW_ADMIN_PASSWORD, ...). Works
from any current directory.

Each declared role ends up with exactly its declared permissions; each declared user exists, is
active, has exactly its declared role and the password from the environment; each declared pool
exists with its declared slots and description; `mlflow_default` points at the server with the
account's login. Users, roles, pools and connections not named here are left alone. Without
MLFLOW_PIPELINE_USER the connection is not managed (one line says so). Exit status 0 on success,
1 with a message naming the problem.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

RBAC_FILE = Path(__file__).resolve().with_name("rbac.yaml")
POOLS_FILE = Path(__file__).resolve().with_name("pools.yaml")
MLFLOW_CONN_ID = "mlflow_default"
PREDICTIONS_CONN_ID = "predictions_db"


class RbacError(Exception):
    """rbac.yaml, pools.yaml or the environment is wrong; the message names file and entry."""


@dataclass
class PoolSpec:
    """An Airflow pool: its slots and what it is for."""

    name: str
    slots: int
    description: str


@dataclass
class RoleSpec:
    """A custom role: a built-in base minus exclusions plus global and per-DAG permissions."""

    name: str
    base: str | None
    exclude: set[tuple[str, str]] = field(default_factory=set)
    permissions: set[tuple[str, str]] = field(default_factory=set)
    dags: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@dataclass
class UserSpec:
    """A user: role, and the names of the variables holding its login and password."""

    role: str
    username: str
    password: str


def _pairs(raw: object, where: str) -> set[tuple[str, str]]:
    """[[action, resource], ...] -> set of tuples, or RbacError naming `where`."""
    if raw is None:
        return set()
    if not isinstance(raw, list) or not all(isinstance(p, list) and len(p) == 2 for p in raw):
        raise RbacError(f"{RBAC_FILE}: {where} must be a list of [action, resource] pairs")
    return {(str(a), str(r)) for a, r in raw}


def load_spec(path: Path = RBAC_FILE, environ: dict[str, str] | None = None) -> tuple[list[RoleSpec], list[UserSpec]]:
    """Parse and validate rbac.yaml, resolving user names and passwords from `environ`."""
    environ = dict(os.environ) if environ is None else environ
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RbacError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("users"), list):
        raise RbacError(f"{path}: expected a mapping with a `users` list (and optional `roles`)")
    roles: list[RoleSpec] = []
    for name, body in (doc.get("roles") or {}).items():
        if not isinstance(body, dict):
            raise RbacError(f"{path}: roles.{name} must be a mapping")
        dags = body.get("dags") or {}
        for dag_id, perms in dags.items():
            if not isinstance(perms, dict) or not all(isinstance(v, list) for v in perms.values()):
                raise RbacError(f"{path}: roles.{name}.dags.{dag_id} must map a resource to a list of actions")
        roles.append(RoleSpec(name, body.get("base"), _pairs(body.get("exclude"), f"roles.{name}.exclude"),
                              _pairs(body.get("permissions"), f"roles.{name}.permissions"), dags))
    users: list[UserSpec] = []
    for index, entry in enumerate(doc["users"]):
        where = f"{path}: users[{index}]"
        if not isinstance(entry, dict) or not {"role", "username_env", "password_env"} <= set(entry):
            raise RbacError(f"{where} needs role, username_env and password_env")
        values = []
        for key in ("username_env", "password_env"):
            var = entry[key]
            if not environ.get(var):
                raise RbacError(f"{where}: environment variable {var} is not set (see .env / .env.example)")
            values.append(environ[var])
        users.append(UserSpec(entry["role"], values[0], values[1]))
    return roles, users


def load_pools(path: Path = POOLS_FILE) -> list[PoolSpec]:
    """Parse and validate pools.yaml."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RbacError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("pools"), dict):
        raise RbacError(f"{path}: expected a mapping with a `pools` mapping")
    pools = []
    for name, body in doc["pools"].items():
        slots = (body or {}).get("slots")
        if not isinstance(slots, int) or slots < 1:
            raise RbacError(f"{path}: pools.{name}.slots must be a positive integer")
        pools.append(PoolSpec(str(name), slots, str((body or {}).get("description", ""))))
    return pools


def sync_pools(pools: list[PoolSpec]) -> list[str]:
    """Create or update each declared pool; return a line per change made."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    changes: list[str] = []
    with create_session() as session:
        for spec in pools:
            have = session.query(Pool).filter(Pool.pool == spec.name).one_or_none()
            if have is not None and have.slots == spec.slots and have.description == spec.description:
                continue
            Pool.create_or_update_pool(spec.name, spec.slots, spec.description, False, session=session)
            changes.append(f"pool {spec.name}: {'created' if have is None else 'updated'} with {spec.slots} slot(s)")
    return changes


def sync(roles: list[RoleSpec], users: list[UserSpec]) -> list[str]:
    """Apply the spec to the Airflow database; return a line per change made."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
    from airflow.providers.fab.www.security import permissions

    changes: list[str] = []
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        sm.sync_roles()  # built-in roles (Admin, Op, User, Viewer, Public) and their permissions
        for spec in roles:
            wanted: set[tuple[str, str]] = set(spec.permissions)
            if spec.base:
                base = sm.find_role(spec.base)
                if base is None:
                    raise RbacError(f"{RBAC_FILE}: roles.{spec.name}.base: no role named {spec.base!r}")
                wanted |= {(p.action.name, p.resource.name) for p in base.permissions}
            wanted -= spec.exclude
            for dag_id, per_resource in spec.dags.items():
                for resource, actions in per_resource.items():
                    if resource not in permissions.RESOURCE_DETAILS_MAP:
                        raise RbacError(f"{RBAC_FILE}: roles.{spec.name}.dags.{dag_id}: unknown resource "
                                        f"{resource!r} (one of {sorted(permissions.RESOURCE_DETAILS_MAP)})")
                    name = permissions.resource_name(dag_id, resource)
                    wanted |= {(action, name) for action in actions}
            role = sm.find_role(spec.name)
            if role is None:
                role = sm.add_role(spec.name)
                changes.append(f"role {spec.name}: created")
            have = {(p.action.name, p.resource.name): p for p in role.permissions}
            for action, resource in sorted(wanted - set(have)):
                perm = sm.get_permission(action, resource) or sm.create_permission(action, resource)
                sm.add_permission_to_role(role, perm)
                changes.append(f"role {spec.name}: + {action} on {resource}")
            for key in sorted(set(have) - wanted):
                sm.remove_permission_from_role(role, have[key])
                changes.append(f"role {spec.name}: - {key[0]} on {key[1]}")
        for spec in users:
            role = sm.find_role(spec.role)
            if role is None:
                raise RbacError(f"{RBAC_FILE}: user {spec.username}: no role named {spec.role!r}")
            user = sm.find_user(username=spec.username)
            if user is None:
                sm.add_user(spec.username, spec.username, spec.role, f"{spec.username}@localhost.invalid",
                            role, password=spec.password)
                changes.append(f"user {spec.username}: created with role {spec.role}")
                continue
            if [r.name for r in user.roles] != [spec.role] or not user.active:
                user.roles = [role]
                user.active = True
                sm.update_user(user)
                changes.append(f"user {spec.username}: role set to {spec.role}")
            if not sm.check_password(spec.username, spec.password):
                sm.reset_password(user.id, spec.password)
                changes.append(f"user {spec.username}: password updated")
    return changes


@dataclass
class ConnectionSpec:
    """An Airflow Connection to a service with a login (``schema``: the URL scheme of an HTTP
    service, the database of a Postgres one)."""

    conn_id: str
    conn_type: str
    host: str
    port: int | None
    login: str
    password: str
    schema: str | None = None


def load_mlflow_connection(environ: dict[str, str] | None = None) -> ConnectionSpec | None:
    """`mlflow_default` from the environment; None when MLFLOW_PIPELINE_USER is not set."""
    environ = dict(os.environ) if environ is None else environ
    user = environ.get("MLFLOW_PIPELINE_USER")
    if not user:
        return None
    uri, password = environ.get("MLFLOW_TRACKING_URI", ""), environ.get("MLFLOW_PIPELINE_PASSWORD", "")
    if not password:
        raise RbacError("environment variable MLFLOW_PIPELINE_PASSWORD is not set (see .env / .env.example)")
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
        raise RbacError(f"MLFLOW_TRACKING_URI={uri!r} must be http(s)://host[:port] for the {MLFLOW_CONN_ID} connection")
    return ConnectionSpec(MLFLOW_CONN_ID, parts.scheme, parts.hostname, parts.port, user, password)


def load_predictions_connection(environ: dict[str, str] | None = None) -> ConnectionSpec | None:
    """`predictions_db`: the prediction log with the read-only login predictions_reader (the
    monitoring of served predictions reads it); None when PREDICTIONS_READER_PASSWORD is not set."""
    environ = dict(os.environ) if environ is None else environ
    password = environ.get("PREDICTIONS_READER_PASSWORD")
    if not password:
        return None
    host = environ.get("PREDICTIONS_DB_HOST", "")
    if not host:
        raise RbacError("environment variable PREDICTIONS_DB_HOST is not set (the host of the "
                        "predictions database)")
    port = environ.get("PREDICTIONS_DB_PORT", "5432")
    if not port.isdigit():
        raise RbacError(f"PREDICTIONS_DB_PORT={port!r} is not a port number")
    return ConnectionSpec(PREDICTIONS_CONN_ID, "postgres", host, int(port),
                          environ.get("PREDICTIONS_READER_USER") or "predictions_reader", password,
                          schema=environ.get("PREDICTIONS_DB") or "predictions")


def sync_connection(spec: ConnectionSpec) -> list[str]:
    """Create or update the connection whole (type, host, port, login, password, and no extra
    or description: an ``extra.tracking_uri`` an Op set would win over the host); return a line
    when it changed (never the password)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        have = session.query(Connection).filter(Connection.conn_id == spec.conn_id).one_or_none()
        wanted = {"conn_type": spec.conn_type, "host": spec.host, "port": spec.port, "login": spec.login,
                  "schema": spec.schema or spec.conn_type, "extra": None, "description": None}
        if have is None:
            session.add(Connection(conn_id=spec.conn_id, password=spec.password, **wanted))
            return [f"connection {spec.conn_id}: created ({spec.conn_type}://{spec.host}:{spec.port}, login {spec.login})"]
        differs = [k for k, v in wanted.items() if getattr(have, k) != v] + (["password"] if have.password != spec.password else [])
        if not differs:
            return []
        for key, value in wanted.items():
            setattr(have, key, value)
        have.password = spec.password
        return [f"connection {spec.conn_id}: updated {', '.join(differs)}"]


def main() -> int:
    """Load rbac.yaml, pools.yaml and the MLflow connection, apply them, print what changed."""
    try:
        roles, users = load_spec()
        pools = load_pools()
        mlflow_conn = load_mlflow_connection()
        predictions_conn = load_predictions_connection()
        changes = sync(roles, users) + sync_pools(pools)
        if mlflow_conn is None:
            print(f"bootstrap: {MLFLOW_CONN_ID} not managed (MLFLOW_PIPELINE_USER is not set)")
        else:
            changes += sync_connection(mlflow_conn)
        if predictions_conn is None:
            print(f"bootstrap: {PREDICTIONS_CONN_ID} not managed (PREDICTIONS_READER_PASSWORD is not set)")
        else:
            changes += sync_connection(predictions_conn)
    except RbacError as exc:
        print(f"bootstrap: error: {exc}", file=sys.stderr)
        return 1
    for line in changes:
        print(f"bootstrap: {line}")
    print(f"bootstrap: {len(users)} users, {len(roles)} custom roles and {len(pools)} pools in sync "
          f"({len(changes)} changes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
