"""The stack's private PostgreSQL cluster: initdb once, wait for it, create the databases."""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

from stack import health
from stack.config import LOOPBACK, StackConfig
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


def ensure_exporter_role(cfg: StackConfig) -> str:
    """The postgres-exporter's read-only login (stack/exporter_role.py), after the migration."""
    from stack.exporter_role import ensure_exporter_role as ensure

    return ensure(LOOPBACK, cfg.ports["POSTGRES_PORT"], cfg.env["POSTGRES_USER"], cfg.env["POSTGRES_PASSWORD"],
                  cfg.env["POSTGRES_DB"], cfg.env["POSTGRES_EXPORTER_USER"], cfg.env["POSTGRES_EXPORTER_PASSWORD"])
