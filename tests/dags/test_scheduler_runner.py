"""mlops_airflow.scheduler: the scheduler's idle sleep that ends on new work.

The wait loop with a scripted reader, the work-state query against the (SQLite) metadata database,
and a guard that the pinned Airflow's scheduler loop still reads the idle sleep where the runner
expects. tests/stack runs the real scheduler with it on PostgreSQL.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import time
import uuid

import pytest

from testkit.dag_harness import REPO


class ScriptedReader:
    """Answers the given states in order (the last one forever) and counts the calls."""

    def __init__(self, *states: tuple) -> None:
        self.states = list(states)
        self.calls = 0

    def __call__(self) -> tuple:
        self.calls += 1
        return self.states[min(self.calls, len(self.states)) - 1]


def test_returns_at_once_when_the_state_differs_from_the_last_loop() -> None:
    from mlops_airflow.scheduler import wait_for_new_work

    read = ScriptedReader((1, 0))
    start = time.monotonic()
    assert wait_for_new_work(read, (0, 0), start + 5, 0.5) == (1, 0)
    assert read.calls == 1 and time.monotonic() - start < 0.5


def test_wakes_on_the_first_poll_that_sees_a_change() -> None:
    from mlops_airflow.scheduler import wait_for_new_work

    read = ScriptedReader((0, 2), (0, 2), (0, 2), (0, 1))
    start = time.monotonic()
    assert wait_for_new_work(read, (0, 2), start + 5, 0.02) == (0, 1)
    assert read.calls == 4
    assert time.monotonic() - start >= 3 * 0.02


def test_without_a_change_it_sleeps_until_the_deadline() -> None:
    from mlops_airflow.scheduler import wait_for_new_work

    read = ScriptedReader((0, 0))
    start = time.monotonic()
    assert wait_for_new_work(read, (0, 0), start + 0.3, 0.05) == (0, 0)
    assert time.monotonic() - start >= 0.3
    assert read.calls >= 4  # polled on the way, not one long sleep


def test_a_failing_query_falls_back_to_the_full_idle_sleep() -> None:
    from mlops_airflow.scheduler import WakeOnWorkSchedulerJobRunner

    class BrokenProbe:
        def read(self) -> tuple:
            raise ConnectionError("server closed the connection")

    # Only the attributes the property uses: a full runner needs a Job and executors.
    runner = object.__new__(WakeOnWorkSchedulerJobRunner)
    runner._probe, runner._seen, runner._wake_poll_s = BrokenProbe(), (0,), 0.05
    runner._scheduler_idle_sleep_time = 1.5
    left = runner._scheduler_idle_sleep_time
    assert 1.0 < left <= 1.5  # the stock loop sleeps this instead
    assert runner._seen is None  # and the next idle loop does not trust the old state


def test_stock_loop_reads_the_idle_sleep_only_right_before_sleeping() -> None:
    """The runner relies on this line of the pinned Airflow; an upgrade that moves it fails here."""
    from airflow.jobs import scheduler_job_runner

    loop = inspect.getsource(scheduler_job_runner.SchedulerJobRunner._run_scheduler_loop)
    assert loop.count("_scheduler_idle_sleep_time") == 1, loop
    assert re.search(r"time\.sleep\(min\(self\._scheduler_idle_sleep_time, next_event or 0\)\)", loop)
    module = inspect.getsource(scheduler_job_runner)
    uses = re.findall(r"self\._scheduler_idle_sleep_time\s*(=)?", module)
    assert uses.count("=") == 1 and len(uses) == 2, uses  # set in __init__, read in the loop


def test_work_state_follows_the_database(airflow_db) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType
    from mlops_airflow.scheduler import WorkStateProbe

    probe = WorkStateProbe()
    try:
        before = probe.read()
        assert len(before) == 7 and all(isinstance(n, int) for n in before[:5]), before
        assert probe.read() == before  # nothing changed: the scheduler would keep sleeping
        run_id = f"probe_{uuid.uuid4().hex}"
        with create_session() as session:
            session.add(DagRun(dag_id="probe_dag", run_id=run_id, run_type=DagRunType.MANUAL,
                               state=DagRunState.QUEUED))
        queued = probe.read()
        assert (queued[0], queued[1]) == (before[0] + 1, before[1]), (before, queued)
        with create_session() as session:
            session.query(DagRun).filter(DagRun.run_id == run_id).update({"state": DagRunState.RUNNING})
        running = probe.read()
        assert (running[0], running[1]) == (before[0], before[1] + 1), (before, running)
        with create_session() as session:
            session.query(DagRun).filter(DagRun.run_id == run_id).delete()
        assert probe.read() == before
    finally:
        probe.close()


def test_entry_point_is_the_airflow_scheduler_command() -> None:
    result = subprocess.run([sys.executable, "-m", "mlops_airflow.scheduler", "--help"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--num-runs" in result.stdout and "--skip-serve-logs" in result.stdout, result.stdout


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_poll_interval_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from mlops_airflow.scheduler import WAKE_POLL_ENV, wake_poll_seconds

    monkeypatch.setenv(WAKE_POLL_ENV, value)
    with pytest.raises(SystemExit, match=f"{WAKE_POLL_ENV} must be a positive number of seconds"):
        wake_poll_seconds()
