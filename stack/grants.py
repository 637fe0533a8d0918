"""The logins each component gets on the stack's own servers, declared once for both stacks:
PostgreSQL roles, Redis ACL users, and the basic-auth users of the Pushgateway and Alertmanager.

Adding a login is one entry in `pg_roles`, `REDIS_USERS` or `WEB_USERS` plus its password variable
in `.env.example` (generated into `.env`). `make up` (stack/ctl.py) and the compose stack's
one-shots (airflow-init, logins-config) apply these tables; nothing else creates a login.

Standard library only at import (psycopg2 and bcrypt are imported where used), so that the compose
one-shots can run it as root from the image's checkout (see `main`):

    python -m stack.grants --redis-acl FILE --logins-dir DIR --owner UID:GID
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

# ------------------------------------------------------------------------------ PostgreSQL


@dataclass(frozen=True)
class PgRole:
    """A login role: never a superuser, cannot create databases or roles. `owns`: the database it
    owns (created for it; its objects are its own); `reads`: databases it may read (SELECT on every
    table of their public schema, now and later); `member_of`: predefined roles (e.g. pg_monitor)."""

    name: str
    password_var: str
    owns: str | None = None
    reads: tuple[str, ...] = ()
    member_of: tuple[str, ...] = ()


def pg_roles(env: Mapping[str, str]) -> list[PgRole]:
    """Every login role of the stack's PostgreSQL except the superuser (POSTGRES_USER, used only by
    `up` and compose's airflow-init to apply this table). An owner role is named after its database."""
    return [
        PgRole(env["POSTGRES_DB"], "AIRFLOW_DB_PASSWORD", owns=env["POSTGRES_DB"]),
        PgRole(env["MLFLOW_DB"], "MLFLOW_DB_PASSWORD", owns=env["MLFLOW_DB"]),
        PgRole(env["MLFLOW_AUTH_DB"], "MLFLOW_AUTH_DB_PASSWORD", owns=env["MLFLOW_AUTH_DB"]),
    ]


def pg_role(env: Mapping[str, str], database: str) -> PgRole:
    """The owner role of `database`."""
    for role in pg_roles(env):
        if role.owns == database:
            return role
    raise KeyError(f"no role owns database {database!r} (stack/grants.py pg_roles)")


class GrantsError(Exception):
    """The tables cannot be applied as they stand (the message names the variable to fix)."""


def ensure_pg_roles(connect: Callable[[str], object], env: Mapping[str, str]) -> list[str]:
    """Create or update every role of `pg_roles` (password from `env`, NOSUPERUSER NOCREATEDB
    NOCREATEROLE), create each owned database for its role (or hand an existing one to it, with its
    objects), revoke PUBLIC's access to them, grant the readers; return what changed.
    `connect(dbname)` opens an autocommit psycopg2 connection as the superuser."""
    from psycopg2 import sql

    roles = pg_roles(env)
    superuser = env["POSTGRES_USER"]
    clash = [r.name for r in roles if r.name == superuser]
    if clash:
        raise GrantsError(f"POSTGRES_USER={superuser!r} is the superuser and also the owner role of database "
                          f"{clash[0]!r}: no component may connect as the superuser. A stack created before "
                          f"the owner roles existed: set POSTGRES_USER to the superuser's new name after "
                          f"`ALTER ROLE {superuser} RENAME TO postgres` (run as another superuser), or start afresh")
    done: list[str] = []
    conn = connect("postgres")
    try:
        with conn.cursor() as cur:
            for role in roles:
                password = env.get(role.password_var, "")
                if not password:
                    raise GrantsError(f"{role.password_var} is empty: the password of PostgreSQL role {role.name}")
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role.name,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                                    "NOBYPASSRLS PASSWORD %s").format(sql.Identifier(role.name)), (password,))
                if verb == "CREATE":
                    done.append(f"created role {role.name}")
                for member in role.member_of:
                    cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(member), sql.Identifier(role.name)))
            for role in roles:
                if role.owns is None:
                    continue
                db = sql.Identifier(role.owns)
                cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (role.owns,))
                row = cur.fetchone()
                if row is None:
                    cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, sql.Identifier(role.name)))
                    done.append(f"created database {role.owns} (owner {role.name})")
                elif row[0] != role.name:
                    cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, sql.Identifier(role.name)))
                    _reassign_objects(connect, role.owns, role.name)
                    done.append(f"handed database {role.owns} and its objects to {role.name}")
                cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
    finally:
        conn.close()
    for role in roles:
        for database in role.reads:
            owner = pg_role(env, database).name
            conn = connect(database)
            try:
                with conn.cursor() as cur:
                    reader = sql.Identifier(role.name)
                    cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), reader))
                    cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(reader))
                    cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(reader))
                    cur.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT ON TABLES "
                                        "TO {}").format(sql.Identifier(owner), reader))
            finally:
                conn.close()
    return done


def _reassign_objects(connect: Callable[[str], object], database: str, owner: str) -> None:
    """Hand every table, sequence, view and type of `database`'s own schemas to `owner` (a database
    made before its owner role existed: its objects belong to the superuser)."""
    from psycopg2 import sql

    conn = connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute("""
                SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                       ELSE 'TABLE' END, n.nspname, c.relname
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p', 'S', 'v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname NOT LIKE 'pg_toast%%' AND pg_get_userbyid(c.relowner) <> %s
                  AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid
                                                      AND d.deptype IN ('a', 'i')))""", (owner,))
            for kind, schema, name in cur.fetchall():
                cur.execute(sql.SQL("ALTER " + kind + " {}.{} OWNER TO {}").format(
                    sql.Identifier(schema), sql.Identifier(name), sql.Identifier(owner)))
            cur.execute("""
                SELECT n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE t.typtype IN ('e', 'd') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND pg_get_userbyid(t.typowner) <> %s""", (owner,))
            for schema, name in cur.fetchall():
                cur.execute(sql.SQL("ALTER TYPE {}.{} OWNER TO {}").format(
                    sql.Identifier(schema), sql.Identifier(name), sql.Identifier(owner)))
    finally:
        conn.close()


# ------------------------------------------------------------------------------ Redis

# What Celery (kombu's Redis transport and the Redis result backend) and Flower send, found with
# `ACL LOG` on a stack whose users had none: queues are lists, bindings sets, unacked messages a
# hash and a sorted set, results strings; broadcasts (control, events) are pub/sub. kombu 5.7 runs
# two Lua scripts by EVALSHA (SCRIPT LOAD on a cache miss) for queues with an expiry (Celery's
# control and event queues); Redis checks every command a script calls against the caller's ACL, so
# a script can do no more than the user may. EVAL itself, and every administrative command
# (CONFIG, FLUSHALL, FLUSHDB, SHUTDOWN, MONITOR, DEBUG, ACL, CLIENT KILL, KEYS, ...), is refused.
CELERY_COMMANDS = (
    "ping", "select", "echo", "hello", "auth", "client|setname", "client|id", "info",
    "multi", "exec", "discard", "watch", "unwatch",
    # queues and messages
    "lpush", "rpush", "lpop", "rpop", "brpop", "blpop", "llen", "lrange", "lrem", "ltrim", "lindex",
    "del", "unlink", "exists", "type", "expire", "pexpire", "ttl", "pttl", "persist", "scan",
    # bindings (sets), the unacked hash and index (sorted set), the restore mutex
    "sadd", "srem", "smembers", "sismember", "scard",
    "hset", "hget", "hdel", "hmget", "hgetall", "hlen", "hexists",
    "zadd", "zrem", "zrange", "zrangebyscore", "zrevrangebyscore", "zcard", "zscore",
    "set", "setex", "psetex", "setnx", "get", "getdel", "mget", "incr", "incrby", "decr", "decrby", "time",
    # broadcasts: control (pidbox), events, result notifications
    "publish", "subscribe", "unsubscribe", "psubscribe", "punsubscribe",
    "evalsha", "script|load", "script|exists",
)
# Commands no component login may run; the stack tests check each against every user above.
FORBIDDEN_COMMANDS = ("CONFIG", "FLUSHALL", "SHUTDOWN", "MONITOR", "EVAL")


@dataclass(frozen=True)
class RedisUser:
    """A Redis ACL user: its name, password variable and commands (keys and channels: all of them;
    the stack's Redis holds nothing but Celery's queues and results)."""

    name: str
    password_var: str
    commands: tuple[str, ...] = CELERY_COMMANDS
    keys: str = "~*"
    channels: str = "&*"

    def acl_rule(self, env: Mapping[str, str]) -> str:
        """The `user` line of redis.conf / an ACL file (the password as its SHA-256, never in clear)."""
        digest = hashlib.sha256(env[self.password_var].encode()).hexdigest()
        allowed = " ".join(f"+{c}" for c in self.commands)
        return f"user {self.name} reset on #{digest} {self.keys} {self.channels} -@all {allowed}"


# The admin login (Redis' `default` user, password REDIS_PASSWORD) is for `up`, `make status` and
# the tests: no component holds it.
REDIS_ADMIN_PASSWORD_VAR = "REDIS_PASSWORD"
# What prometheus-redis-exporter reads (its CONFIG GET is switched off: `-config-command=-`).
EXPORTER_COMMANDS = ("ping", "select", "echo", "hello", "auth", "client|setname", "info", "dbsize", "type", "llen",
                     "scard", "zcard", "hlen", "strlen", "xlen", "pfcount", "exists", "slowlog|get", "slowlog|len",
                     "latency|latest", "memory|usage")
REDIS_USERS = (
    RedisUser("scheduler", "REDIS_SCHEDULER_PASSWORD"),
    RedisUser("worker", "REDIS_WORKER_PASSWORD"),
    RedisUser("flower", "REDIS_FLOWER_PASSWORD"),
    RedisUser("exporter", "REDIS_EXPORTER_PASSWORD", commands=EXPORTER_COMMANDS, channels="resetchannels"),
)


def redis_user(name: str) -> RedisUser:
    """The ACL user `name` of REDIS_USERS."""
    return {u.name: u for u in REDIS_USERS}[name]


def redis_acl(env: Mapping[str, str]) -> str:
    """Every ACL user line: the admin (`default`) and the component users."""
    admin = hashlib.sha256(env[REDIS_ADMIN_PASSWORD_VAR].encode()).hexdigest()
    lines = [f"user default reset on #{admin} ~* &* +@all"]
    lines += [user.acl_rule(env) for user in REDIS_USERS]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ Pushgateway, Alertmanager


@dataclass(frozen=True)
class WebUser:
    """A basic-auth user of a server's `--web.config.file` (Prometheus' exporter toolkit)."""

    server: str
    name: str
    password_var: str


WEB_SERVERS = ("pushgateway", "alertmanager")
WEB_USERS = (
    # The ML steps push from the workers (MLOPS_PUSHGATEWAY_URL with this login); Prometheus scrapes.
    WebUser("pushgateway", "pusher", "PUSHGATEWAY_PUSH_PASSWORD"),
    WebUser("pushgateway", "prometheus", "PUSHGATEWAY_PROMETHEUS_PASSWORD"),
    # Prometheus sends alerts (and scrapes); the admin login is for operators (UI, amtool, silences).
    WebUser("alertmanager", "prometheus", "ALERTMANAGER_PROMETHEUS_PASSWORD"),
    WebUser("alertmanager", "admin", "ALERTMANAGER_ADMIN_PASSWORD"),
)
# bcrypt cost: the exporter toolkit checks it on every request. The passwords are 32 random
# characters, which no cost factor makes easier or harder to guess: keep the check cheap.
BCRYPT_ROUNDS = 8


def web_login(env: Mapping[str, str], server: str, name: str) -> tuple[str, str]:
    """(user, password) of `name` on `server`."""
    for user in WEB_USERS:
        if user.server == server and user.name == name:
            return user.name, env[user.password_var]
    raise KeyError(f"no web user {name!r} on {server!r} (stack/grants.py WEB_USERS)")


def web_config(env: Mapping[str, str], server: str) -> str:
    """The `--web.config.file` of `server`: its users with bcrypt hashes (YAML)."""
    import bcrypt

    lines = [f"# {server}'s basic-auth users (stack/grants.py WEB_USERS): bcrypt hashes only.", "basic_auth_users:"]
    for user in WEB_USERS:
        if user.server == server:
            hashed = bcrypt.hashpw(env[user.password_var].encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()
            lines.append(f"  {user.name}: '{hashed}'")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ compose one-shot


def _write(path: Path, text: str, owner: tuple[int, int] | None) -> None:
    """Write `text` to `path` mode 600, owned by `owner` (uid, gid), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        if owner is not None:
            os.fchown(handle.fileno(), *owner)
    os.replace(tmp, path)


URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def _owner(text: str) -> tuple[int, int]:
    uid, _, gid = text.partition(":")
    return int(uid), int(gid or uid)


def main(argv: list[str] | None = None) -> int:
    """Compose one-shot (logins-config): from the environment, write Redis' ACL file (SHA-256
    digests only) and, for the Pushgateway and Alertmanager, `<dir>/<server>/web.yml` and
    `<dir>/<server>/prometheus-password` (Prometheus' login), each mode 600 and owned by `--owner`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--redis-acl", type=Path, required=True,
                        help="Redis' ACL file (digests only: mode 644, in a volume only Redis mounts)")
    parser.add_argument("--logins-dir", type=Path, required=True)
    parser.add_argument("--owner", type=_owner, required=True, help="uid:gid of the Pushgateway, Alertmanager, Prometheus")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    redis_vars = [REDIS_ADMIN_PASSWORD_VAR, *(u.password_var for u in REDIS_USERS)]
    missing = sorted(v for v in {*redis_vars, *(u.password_var for u in WEB_USERS)} if not env.get(v))
    if missing:
        print(f"grants: error: not set: {', '.join(missing)} (run `make env`)", file=sys.stderr)
        return 1
    unsafe = [v for v in redis_vars if env[v].strip(URL_SAFE)]
    if unsafe:
        print(f"grants: error: {', '.join(unsafe)} must be URL-safe (part of the broker URLs)", file=sys.stderr)
        return 1
    _write(args.redis_acl, redis_acl(env), None)
    args.redis_acl.chmod(0o644)
    for server in WEB_SERVERS:
        folder = args.logins_dir / server
        _write(folder / "web.yml", web_config(env, server), args.owner)
        _write(folder / "prometheus-password", web_login(env, server, "prometheus")[1], args.owner)
    print(f"grants: wrote {len(REDIS_USERS) + 1} Redis users and the logins of {', '.join(WEB_SERVERS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
