"""A training attempt killed inside its MLflow run leaves that run RUNNING; the next attempt of the
same job (an Airflow task instance's retry) marks it FAILED before it trains, and leaves the runs
of other jobs alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

WEEKS = {"train_weeks": ["2013-W01", "2013-W02"], "holdout_week": "2013-W03"}
# What a killed attempt did: start the job's run, then die without ending it.
DIE_IN_A_RUN = """
import os, signal, sys
from mlops import tracking
import mlflow
tracking.setup()
run = mlflow.start_run(tags={"job": sys.argv[1]})
print(run.info.run_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _die_in_a_run(job: str) -> str:
    proc = subprocess.run([sys.executable, "-c", DIE_IN_A_RUN, job], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc.stdout.split()[0]


def test_a_retry_marks_the_run_its_killed_attempt_left_running_as_failed(model_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    from mlops import tracking
    from mlops.train import train_model

    tracking.setup()
    client = MlflowClient()
    job = "ml_pipeline_dag/manual__test/train/-1"
    killed = _die_in_a_run(job)
    other = _die_in_a_run("model_retraining_dag/manual__test/retrain_model/2")
    assert client.get_run(killed).info.status == "RUNNING"

    result = train_model(**WEEKS, max_rows=1500, register=False, job=job)

    dead = client.get_run(killed)
    assert dead.info.status == "FAILED" and "died" in dead.data.tags["abandoned"]
    assert client.get_run(other).info.status == "RUNNING"  # another job's run: not this retry's business
    new = client.get_run(result["run_id"])
    assert new.info.status == "FINISHED" and new.data.tags["job"] == job
    client.set_terminated(other, status="FAILED")
