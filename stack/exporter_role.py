"""The postgres-exporter's read-only login, for both stacks (native: `up` after the migration;
compose: airflow-init). pg_monitor for the server's statistics, CONNECT to the Airflow database
and SELECT on the tables observability/postgres-exporter/queries.yml reads; nothing else.
Standard library and psycopg2 only (the compose image imports it without the stack's packages).

    python -m stack.exporter_role    # from POSTGRES_* and POSTGRES_EXPORTER_* in the environment
"""

from __future__ import annotations

import os

# What the exporter's queries read.
EXPORTER_TABLES = ("task_instance", "dag_run", "job")


def ensure_exporter_role(host: str, port: int, admin: str, admin_password: str, database: str, user: str,
                         password: str) -> str:
    """Create or update the login `user` (its password follows the env file); return what it did."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(host=host, port=port, user=admin, password=admin_password, dbname=database)
    conn.autocommit = True
    role = sql.Identifier(user)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(sql.SQL(verb + " ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %s")
                        .format(role), (password,))
            cur.execute(sql.SQL("GRANT pg_monitor TO {}").format(role))
            cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), role))
            cur.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in EXPORTER_TABLES), role))
    finally:
        conn.close()
    return f"postgres-exporter login {user}: {'created' if verb == 'CREATE' else 'updated'} (read-only)"


def main() -> int:
    """Compose's airflow-init: the login from the environment."""
    env = os.environ
    print(ensure_exporter_role(env.get("POSTGRES_HOST", "postgres"), int(env.get("POSTGRES_PORT_INTERNAL", "5432")),
                               env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"],
                               env["POSTGRES_EXPORTER_USER"], env["POSTGRES_EXPORTER_PASSWORD"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
