"""The stack's private PostgreSQL cluster: initdb once, wait for it, create the roles and databases
(stack/grants.py: one owner role per database, none a superuser)."""

from __future__ import annotations

import pwd
import time
from pathlib import Path

from stack import grants, health, safefs
from stack.config import LOOPBACK, StackConfig
from stack.render import write_private
from stack.run import StackError, run_logged


def init_cluster(cfg: StackConfig, pg_bin: Path) -> bool:
    """initdb the private cluster once, as the `postgres` user, with password auth over TCP;
    True when it was created now."""
    if (cfg.pgdata / "PG_VERSION").exists():
        return False
    pg_user = pwd.getpwnam("postgres")
    safefs.make_dir(cfg.pgdata, pg_user.pw_uid, pg_user.pw_gid, 0o700)
    pwfile = cfg.run_dir / "initdb.pw"
    write_private(pwfile, cfg.env["POSTGRES_PASSWORD"] + "\n", "postgres")
    try:
        run_logged(["runuser", "-u", "postgres", "--", str(pg_bin / "initdb"), "-D", str(cfg.pgdata),
                    "-U", cfg.env["POSTGRES_USER"], f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                    "--auth-local=peer", "-E", "UTF8", "--no-locale"],
                   cfg.logs / "initdb.log", what="initdb")
    finally:
        pwfile.unlink(missing_ok=True)
    return True


def wait_ready(cfg: StackConfig, timeout: float = 30) -> None:
    """Wait until the private Postgres accepts logins."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok, _ = health.check_postgres(cfg, superuser=True)
        if ok:
            return
        time.sleep(0.2)
    raise StackError(f"postgres did not accept connections on port {cfg.ports['POSTGRES_PORT']} "
                     f"within {timeout:.0f} s; see {cfg.logs / 'postgres.log'}")


def ensure_roles(cfg: StackConfig) -> list[str]:
    """The login roles and databases of stack/grants.py, applied as the superuser (its only use
    besides initdb); return what changed."""
    import psycopg2

    def connect(dbname: str):
        conn = psycopg2.connect(host="127.0.0.1", port=cfg.ports["POSTGRES_PORT"], user=cfg.env["POSTGRES_USER"],
                                password=cfg.env["POSTGRES_PASSWORD"], dbname=dbname)
        conn.autocommit = True
        return conn

    try:
        return grants.ensure_pg_roles(connect, cfg.env)
    except grants.GrantsError as exc:
        raise StackError(f"{cfg.env_file}: {exc}") from exc


def ensure_predictions(cfg: StackConfig) -> list[str]:
    """The prediction log's database (docs/security.md): owned by the login role
    PREDICTIONS_DB_USER (no superuser, no CREATEDB/CREATEROLE), readable by PREDICTIONS_READER_USER
    (SELECT only), nobody else may connect; its partitioned table created by its owner. Passwords
    follow the env file. Return a line per thing created."""
    import psycopg2
    from psycopg2 import sql

    from mlops_serving.predlog import ensure_schema

    e = cfg.env
    db, owner, reader = e["PREDICTIONS_DB"], e["PREDICTIONS_DB_USER"], e["PREDICTIONS_READER_USER"]
    conn = psycopg2.connect(host="127.0.0.1", port=cfg.ports["POSTGRES_PORT"], user=e["POSTGRES_USER"],
                            password=e["POSTGRES_PASSWORD"], dbname="postgres")
    conn.autocommit = True
    created = []
    try:
        with conn.cursor() as cur:
            for role, password in ((owner, e["PREDICTIONS_DB_PASSWORD"]), (reader, e["PREDICTIONS_READER_PASSWORD"])):
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                                    "PASSWORD %s").format(sql.Identifier(role)), (password,))
                if verb == "CREATE":
                    created.append(f"role {role}")
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(owner)))
                created.append(f"database {db} (owner {owner})")
            cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db)))
            cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db), sql.Identifier(reader)))
    finally:
        conn.close()
    conn = psycopg2.connect(host="127.0.0.1", port=cfg.ports["POSTGRES_PORT"], user=owner,
                            password=e["PREDICTIONS_DB_PASSWORD"], dbname=db)
    try:
        with conn.cursor() as cur:  # public schema of PostgreSQL 15: only its owner creates in it
            cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.commit()
        ensure_schema(conn, reader)
    finally:
        conn.close()
    return created


def ensure_exporter_role(cfg: StackConfig) -> str:
    """The postgres-exporter's read-only login (stack/exporter_role.py), after the migration."""
    from stack.exporter_role import ensure_exporter_role as ensure

    return ensure(LOOPBACK, cfg.ports["POSTGRES_PORT"], cfg.env["POSTGRES_USER"], cfg.env["POSTGRES_PASSWORD"],
                  cfg.env["POSTGRES_DB"], cfg.env["POSTGRES_EXPORTER_USER"], cfg.env["POSTGRES_EXPORTER_PASSWORD"])
