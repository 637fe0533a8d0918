"""``airflow scheduler`` whose idle sleep ends as soon as the database shows new work.

Stock Airflow sleeps ``[scheduler] scheduler_idle_sleep_time`` after every scheduling loop that
found nothing to do, then runs the whole loop again (about ten ORM queries, some 30 ms of CPU on a
small machine). A short sleep makes the hop from one task to the next short but costs CPU all day;
the default 1 s makes every hop last about a second.

This runner keeps ``scheduler_idle_sleep_time`` as the longest idle sleep and ends it early when a
cheap query, polled every ``MLOPS_SCHEDULER_WAKE_POLL_S`` (default 0.1 s; airflow/airflow.env sets 0.05), answers differently
from the last time: the number of queued and running DAG runs, of scheduled, queued-or-running and
deferred task instances, and whether a DAG run is due or an asset event is waiting. So a trigger,
a task that ends or a deferred task that resumes starts the next loop within one poll; anything
the query does not see (timed checks, callbacks, retries) runs at least as often as in stock
Airflow with the same setting.

Run as ``python -m mlops_airflow.scheduler [airflow scheduler options]``: it is ``airflow
scheduler`` with this job runner in place of ``SchedulerJobRunner``; nothing else differs.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

log = logging.getLogger(__name__)

WAKE_POLL_ENV = "MLOPS_SCHEDULER_WAKE_POLL_S"
DEFAULT_WAKE_POLL_S = 0.1


def wake_poll_seconds() -> float:
    """The poll interval from MLOPS_SCHEDULER_WAKE_POLL_S (a positive number of seconds)."""
    raw = os.environ.get(WAKE_POLL_ENV, "").strip()
    if not raw:
        return DEFAULT_WAKE_POLL_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise SystemExit(f"{WAKE_POLL_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def work_state_statement() -> Any:
    """One SELECT whose row changes whenever the scheduling loop has something new to do."""
    from sqlalchemy import exists, false, func, select

    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import DagRunState, TaskInstanceState

    def count(model: Any, *states: str) -> Any:
        return select(func.count()).select_from(model).where(model.state.in_(states)).scalar_subquery()

    dag_due = exists().where(
        DagModel.is_paused == false(),
        DagModel.is_stale == false(),
        DagModel.has_import_errors == false(),
        DagModel.next_dagrun_create_after <= func.now(),
    )
    return select(
        count(DagRun, DagRunState.QUEUED),
        count(DagRun, DagRunState.RUNNING),
        count(TaskInstance, TaskInstanceState.SCHEDULED),
        count(TaskInstance, TaskInstanceState.QUEUED, TaskInstanceState.RUNNING),
        count(TaskInstance, TaskInstanceState.DEFERRED),
        dag_due,
        exists().where(AssetDagRunQueue.target_dag_id.is_not(None)),
    )


def wait_for_new_work(read: Callable[[], tuple], seen: tuple | None, deadline: float,
                      poll_s: float) -> tuple:
    """Call ``read`` every ``poll_s`` until it answers something other than ``seen`` or the
    ``time.monotonic()`` deadline passes; return its last answer."""
    while True:
        state = read()
        remaining = deadline - time.monotonic()
        if state != seen or remaining <= 0:
            return state
        time.sleep(min(poll_s, remaining))


class WorkStateProbe:
    """Runs work_state_statement() on a connection of its own, prepared once on PostgreSQL.

    Polled many times a second, so it skips what an ORM query costs each time: SQLAlchemy
    compilation, the pool's ping on checkout and, on PostgreSQL, the server's planning.
    """

    def __init__(self) -> None:
        self._conn: Any = None
        self.query = ""

    def read(self) -> tuple:
        """The current work state; raises on any database error (after dropping the connection)."""
        try:
            if self._conn is None:
                self._connect()
            cursor = self._conn.cursor()
            try:
                cursor.execute(self.query)
                return tuple(cursor.fetchone())
            finally:
                cursor.close()
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        """Close the probe's connection (the next read opens a new one)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                log.debug("Closing the work-state connection failed", exc_info=True)
            self._conn = None

    def _connect(self) -> None:
        from airflow import settings

        engine = settings.engine
        sql = str(work_state_statement().compile(dialect=engine.dialect,
                                                 compile_kwargs={"literal_binds": True}))
        conn = engine.raw_connection()
        conn.detach()  # ours for good: never handed to another pool user with our prepared statement
        # Each poll its own transaction: fresh now(), no snapshot or lock held between polls.
        engine.dialect.set_isolation_level(conn.dbapi_connection, "AUTOCOMMIT")
        self.query = sql
        if engine.dialect.name == "postgresql":
            cursor = conn.cursor()
            cursor.execute(f"PREPARE mlops_work_state AS {sql}")
            cursor.close()
            self.query = "EXECUTE mlops_work_state"
        self._conn = conn


class WakeOnWorkSchedulerJobRunner(SchedulerJobRunner):
    """SchedulerJobRunner whose idle sleep ends when the work state changes (see the module doc).

    The stock loop reads ``_scheduler_idle_sleep_time`` once per idle iteration, right before it
    sleeps: reading it here does the waiting and answers what is left to sleep (0 normally).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._wake_poll_s = wake_poll_seconds()
        self._probe = WorkStateProbe()
        # The work state read right before the latest loop started; None forces one loop.
        self._seen: tuple | None = None
        super().__init__(*args, **kwargs)
        log.info(
            "Scheduler idle sleep: at most %.2f s ([scheduler] scheduler_idle_sleep_time), ended "
            "within %.2f s (%s) when the work state changes",
            self._max_sleep_s, self._wake_poll_s, WAKE_POLL_ENV,
        )

    @property
    def _scheduler_idle_sleep_time(self) -> float:
        deadline = time.monotonic() + self._max_sleep_s
        try:
            self._seen = wait_for_new_work(self._probe.read, self._seen, deadline, self._wake_poll_s)
        except Exception:
            log.warning("Work-state query failed; sleeping the full idle time", exc_info=True)
            self._seen = None
            return max(deadline - time.monotonic(), 0.0)
        return 0.0

    @_scheduler_idle_sleep_time.setter
    def _scheduler_idle_sleep_time(self, value: float) -> None:
        self._max_sleep_s = value


def main(argv: list[str] | None = None) -> int:
    """``airflow scheduler [argv]`` with WakeOnWorkSchedulerJobRunner."""
    from airflow.__main__ import main as airflow_main
    from airflow.cli.commands import scheduler_command

    scheduler_command.SchedulerJobRunner = WakeOnWorkSchedulerJobRunner
    sys.argv = ["airflow", "scheduler", *(sys.argv[1:] if argv is None else argv)]
    return airflow_main() or 0


if __name__ == "__main__":
    sys.exit(main())
