"""Run-scoped memo files, so that clearing a task that changes shared state (the watermark, the
registry backup) replays the first attempt's answer instead of acting twice.

XCom cannot do this: Airflow clears a task's XComs when the task is cleared. The memo lives
beside the ML data (``$MLOPS_DATA_DIR/state/airflow/<dag_id>/<run_id>/<name>.json``), which every
Celery worker sees.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def data_dir() -> Path:
    """``$MLOPS_DATA_DIR`` (default ``./data``), resolved by the mlops package."""
    from mlops.config import data_dir as mlops_data_dir

    return mlops_data_dir()


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", part)


def memo_path(dag_id: str, run_id: str, name: str) -> Path:
    """Where the memo ``name`` of one DAG run is kept."""
    return data_dir() / "state" / "airflow" / _safe(dag_id) / _safe(run_id) / f"{_safe(name)}.json"


def run_once(dag_id: str, run_id: str, name: str, compute: Callable[[], Any]) -> Any:
    """Return the memo ``name`` of this DAG run, computing and storing it on first use.

    The file is written atomically (temp file + rename) so a killed task never leaves half a memo.
    """
    path = memo_path(dag_id, run_id, name)
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(value, fh)
    os.replace(tmp, path)
    return value
