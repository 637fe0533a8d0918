"""Fail closed: with a real MLflow server stopped, reading the champion, evaluating and deploying
raise MLflow's own error, never "no champion" and never an MlopsError (which the Airflow tasks
turn into a failure without retries); nothing moves. Once the server is back, the same deploy goes
through. The server is a real `mlflow server` process on a SQLite store of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

MLFLOW = str(Path(sys.executable).parent / "mlflow")
WEEKS = {"train_weeks": ["2013-W01", "2013-W02"], "holdout_week": "2013-W03"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A `mlflow server` process that the test can stop and start again on the same port."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.root / "mlflow.log", "ab")
        self.proc = subprocess.Popen(
            [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, (self.root / "mlflow.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not answer within 120 s"
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=60)
        self.proc = None


@pytest.fixture()
def server(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    srv = Server(tmp_path)
    srv.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.url)
    monkeypatch.setenv("MLOPS_MODEL_NAME", "fail_closed_model")
    # One quick retry of a refused connection instead of MLflow's minutes of back-off.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    yield srv
    srv.stop()


def test_mlflow_outage_is_an_error_never_an_answer(server: Server) -> None:
    from mlflow.exceptions import MlflowException

    from mlops.errors import MlopsError
    from mlops.promotion import deploy, evaluate_candidate
    from mlops.registry import champion_version, get_champion
    from mlops.train import train_model
    from mlops_airflow.tasks import fail_fast

    champion = train_model(**WEEKS, max_rows=2000)
    assert deploy(champion["version"])["deployed"] is True  # no champion yet
    candidate = train_model(**WEEKS, max_rows=6000)
    evaluation = evaluate_candidate(candidate["version"], deploy_margin=-1.0)
    assert evaluation["decision"]["deploy"] is True

    server.stop()
    for call in (champion_version, get_champion,
                 lambda: evaluate_candidate(candidate["version"]),
                 lambda: deploy(candidate["version"], evaluation=evaluation, deploy_margin=-1.0)):
        with pytest.raises(MlflowException) as raised:
            call()
        assert not isinstance(raised.value, MlopsError)
        assert raised.value.error_code != "RESOURCE_DOES_NOT_EXIST"
    # The Airflow tasks' fail_fast lets it through (normal retries), it does not fail fast.
    with pytest.raises(MlflowException):
        with fail_fast():
            deploy(candidate["version"], evaluation=evaluation, deploy_margin=-1.0)

    server.start()
    assert champion_version() == champion["version"]  # nothing moved during the outage
    done = deploy(candidate["version"], evaluation=evaluation, deploy_margin=-1.0)
    assert done["deployed"] is True and champion_version() == candidate["version"]


def test_only_not_found_means_absent(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.errors import RegistryError
    from mlops.registry import aliases, get_champion, version_info

    monkeypatch.setenv("MLOPS_MODEL_NAME", "never_registered_model")
    assert aliases() == {} and get_champion() is None  # RESOURCE_DOES_NOT_EXIST: absent
    with pytest.raises(RegistryError, match="has no version 7"):
        version_info("7")
