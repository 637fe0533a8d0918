"""mlops.metrics against a real Prometheus Pushgateway (Debian's prometheus-pushgateway) with the
stacks' basic-auth users (stack/grants.py): grouping keys, PUT/POST semantics, labels, the push
login, and pushes that fail (no or a wrong login, HTTP error, a gateway that never answers)
returning False instead of raising. The gateway keeps what was pushed across a restart."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mlops import metrics
from testkit.pushgateway import PUSHER, Gateway, serving

@pytest.fixture()
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    with serving(tmp_path / "pushgateway.data", monkeypatch) as gw:
        yield gw


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
