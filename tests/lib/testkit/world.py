"""A small ML world for the data and model tests: a temporary MLOPS_DATA_DIR with a few replayed
weeks, accepted batches, the DVC training table, a local SQLite MLflow store and optionally a
champion. The fixtures `world` and `shared_world` of tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
MLOPS = str(VENV_BIN / "mlops")

# Variables that would point the package at a shared store or a Pushgateway.
_CLEAR = ("MLFLOW_TRACKING_URI", "MLOPS_PUSHGATEWAY_URL", "MLOPS_SCHEMA", "MLOPS_MODEL_NAME",
          "MLOPS_EXPERIMENT")


def use_data_dir(path: Path, monkeypatch=None) -> None:  # noqa: ANN001 (pytest.MonkeyPatch)
    """Point this process at a data folder with its own SQLite MLflow store (through
    ``monkeypatch`` when given, so the environment is restored after the test)."""
    setenv = monkeypatch.setenv if monkeypatch else os.environ.__setitem__
    for key in _CLEAR:
        if monkeypatch:
            monkeypatch.delenv(key, raising=False)
        else:
            os.environ.pop(key, None)
    setenv("MLOPS_DATA_DIR", str(path))
    setenv("MLOPS_FIT_THREADS", os.environ.get("MLOPS_FIT_THREADS", "1"))


def fresh_data_dir(tmp_path: Path, monkeypatch) -> Path:  # noqa: ANN001 (pytest.MonkeyPatch)
    """An empty data folder of its own under `tmp_path`, set as MLOPS_DATA_DIR, and no threshold
    from the shell's environment."""
    from mlops.config import THRESHOLDS

    for spec in THRESHOLDS.values():
        monkeypatch.delenv(spec.env, raising=False)
    data = tmp_path / "data"
    use_data_dir(data, monkeypatch)
    return data


WEEKS = ("2013-W01", "2013-W02", "2013-W03")
LANDING = ("2013-W04",)
CHAMPION_ROWS = 4000


def shared(tmp_path_factory) -> Path:  # noqa: ANN001 (pytest.TempPathFactory)
    """The session's world, built once and shared by tests/data and tests/model:
    2013-W01..W03 accepted, W04 in landing, the training table and a champion trained on
    W01-W02 (4000 rows) held out on W03."""
    root = tmp_path_factory.getbasetemp() / "mlops-world"
    done = root / ".built"
    if not done.exists():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        saved = dict(os.environ)
        try:
            build(root)
        finally:  # leave the session's environment as it was for other test folders
            os.environ.clear()
            os.environ.update(saved)
        done.touch()
    return root / "data"


def build(root: Path, weeks: tuple[str, ...] = WEEKS, landing_only: tuple[str, ...] = LANDING,
          champion_rows: int | None = CHAMPION_ROWS) -> Path:
    """Replay, accept ``weeks`` (fast checks only), preprocess, train and deploy a champion."""
    from mlops.data import replay
    from mlops.batches import mark_processed
    from mlops.preprocess import run_preprocess
    from mlops.validate import accept_batch, validate_batch

    data = root / "data"
    use_data_dir(data)
    replay(until_week=max(weeks + landing_only), from_week=min(weeks + landing_only))
    for week in weeks:
        validate_batch(week, checks=["schema", "quality", "anomalies"])
        accept_batch(week)
        (data / "landing" / f"{week}.csv").unlink()
        mark_processed([week])
    run_preprocess()
    if champion_rows:
        from mlops.promotion import deploy
        from mlops.train import train_model

        trained = train_model(max_rows=champion_rows)
        deploy(trained["version"])
    return data


def cli(*args: str, data_dir: Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the ``mlops`` console script against ``data_dir``."""
    env = dict(os.environ)
    env["MLOPS_DATA_DIR"] = str(data_dir)
    for key in _CLEAR:
        env.pop(key, None)
    res = subprocess.run([MLOPS, *args], capture_output=True, text=True, env=env, cwd="/",
                         timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"mlops {' '.join(args)} failed: {res.stderr}")
    return res


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (to prove a folder was not touched)."""
    import hashlib

    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def copy_batch(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


CORPUS_ACCEPTED = tuple(f"2013-W{n:02d}" for n in range(1, 9))
CORPUS_GENUINE = {"W05": "2013-W05", "W08": "2013-W08", "W09": "2013-W09", "W10": "2013-W10"}


def corpus(root: Path) -> tuple[Path, dict]:
    """The corpus world: 2013-W01..W08 validated (every check) and accepted, the training table
    built, landing empty; returns the data folder and the genuine weeks of corpus.py as text."""
    import pandas as pd

    from mlops.batches import mark_processed
    from mlops.data import replay
    from mlops.preprocess import run_preprocess
    from mlops.validate import accept_batch, validate_batch

    data = root / "data"
    use_data_dir(data)
    replay(until_week="2013-W10", from_week="2013-W01")
    for week in CORPUS_ACCEPTED:
        validate_batch(week)
        accept_batch(week)
        mark_processed([week])
    run_preprocess()
    weeks = {k: pd.read_csv(data / "accepted" / f"{w}.csv", dtype=str)
             if (data / "accepted" / f"{w}.csv").exists()
             else pd.read_csv(data / "landing" / f"{w}.csv", dtype=str)
             for k, w in CORPUS_GENUINE.items()}
    for path in (data / "landing").glob("*.csv"):
        path.unlink()
    return data, weeks
