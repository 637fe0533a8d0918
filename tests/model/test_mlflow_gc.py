"""The mlflow-gc program (stack/mlflow_gc.py) on a real MLflow store (SQLite, local artifacts): a
pass deletes for good, rows and files, what was soft-deleted more than MLFLOW_GC_RETENTION_DAYS ago
and nothing else; SIGUSR1 starts a pass of the running scheduler, SIGTERM stops it; a bad setting
stops it with the variable named. (On the stack: tests/stack/test_stack_6_mlflow_gc.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def store(tmp_path: Path):
    """(client, env of the gc program, experiment id) over a SQLite store."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("flights", artifact_location=str(tmp_path / "artifacts"))
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    return client, env, experiment


def _run_with_file(client, experiment: str, tmp_path: Path) -> tuple[str, Path]:
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, "x" * 1000, "probe.txt")
    client.set_terminated(run.info.run_id)
    where = Path(client.get_run(run.info.run_id).info.artifact_uri.removeprefix("file://"))
    assert (where / "probe.txt").is_file()
    return run.info.run_id, where


def _once(env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stack.mlflow_gc", "--once"], env={**env, **extra},
                          capture_output=True, text=True, timeout=300)


def test_a_pass_collects_only_what_was_deleted_before_the_retention(store, tmp_path: Path) -> None:
    client, env, experiment = store
    deleted, deleted_dir = _run_with_file(client, experiment, tmp_path)
    active, active_dir = _run_with_file(client, experiment, tmp_path)
    client.delete_run(deleted)

    kept = _once(env, MLFLOW_GC_RETENTION_DAYS="7")  # deleted just now: restorable for 7 days
    assert kept.returncode == 0, kept.stderr
    assert client.get_run(deleted).info.lifecycle_stage == "deleted" and (deleted_dir / "probe.txt").is_file()

    done = _once(env, MLFLOW_GC_RETENTION_DAYS="0")
    assert done.returncode == 0, done.stderr
    assert f"Run with ID {deleted} has been permanently deleted" in done.stdout
    assert not (deleted_dir / "probe.txt").exists()
    with pytest.raises(Exception, match="not found|RESOURCE_DOES_NOT_EXIST"):
        client.get_run(deleted)
    assert client.get_run(active).info.lifecycle_stage == "active" and (active_dir / "probe.txt").is_file()


def test_the_scheduler_runs_a_pass_on_sigusr1_and_stops_on_sigterm(store, tmp_path: Path) -> None:
    client, env, experiment = store
    deleted, deleted_dir = _run_with_file(client, experiment, tmp_path)
    client.delete_run(deleted)
    # A schedule that does not fire during the test (Feb 30th): only the signal starts a pass.
    proc = subprocess.Popen([sys.executable, "-m", "stack.mlflow_gc"], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            env={**env, "MLFLOW_GC_RETENTION_DAYS": "0", "MLFLOW_GC_SCHEDULE": "0 0 30 2 *"})
    try:
        started = ""
        while "next pass" not in started:  # its signals are routed once it logs its schedule
            line = proc.stdout.readline()
            assert line, started
            started += line
        deadline = time.monotonic() + 60
        assert (deleted_dir / "probe.txt").is_file(), "a pass ran before the signal"
        proc.send_signal(signal.SIGUSR1)
        while (deleted_dir / "probe.txt").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no gc pass within 60 s of SIGUSR1"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    out = started + out
    assert "SIGUSR1, a pass now" in out and f"Run with ID {deleted} has been permanently deleted" in out
    assert "SIGTERM, stopping" in out


@pytest.mark.parametrize(("variable", "value"), [("MLFLOW_GC_RETENTION_DAYS", "-1"),
                                                 ("MLFLOW_GC_RETENTION_DAYS", "week"),
                                                 ("MLFLOW_GC_SCHEDULE", "every day")])
def test_a_bad_setting_stops_the_program_naming_it(variable: str, value: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "stack.mlflow_gc"], env={**os.environ, variable: value},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and variable in proc.stderr, proc.stderr
