"""A burst on the running stack: 200 task instances of bench_fanout (benchmarks/dags, trivial
mapped tasks on both queues) triggered through the REST API as four concurrent runs
(tests/lib/testkit/load.py, the driver benchmarks/load.py times). Nothing is lost or stuck, no task trips
task_queued_timeout, the scheduler's StatsD heartbeat keeps coming, the heavy queue's tasks run on
the heavy worker only and the light workers share the light queue. What it asserts is correctness,
not speed: the timings are the benchmark's."""

from __future__ import annotations

from collections import Counter

import pytest

from stack.api import Airflow
from testkit.load import DAG_ID, HEAVY_TASK, run_burst

BURST_TASKS = 200
RUNS = 4
DEADLINE_S = 600
HEARTBEAT = "airflow.scheduler_heartbeat:"
# The heartbeat stalled when this many heartbeat intervals passed without one.
MISSED_BEATS = 3


@pytest.fixture(scope="module")
def burst(dags_ready):
    api = Airflow(dags_ready.cfg, *dags_ready.login("admin"))
    api.wait_dag(DAG_ID, 180)
    return run_burst(dags_ready.cfg, api, BURST_TASKS, RUNS, DEADLINE_S)


def test_nothing_lost_or_stuck(burst) -> None:
    states = Counter(ti["state"] for ti in burst.instances)
    assert not burst.deadline_passed, f"runs not ended within {DEADLINE_S} s: {states}"
    assert len(burst.instances) == BURST_TASKS, states
    assert burst.stuck == 0 and burst.lost == 0, states


def test_no_task_trips_task_queued_timeout(burst, dags_ready) -> None:
    timeout = float(dags_ready.component_env("scheduler")["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"])
    assert burst.queued_timeouts == []
    assert len(burst.queue_waits) == BURST_TASKS and max(burst.queue_waits) < timeout
    # Every task instance ran once: none was requeued or retried.
    assert Counter(ti["try_number"] for ti in burst.instances) == {1: BURST_TASKS}


def test_the_scheduler_heartbeat_keeps_coming(burst, dags_ready) -> None:
    interval = float(dags_ready.component_env("scheduler").get("AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC", "5"))
    beats = [t for t, line in dags_ready.statsd.lines
             if line.startswith(HEARTBEAT) and burst.started <= t <= burst.ended]
    marks = [burst.started, *beats, burst.ended]
    gaps = [b - a for a, b in zip(marks, marks[1:])]
    assert beats, f"no {HEARTBEAT} line during the {burst.wall_s:.0f} s burst"
    assert max(gaps) <= MISSED_BEATS * interval, (
        f"the scheduler's heartbeat stopped for {max(gaps):.1f} s during the burst (interval {interval:.0f} s)")


def test_heavy_tasks_run_on_the_heavy_worker_only(burst, dags_ready) -> None:
    heavy = {w.name for w in dags_ready.cfg.workers if w.queue == "heavy"}
    light = {w.name for w in dags_ready.cfg.workers if w.queue == "light"}
    heavy_tis = [ti for ti in burst.instances if ti["task_id"] == HEAVY_TASK]
    assert len(heavy_tis) == RUNS and {ti["queue"] for ti in heavy_tis} == {"heavy"}
    assert burst.workers.get(HEAVY_TASK) == heavy, burst.workers
    for task_id, workers in burst.workers.items():
        if task_id != HEAVY_TASK:
            assert workers <= light, (task_id, workers)
    # The light workers share the light queue: each took part of the burst.
    assert burst.workers["light_item"] == light, burst.workers
