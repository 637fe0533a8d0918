"""The stack's private PostgreSQL cluster: initdb once, wait for it, create the roles and databases
(stack/grants.py: one owner role per database, none a superuser)."""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

from stack import grants, health
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
