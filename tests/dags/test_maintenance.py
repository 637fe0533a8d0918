"""maintenance_dag's parts without a stack: retention keeps what is newer than the setting and
removes the rest, the database cleaner's command, and the cluster policy that keeps every other
task off the maintenance queue (its worker holds the metadata database's login)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

DAY = 86400


def _file(path: Path, age_days: float, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def test_retention_removes_what_is_older_than_the_setting_and_keeps_the_rest(tmp_path: Path) -> None:
    from mlops.retention import prune_older_than

    root = tmp_path / "logs"
    old = [_file(root / "dag_id=a" / "run_id=1" / "task_id=t" / "attempt=1.log", 31, 100),
           _file(root / "dag_id=b" / "old.log", 45, 50)]
    young = [_file(root / "dag_id=a" / "run_id=2" / "task_id=t" / "attempt=1.log", 29),
             _file(root / "dag_id=c" / "new.log", 0.01)]
    result = prune_older_than(root, 30)
    assert [p.exists() for p in old] == [False, False]
    assert all(p.exists() for p in young)
    assert (result.removed_files, result.removed_bytes, result.kept_files) == (2, 150, 2)
    # Folders emptied by the pass go too; the root and folders still holding files stay.
    assert not (root / "dag_id=a" / "run_id=1").exists() and not (root / "dag_id=b").exists()
    assert root.is_dir() and (root / "dag_id=a" / "run_id=2").is_dir()
    assert result.errors == []


def test_retention_refuses_a_non_positive_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.retention import prune_older_than, retention_days

    with pytest.raises(ValueError, match="positive"):
        prune_older_than(tmp_path, 0)
    monkeypatch.setenv("LOG_RETENTION_DAYS", "-3")
    with pytest.raises(ValueError, match="LOG_RETENTION_DAYS"):
        retention_days("LOG_RETENTION_DAYS", 30)
    monkeypatch.setenv("LOG_RETENTION_DAYS", "7")
    assert retention_days("LOG_RETENTION_DAYS", 30) == 7
    assert prune_older_than(tmp_path / "missing", 1).removed_files == 0


def test_db_clean_command_on_the_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_airflow.maintenance import db_clean_command

    now = datetime(2026, 12, 7, tzinfo=timezone.utc)
    monkeypatch.setenv("AIRFLOW_DB_RETENTION_DAYS", "90")
    command = db_clean_command({}, now)
    assert command[:3] == ["airflow", "db", "clean"]
    assert command[command.index("--clean-before-timestamp") + 1] == "2026-09-08T00:00:00+00:00"
    assert "--skip-archive" in command and "--yes" in command and "--dag-ids" not in command
    command = db_clean_command({"clean_before": "2026-12-01T10:00:00Z", "dag_ids": ["a", "b"], "tables": ["dag_run"]},
                               now)
    assert command[command.index("--clean-before-timestamp") + 1] == "2026-12-01T10:00:00+00:00"
    assert command[command.index("--dag-ids") + 1] == "a,b"
    assert command[command.index("--tables") + 1] == "dag_run"


def test_tables_db_clean_could_not_clean_are_read_from_its_output() -> None:
    from mlops_airflow.maintenance import uncleaned_tables

    line = ("2026-12-07T11:21:44Z [warning  ] The following tables were not cleaned due to errors: "
            "['deadline', 'xcom']. Check the logs above for details.")
    assert uncleaned_tables("Checking table dag_run\n" + line) == {"deadline", "xcom"}
    assert uncleaned_tables("Checking table dag_run\nFound 0 rows meeting deletion criteria.") == set()


def test_only_the_db_cleaner_may_use_the_maintenance_queue(airflow_db, tmp_path: Path) -> None:
    """A DAG that routes any other task to the maintenance queue is refused at parse time."""
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "sneaky_dag.py").write_text(
        "from datetime import datetime\n"
        "from airflow.sdk import dag, task\n"
        "@task(queue='maintenance')\n"
        "def read_secrets():\n"
        "    pass\n"
        "@dag(dag_id='sneaky', schedule=None, start_date=datetime(2026, 1, 1))\n"
        "def sneaky():\n"
        "    read_secrets()\n"
        "sneaky()\n")
    (tmp_path / "fine_dag.py").write_text(
        "from datetime import datetime\n"
        "from airflow.sdk import dag, task\n"
        "@task(queue='heavy')\n"
        "def train():\n"
        "    pass\n"
        "@dag(dag_id='fine', schedule=None, start_date=datetime(2026, 1, 1))\n"
        "def fine():\n"
        "    train()\n"
        "fine()\n")
    bag = DagBag(dag_folder=str(tmp_path))
    assert set(bag.dag_ids) == {"fine"}
    (error,) = bag.import_errors.values()
    assert "sneaky.read_secrets" in error and "maintenance" in error
