"""The stack's private PostgreSQL cluster: initdb once, wait for it, create the databases."""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

from stack import health
from stack.config import StackConfig
from stack.render import write_private
from stack.run import StackError, run_logged


def init_cluster(cfg: StackConfig, pg_bin: Path) -> bool:
    """initdb the private cluster once, as the `postgres` user, with password auth over TCP;
    True when it was created now."""
    if (cfg.pgdata / "PG_VERSION").exists():
        return False
    pg_user = pwd.getpwnam("postgres")
    cfg.pgdata.mkdir(mode=0o700)
    os.chown(cfg.pgdata, pg_user.pw_uid, pg_user.pw_gid)
    pwfile = cfg.run_dir / "initdb.pw"
    write_private(pwfile, cfg.env["POSTGRES_PASSWORD"] + "\n")
    os.chown(pwfile, pg_user.pw_uid, pg_user.pw_gid)
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
        ok, _ = health.check_postgres(cfg)
        if ok:
            return
        time.sleep(0.2)
    raise StackError(f"postgres did not accept connections on port {cfg.ports['POSTGRES_PORT']} "
                     f"within {timeout:.0f} s; see {cfg.logs / 'postgres.log'}")


def ensure_databases(cfg: StackConfig, names: list[str]) -> list[str]:
    """Create the databases `names` when missing; return those created."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=cfg.ports["POSTGRES_PORT"], user=cfg.env["POSTGRES_USER"],
                            password=cfg.env["POSTGRES_PASSWORD"], dbname="postgres")
    conn.autocommit = True
    created = []
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
                    created.append(name)
    finally:
        conn.close()
    return created


# What the metrics exporter's login may read (observability/postgres-exporter/queries.yml).
EXPORTER_TABLES = ("task_instance", "dag_run", "job")


def ensure_exporter_role(cfg: StackConfig) -> None:
    """The postgres-exporter's read-only login (POSTGRES_EXPORTER_USER/_PASSWORD): pg_monitor for
    the server's statistics, CONNECT to the Airflow database and SELECT on the tables its queries
    read. Run after `airflow db migrate` (the tables must exist); the password follows the env file."""
    import psycopg2
    from psycopg2 import sql

    user, password = cfg.env["POSTGRES_EXPORTER_USER"], cfg.env["POSTGRES_EXPORTER_PASSWORD"]
    conn = psycopg2.connect(host="127.0.0.1", port=cfg.ports["POSTGRES_PORT"], user=cfg.env["POSTGRES_USER"],
                            password=cfg.env["POSTGRES_PASSWORD"], dbname=cfg.env["POSTGRES_DB"])
    conn.autocommit = True
    role = sql.Identifier(user)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(sql.SQL(verb + " ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %s")
                        .format(role), (password,))
            cur.execute(sql.SQL("GRANT pg_monitor TO {}").format(role))
            cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(cfg.env["POSTGRES_DB"]), role))
            cur.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in EXPORTER_TABLES), role))
    finally:
        conn.close()
