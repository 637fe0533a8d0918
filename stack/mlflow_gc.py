"""`mlflow gc` on a schedule, beside the tracking server: `python -m stack.mlflow_gc` (both stacks).

maintenance_dag.prune_mlflow_runs only soft-deletes old runs and their logged models (lifecycle
stage `deleted`): that frees no disk. Only `mlflow gc` deletes them for good, rows and artifacts,
and it needs the MLflow database's login, which no Airflow worker holds. So this program runs as
the tracking server's user with the server's own secrets: the database URL
(MLFLOW_BACKEND_STORE_URI) and the MLflow admin login (MLFLOW_TRACKING_USERNAME/_PASSWORD; the
artifacts are proxied, so gc deletes them through the server's /mlflow-artifacts API at
MLFLOW_TRACKING_URI).

APScheduler keeps the schedule (MLFLOW_GC_SCHEDULE, a crontab line in UTC, default daily 03:30);
each pass collects what was deleted more than MLFLOW_GC_RETENTION_DAYS ago (default 7: a deleted
run can be restored until then; 0: at the next pass). SIGUSR1 runs a pass at once
(`supervisorctl signal USR1 mlflow-gc`, `docker compose kill -s USR1 mlflow-gc`). Each pass is a
child process (`--once`), so the resident scheduler holds none of MLflow's imports, and the
database URL is never on a command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone

log = logging.getLogger("mlflow-gc")

SCHEDULE_VAR = "MLFLOW_GC_SCHEDULE"
RETENTION_VAR = "MLFLOW_GC_RETENTION_DAYS"
DEFAULT_SCHEDULE = "30 3 * * *"
DEFAULT_RETENTION_DAYS = 7.0
PASS_TIMEOUT_S = 6 * 3600
JOB_ID = "mlflow-gc"


class GcConfigError(ValueError):
    """A setting of the gc program is missing or invalid (the message names it)."""


def retention_days(env: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """MLFLOW_GC_RETENTION_DAYS: days a deleted run stays restorable (0 or more)."""
    raw = (env.get(RETENTION_VAR) or "").strip()
    if not raw:
        return DEFAULT_RETENTION_DAYS
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not 0 <= days < 36500:
        raise GcConfigError(f"{RETENTION_VAR}={raw!r}: a number of days, 0 or more")
    return days


def trigger(env: dict[str, str] | os._Environ[str] = os.environ) -> object:
    """The APScheduler cron trigger of MLFLOW_GC_SCHEDULE (UTC)."""
    from apscheduler.triggers.cron import CronTrigger

    line = (env.get(SCHEDULE_VAR) or "").strip() or DEFAULT_SCHEDULE
    try:
        return CronTrigger.from_crontab(line, timezone=timezone.utc)
    except ValueError as exc:
        raise GcConfigError(f"{SCHEDULE_VAR}={line!r} is not a crontab schedule: {exc}") from None


def gc_args(days: float, backend_store_uri: str) -> list[str]:
    """The arguments of `mlflow gc`: what was deleted more than `days` days ago."""
    return ["gc", "--backend-store-uri", backend_store_uri, "--older-than", f"{round(days * 86400)}s"]


def run_once() -> int:
    """One `mlflow gc` pass in this process (the child of `run_pass`); its exit code."""
    # The scheduler blocks these for its sigwait and a child inherits the mask: a stop must end a pass.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT})
    uri = os.environ.get("MLFLOW_BACKEND_STORE_URI")
    if not uri or not os.environ.get("MLFLOW_TRACKING_URI"):
        raise GcConfigError("MLFLOW_BACKEND_STORE_URI and MLFLOW_TRACKING_URI must be set (the tracking server's "
                            "database and its URL: the artifacts are deleted through it)")
    from mlflow.cli import cli

    try:
        cli.main(args=gc_args(retention_days(), uri), prog_name="mlflow", standalone_mode=False)
    except Exception as exc:  # noqa: BLE001 - reported and turned into the exit code
        print(f"mlflow gc failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def run_pass() -> int:
    """One gc pass in a child process; its exit code (logged; the schedule goes on either way)."""
    started = datetime.now(timezone.utc)
    log.info("mlflow gc: collecting what was deleted more than %s days ago", retention_days())
    try:
        code = subprocess.run([sys.executable, "-m", "stack.mlflow_gc", "--once"], timeout=PASS_TIMEOUT_S).returncode
    except subprocess.TimeoutExpired:
        code = -1
    took = (datetime.now(timezone.utc) - started).total_seconds()
    if code == 0:
        log.info("mlflow gc: done in %.1f s", took)
    else:
        log.error("mlflow gc: FAILED (exit %s) after %.1f s; the next pass retries", code, took)
    return code


def serve() -> None:
    """Run a pass on the schedule and on SIGUSR1 until SIGTERM/SIGINT."""
    from apscheduler.schedulers.background import BackgroundScheduler

    retention_days()  # refuse a bad setting at start, not at the first pass
    cron = trigger()
    waited = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)  # before any thread: only sigwait takes them
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    scheduler.add_job(run_pass, cron, id=JOB_ID, max_instances=1, coalesce=True, misfire_grace_time=3600)
    scheduler.start()
    log.info("mlflow gc: schedule %r (UTC), next pass %s", os.environ.get(SCHEDULE_VAR) or DEFAULT_SCHEDULE,
             scheduler.get_job(JOB_ID).next_run_time)
    while (sig := signal.sigwait(waited)) == signal.SIGUSR1:
        log.info("mlflow gc: SIGUSR1, a pass now")
        scheduler.modify_job(JOB_ID, next_run_time=datetime.now(timezone.utc))
    log.info("mlflow gc: %s, stopping after the running pass", signal.Signals(sig).name)
    scheduler.shutdown(wait=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--once", action="store_true", help="one gc pass in this process, then exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.once:
            return run_once()
        serve()
    except GcConfigError as exc:
        print(f"mlflow-gc: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
