"""The prediction log's retention on a replayed calendar (what benchmarks/soak.py runs the service
on): the service's writer (mlops_serving.predlog.PredictionLog) with a replay clock file
(mlops_serving.clock) creates the partitions of the replayed days and drops, at its own pruning,
those older than the retention in replayed days, keeping the younger ones. In a scratch database
of the test stack's PostgreSQL, so the stack's own prediction log is not touched."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest


def _partitions(conn) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'predictions'")
        return sorted(name for (name,) in cur.fetchall())


@pytest.fixture()
def scratch_db(stack):
    """A database of its own in the stack's PostgreSQL (dropped after): its libpq DSN."""
    import psycopg2
    from psycopg2.extensions import make_dsn

    e = stack.cfg.env
    login = {"host": "127.0.0.1", "port": stack.cfg.ports["POSTGRES_PORT"], "user": e["POSTGRES_USER"],
             "password": e["POSTGRES_PASSWORD"], "connect_timeout": 10}
    name = f"predlog_clock_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dbname=e["POSTGRES_DB"], **login)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_dsn(dbname=name, **login)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_partitions_older_than_the_retention_are_dropped_on_the_replayed_calendar(scratch_db, tmp_path: Path) -> None:
    import psycopg2

    from mlops.config import load_schema
    from mlops.serve_replay import request_bodies, week_rows
    from mlops_serving import clock
    from mlops_serving.predlog import PredictionLog, ensure_schema

    clock_file = tmp_path / "replayed-now"
    clock.write(clock_file, datetime(2013, 1, 7, tzinfo=timezone.utc))
    replay = clock.Clock(clock_file)
    conn = psycopg2.connect(scratch_db)
    try:
        ensure_schema(conn, today=replay.now())
        schema = load_schema()
        writer = PredictionLog(scratch_db, flush_s=0.5, max_rows=10_000, retention_days=90, schema=schema,
                               clock=replay)
        seen = []
        # Three replayed weeks: 2013-W02, W10 (56 days later), W16 (98 days after W02).
        for monday, week in (((2013, 1, 7), "2013-W02"), ((2013, 3, 4), "2013-W10"), ((2013, 4, 15), "2013-W16")):
            clock.write(clock_file, datetime(*monday, tzinfo=timezone.utc))
            rows = request_bodies(week_rows(week, schema).iloc[:2], chunk=2)[0]["rows"]
            writer.submit(uuid.uuid4().hex, replay.now(), "1", rows, [0.2, 0.7])
            assert writer.flush() == 2, writer.last_error
            seen.append(_partitions(conn))
        writer.stop()
    finally:
        conn.close()
    assert seen[0] == ["predictions_p20130107"]
    # 56 days: within the retention, both kept.
    assert seen[1] == ["predictions_p20130107", "predictions_p20130304"]
    # 98 days after W02's Monday: its partition is older than 90 replayed days and dropped; the rest kept.
    assert seen[2] == ["predictions_p20130304", "predictions_p20130415"]


def test_a_replay_clock_file_that_holds_no_time_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_serving.settings import Settings, SettingsError

    monkeypatch.setenv("SERVING_TOKEN", "t" * 32)
    monkeypatch.delenv("PREDICTIONS_DB_PASSWORD", raising=False)
    for content in (None, "next tuesday"):
        path = tmp_path / "clock"
        if content is not None:
            path.write_text(content)
        monkeypatch.setenv("MLOPS_TEST_REPLAY_CLOCK", str(path))
        with pytest.raises(SettingsError, match="MLOPS_TEST_REPLAY_CLOCK"):
            Settings.from_env()
    monkeypatch.delenv("MLOPS_TEST_REPLAY_CLOCK")
    assert Settings.from_env().replay_clock is None
