"""The durable prediction log: every scored row, written to PostgreSQL off the request path.

A request only appends its rows to an in-memory queue (``submit``): the row key's raw values and
the time, nothing computed. A writer thread takes what is queued every ``SERVING_LOG_FLUSH_S``
seconds (0.5 s by default, at most 1 s), derives every row's key and week at once
(``mlops.served.row_keys``, ``mlops.data.week_labels``: what the monitoring joins on, computed by
the same functions; per request they cost the service more than a sixth of a single row's
scoring) and writes them in one ``COPY`` into table ``predictions`` (``mlops.served.TABLE``/
``COLUMNS``), which is partitioned by day of ``served_at``: the writer creates each day's
partition before writing into it and drops the partitions older than
``PREDICTIONS_RETENTION_DAYS`` (checked hourly). Days and hours are those of the service's clock
(``mlops_serving.clock``: the wall clock, or a benchmark's replayed calendar).

What a crash loses: the rows queued since the last flush, i.e. at most one flush interval of
predictions (plus a COPY in progress, which commits or not as a whole). tests/stack measures it by
SIGKILLing the service under load. While the database is unreachable, rows stay queued (up to
``SERVING_LOG_QUEUE_ROWS``) and are written when it answers again; rows beyond that bound are
dropped and counted (``mlops_serving_prediction_log_dropped_total``) rather than growing memory
without limit or slowing the answers.
"""

from __future__ import annotations

import collections
import io
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from mlops.config import Schema
from mlops.served import COLUMNS, TABLE
from mlops_serving import metrics
from mlops_serving.clock import Clock

log = logging.getLogger("mlops_serving.predlog")

#: The parent table and its reader's grants; partitions are made by the writer (``partition_ddl``).
SCHEMA_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    request_id text NOT NULL,
    served_at timestamptz NOT NULL,
    model_version text NOT NULL,
    row_key text NOT NULL,
    week text NOT NULL,
    probability double precision NOT NULL
) PARTITION BY RANGE (served_at);
CREATE INDEX IF NOT EXISTS {TABLE}_week_key ON {TABLE} (week, row_key);
"""


def partition_name(day: datetime) -> str:
    """The partition holding the predictions served on ``day`` (UTC)."""
    return f"{TABLE}_p{day:%Y%m%d}"


def partition_ddl(day: datetime) -> str:
    """CREATE the partition of ``day`` (UTC) when missing."""
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    end = start + timedelta(days=1)
    return (f"CREATE TABLE IF NOT EXISTS {partition_name(start)} PARTITION OF {TABLE} "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")


def ensure_schema(conn: Any, reader: str | None = None, today: datetime | None = None) -> None:
    """Create the table (as its owner) and today's partition (``today``: now), and let ``reader``
    SELECT it and its partitions."""
    with conn.cursor() as cur:
        cur.execute(SCHEMA_DDL)
        cur.execute(partition_ddl(today or datetime.now(timezone.utc)))
        if reader:
            cur.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{reader}"')
            cur.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{reader}"')
    conn.commit()


def prune(conn: Any, retention_days: int, now: datetime | None = None) -> list[str]:
    """Drop the partitions whose whole day is older than the retention; return their names."""
    now = now or datetime.now(timezone.utc)
    cutoff = f"{TABLE}_p{(now - timedelta(days=retention_days)):%Y%m%d}"
    with conn.cursor() as cur:
        cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s", (TABLE,))
        old = sorted(name for (name,) in cur.fetchall() if name < cutoff)
        for name in old:
            cur.execute(f'DROP TABLE IF EXISTS "{name}"')
    conn.commit()
    return old


class PredictionLog:
    """Queue + background writer (see module doc)."""

    def __init__(self, dsn: str | None, flush_s: float, max_rows: int, retention_days: int, schema: Schema,
                 clock: Clock | None = None) -> None:
        self.dsn, self.flush_s, self.max_rows, self.retention_days = dsn, flush_s, max_rows, retention_days
        self.clock = clock or Clock()
        self.schema = schema
        self._key_columns = (*schema.row_key, schema.time_column)
        #: submitted rows: (request id, time, version, (row key values..., time value), probability)
        self._queue: collections.deque[tuple] = collections.deque()
        #: the writer's rows with key and week derived, not yet written (writer thread only)
        self._ready: list[tuple] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._days: set[str] = set()
        self._pruned_at: datetime | None = None  # on the service's clock
        self.last_write: float | None = None
        self.last_error: str | None = None
        self.written = 0

    @property
    def enabled(self) -> bool:
        """False when no database login is configured (nothing is logged)."""
        return self.dsn is not None

    def pending(self) -> int:
        """Rows queued and not yet written."""
        return len(self._queue) + len(self._ready)

    def submit(self, request_id: str, served_at: datetime, version: str, rows: list[dict[str, Any]],
               probabilities: Any) -> None:
        """Queue one request's rows (checked request rows: their key and time columns) with their
        probabilities; never blocks on the database."""
        if not self.enabled:
            return
        room = self.max_rows - self.pending()
        columns = self._key_columns
        rows = [(request_id, served_at, version, tuple([row.get(c) for c in columns]), float(p))
                for row, p in zip(rows, probabilities)]
        if room < len(rows):
            metrics.LOG_DROPPED.inc(len(rows) - max(room, 0))
            rows = rows[:max(room, 0)]
        with self._lock:
            self._queue.extend(rows)

    def start(self) -> None:
        """Start the writer thread."""
        if not self.enabled:
            return
        metrics.LOG_PENDING.set_function(self.pending)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued (a last flush) and stop."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        if self.enabled:
            self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def _connect(self) -> Any:
        import psycopg2

        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(self.dsn)
            self._days.clear()
        return self._conn

    def _derive(self) -> None:
        """Move the queued rows to ``_ready`` with their row key and week (one call of each for all)."""
        import pandas as pd

        from mlops.data import week_labels
        from mlops.served import row_keys

        with self._lock:
            taken = list(self._queue)
            self._queue.clear()
        if not taken:
            return
        try:
            raw = pd.DataFrame.from_records([values for *_, values, _ in taken], columns=list(self._key_columns))
            keys, weeks = row_keys(raw, self.schema), week_labels(raw, self.schema).tolist()
        except Exception as exc:  # checked rows never get here; never let them block the log
            log.error("prediction log: %d rows dropped, their key or week failed: %s", len(taken), exc)
            metrics.LOG_DROPPED.inc(len(taken))
            return
        self._ready.extend((request_id, served_at, version, key, week, p)
                           for (request_id, served_at, version, _, p), key, week in zip(taken, keys, weeks))

    def flush(self) -> int:
        """Write every queued row in one COPY; rows stay queued when the database fails."""
        self._derive()
        batch = self._ready
        if not batch:
            return 0
        try:
            conn = self._connect()
            self._ensure_days(conn, {row[1] for row in batch})
            buf = io.StringIO()
            for request_id, served_at, version, key, week, p in batch:
                buf.write(f"{_text(request_id)}\t{served_at.isoformat()}\t{_text(version)}\t{_text(key)}\t"
                          f"{_text(week)}\t{p!r}\n")
            buf.seek(0)
            with conn.cursor() as cur:
                cur.copy_expert(f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN", buf)
            conn.commit()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            log.warning("prediction log: %d rows not written yet: %s", len(batch), self.last_error)
            self._reset()
            return 0
        self._ready = []
        self.written += len(batch)
        metrics.LOG_WRITTEN.inc(len(batch))
        self.last_write, self.last_error = time.time(), None
        self._maybe_prune(conn)
        return len(batch)

    def _ensure_days(self, conn: Any, stamps: set[datetime]) -> None:
        days = {s.astimezone(timezone.utc).strftime("%Y-%m-%d"): s for s in stamps}
        missing = [s for d, s in days.items() if d not in self._days]
        if missing:
            with conn.cursor() as cur:
                for stamp in missing:
                    cur.execute(partition_ddl(stamp.astimezone(timezone.utc)))
            conn.commit()
            self._days.update(days)

    def _maybe_prune(self, conn: Any) -> None:
        try:
            now = self.clock.now()
        except Exception as exc:
            log.warning("prediction log: no time to prune by: %s", exc)
            return
        if self._pruned_at is not None and timedelta(0) <= now - self._pruned_at < timedelta(hours=1):
            return
        self._pruned_at = now
        try:
            dropped = prune(conn, self.retention_days, now)
        except Exception as exc:
            log.warning("prediction log: pruning failed: %s", exc)
            self._reset()
            return
        if dropped:
            log.info("prediction log: dropped partitions older than %d days: %s", self.retention_days, dropped)

    def _reset(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None


def _text(value: str) -> str:
    """A value in COPY's text format."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
