"""mlops.metrics against a real Prometheus Pushgateway (Debian's prometheus-pushgateway) with the
stacks' basic-auth users (stack/grants.py): grouping keys, PUT/POST semantics, labels, the push
login, and pushes that fail (no or a wrong login, HTTP error, a gateway that never answers)
returning False instead of raising. The gateway keeps what was pushed across a restart."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mlops import metrics
from stack import grants

# The stacks' Pushgateway users (pusher, prometheus), with this module's passwords.
LOGINS = {user.password_var: f"test-{user.name}-password" for user in grants.WEB_USERS}
PUSHER = grants.web_login(LOGINS, "pushgateway", "pusher")
READER = grants.web_login(LOGINS, "pushgateway", "prometheus")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gateway:
    """One prometheus-pushgateway process on a free loopback port, persisting to `data`."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.web_config = data.with_name("web.yml")
        self.web_config.write_text(grants.web_config(LOGINS, "pushgateway"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("prometheus-pushgateway")
        if binary is None:
            pytest.fail("prometheus-pushgateway is not installed: run `make system-deps` (scripts/system-deps.sh)")
        self.proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{self.port}",
                                      f"--persistence.file={self.data}", f"--web.config.file={self.web_config}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{self.url}/-/ready", auth=READER, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, "pushgateway did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """label set (sorted, without empty labels) -> value of every series of `name`."""
        text = requests.get(f"{self.url}/metrics", auth=READER, timeout=5).text
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    out[tuple(sorted((k, v) for k, v in sample.labels.items() if v))] = sample.value
        return out


@pytest.fixture()
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    gw = Gateway(tmp_path / "pushgateway.data")
    gw.start()
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", gw.url)
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_USER", PUSHER[0])
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_PASSWORD", PUSHER[1])
    try:
        yield gw
    finally:
        gw.stop()


def test_put_replaces_the_group_under_its_grouping_key(gateway: Gateway) -> None:
    before = time.time()
    assert metrics.push("training", [metrics.Sample("mlops_training_holdout_roc_auc", 0.71),
                                     metrics.Sample("mlops_training_validation_roc_auc", 0.69)],
                        grouping={"recipe": "recent_6"})
    assert metrics.push("training", [metrics.Sample("mlops_training_holdout_roc_auc", 0.73)],
                        grouping={"recipe": "weekly"})
    key = (("job", "mlops_training"), ("recipe", "recent_6"))
    assert gateway.series("mlops_training_holdout_roc_auc") == {
        key: 0.71, (("job", "mlops_training"), ("recipe", "weekly")): 0.73}
    assert before <= gateway.series(metrics.LAST_SUCCESS)[key] <= time.time()
    # PUT: the next push of the group holds only its own metrics; a value of None is left out.
    assert metrics.push("training", [metrics.Sample("mlops_training_holdout_roc_auc", 0.75),
                                     metrics.Sample("mlops_training_validation_roc_auc", None)],
                        grouping={"recipe": "recent_6"})
    assert gateway.series("mlops_training_holdout_roc_auc")[key] == 0.75
    assert key not in gateway.series("mlops_training_validation_roc_auc")


def test_post_keeps_the_latest_rejection_when_a_batch_passes(gateway: Gateway) -> None:
    rejected_at = time.time()
    assert metrics.push("validation", [
        metrics.Sample("mlops_validation_batch_rejected", 1),
        metrics.Sample("mlops_validation_last_rejection_timestamp_seconds", rejected_at),
        metrics.Sample("mlops_validation_last_rejection_info", 1, {"week": "2013-W05", "check": "schema.columns"}),
    ], replace=False)
    assert metrics.push("validation", [metrics.Sample("mlops_validation_batch_rejected", 0)], replace=False)
    job = (("job", "mlops_validation"),)
    assert gateway.series("mlops_validation_batch_rejected") == {job: 0}
    assert gateway.series("mlops_validation_last_rejection_timestamp_seconds") == {job: pytest.approx(rejected_at)}
    assert gateway.series("mlops_validation_last_rejection_info") == {
        (("check", "schema.columns"), ("job", "mlops_validation"), ("week", "2013-W05")): 1}


def test_labels_beyond_the_grouping_key(gateway: Gateway) -> None:
    samples = [metrics.Sample("mlops_drift_signal_fired", fired, {"signal": name})
               for name, fired in (("data", 0), ("model", 1), ("label", 0))]
    assert metrics.push("drift", samples)
    assert gateway.series("mlops_drift_signal_fired") == {
        (("job", "mlops_drift"), ("signal", name)): fired for name, fired in (("data", 0), ("model", 1), ("label", 0))}


def test_an_http_error_is_logged_and_returns_false(gateway: Gateway, caplog) -> None:
    # The same name already exists as a counter in another group: the gateway answers 400.
    text = "# TYPE mlops_drift_share counter\nmlops_drift_share 1\n"
    resp = requests.put(f"{gateway.url}/metrics/job/other", data=text, auth=PUSHER, timeout=5)
    assert resp.status_code == 200, resp.text
    assert metrics.push("drift", [metrics.Sample("mlops_drift_share", 0.2)]) is False
    assert "push of mlops_drift" in caplog.text and "400" in caplog.text


def test_without_the_push_login_nothing_lands(gateway: Gateway, monkeypatch, caplog) -> None:
    """Anonymous or wrong-password pushes and deletes get 401 (push() returns False); the login pushes."""
    sample = [metrics.Sample("mlops_champion_version", 3)]
    monkeypatch.delenv("MLOPS_PUSHGATEWAY_USER")
    assert metrics.push("champion", sample, success=False) is False
    assert "401" in caplog.text
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_USER", PUSHER[0])
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_PASSWORD", PUSHER[1] + "x")
    assert metrics.push("champion", sample, success=False) is False
    assert gateway.series("mlops_champion_version") == {}
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_PASSWORD", PUSHER[1])
    assert metrics.push("champion", sample, success=False) is True
    group = f"{gateway.url}/metrics/job/mlops_champion"
    assert requests.delete(group, timeout=5).status_code == 401
    assert requests.put(group, data="mlops_champion_version 9\n", timeout=5).status_code == 401
    assert gateway.series("mlops_champion_version") == {(("job", "mlops_champion"),): 3}
    assert requests.delete(group, auth=PUSHER, timeout=5).status_code == 202
    assert gateway.series("mlops_champion_version") == {}


def test_a_gateway_that_never_answers_is_given_up_after_the_timeout(monkeypatch, caplog) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        assert metrics.push("drift", [metrics.Sample("mlops_drift_share", 0.2)]) is False
        elapsed = time.monotonic() - started
    assert metrics.PUSH_TIMEOUT_S <= elapsed < metrics.PUSH_TIMEOUT_S + 3, elapsed
    assert "timed out" in caplog.text


def test_pushed_metrics_survive_a_gateway_restart(gateway: Gateway) -> None:
    assert metrics.push("champion", [metrics.Sample("mlops_champion_version", 7)], success=False)
    gateway.stop()
    gateway.start()
    assert gateway.series("mlops_champion_version") == {(("job", "mlops_champion"),): 7}
    assert not gateway.series(metrics.LAST_SUCCESS)  # success=False pushes no timestamp
