"""The `mlops` CLI run as root never executes what a task can write (issue 22 item 3).

Tasks write into the data folder. `mlops preprocess` runs DVC there: with the data folder as
working directory, a planted `dvc/__main__.py` there used to be what `python -m dvc` ran. Now DVC
runs isolated (`python -I`), root works as the data folder's owner, and the default local MLflow
store is outside the data folder."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from stack.config import WORKER_USER

MLOPS = str(Path(sys.executable).parent / "mlops")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the finding is about root running mlops")


def _mlops(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    env["MLOPS_DATA_DIR"] = str(data)
    return subprocess.run([MLOPS, *args], capture_output=True, text=True, env=env, cwd="/", timeout=300)


@pytest.fixture()
def data_folder():
    """A data folder (traversable by the worker user) with one genuine accepted batch and a
    planted `dvc` package whose `__main__` would leave a marker."""
    root = Path(tempfile.mkdtemp(prefix="mlops-rootdata-", dir="/tmp"))
    os.chmod(root, 0o755)
    data = root / "data"
    data.mkdir()
    replay = _mlops("data", "replay", "--from", "2013-W02", "--until", "2013-W02", data=data)
    assert replay.returncode == 0, replay.stderr
    (data / "accepted").mkdir(exist_ok=True)
    shutil.move(data / "landing" / "2013-W02.csv", data / "accepted" / "2013-W02.csv")
    marker = root / "planted-code-ran"
    (data / "dvc").mkdir()
    (data / "dvc" / "__init__.py").write_text("")
    (data / "dvc" / "__main__.py").write_text(
        f"import os\nopen({str(marker)!r}, 'w').write(str(os.getuid()))\n")
    yield data, marker
    shutil.rmtree(root, ignore_errors=True)


def test_preprocess_as_root_does_not_run_a_planted_dvc_module(data_folder) -> None:
    data, marker = data_folder
    result = _mlops("preprocess", data=data)
    assert not marker.exists(), f"root ran {data / 'dvc' / '__main__.py'} (uid {marker.read_text()})"
    assert result.returncode == 0, result.stderr
    assert (data / "processed" / "training.parquet").is_file()


def test_root_works_as_the_data_folders_owner(data_folder) -> None:
    data, marker = data_folder
    worker = pwd.getpwnam(WORKER_USER)
    for path in [data, *data.rglob("*")]:
        os.chown(path, worker.pw_uid, worker.pw_gid)
    result = _mlops("preprocess", data=data)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    made = [data / "processed" / "training.parquet", data / ".dvc", data / "dvc.yaml", data / "dvc.lock"]
    assert {p.name: p.stat().st_uid for p in made} == {p.name: worker.pw_uid for p in made}


def test_a_root_data_folder_others_may_write_to_is_refused(data_folder) -> None:
    data, marker = data_folder
    os.chmod(data, 0o777)
    result = _mlops("preprocess", data=data)
    assert result.returncode == 1 and "others may write to it" in result.stderr and str(data) in result.stderr
    assert not (data / "processed").exists() and not marker.exists()


def test_the_default_mlflow_store_is_outside_the_data_folder(tmp_path: Path, monkeypatch) -> None:
    from mlops import config

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = Path(config.tracking_uri().removeprefix("sqlite:///"))
    artifacts = Path(config.artifact_location().removeprefix("file://"))
    data = config.data_dir()
    assert data not in store.parents and data not in artifacts.parents
