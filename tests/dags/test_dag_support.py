"""mlops_airflow lookups through Airflow's own resolution (env-defined Connections and Variables
are real Airflow secrets backends): MLflow URI precedence and clear errors on bad settings."""

from __future__ import annotations

import json
import os

import pytest

from testkit.dag_harness import TEST_ENV


@pytest.fixture()
def clean_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """configure_mlflow() writes MLFLOW_* into os.environ: restore them after the test."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
             "AIRFLOW_CONN_MLFLOW_DEFAULT")
    for name in names:
        # setenv records the value to restore (or its absence); the tests set their own values
        monkeypatch.setenv(name, os.environ.get(name, "unset"))
        if name != "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(name)
    return monkeypatch


def test_mlflow_uri_from_connection_then_environment_then_default(
    airflow_db, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    from mlops_airflow.config import configure_mlflow

    mp = clean_mlflow_env
    mp.delenv("MLFLOW_TRACKING_URI")  # no stack reference: the connection is taken as it is
    mp.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        json.dumps({"conn_type": "http", "host": "mlflow", "port": 5000, "login": "ml", "password": "pw-123"}),
    )
    assert configure_mlflow() == "http://mlflow:5000"
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "ml"

    mp.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        json.dumps({"conn_type": "generic", "extra": {"tracking_uri": "sqlite:////srv/m.db"}}),
    )
    mp.delenv("MLFLOW_TRACKING_URI")
    assert configure_mlflow() == "sqlite:////srv/m.db"

    mp.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT")
    mp.setenv("MLFLOW_TRACKING_URI", TEST_ENV["MLFLOW_TRACKING_URI"])
    assert configure_mlflow() == TEST_ENV["MLFLOW_TRACKING_URI"]

    mp.delenv("MLFLOW_TRACKING_URI")
    assert configure_mlflow() is None  # the mlops package default store applies


def test_connection_without_host_is_a_clear_error(airflow_db, clean_mlflow_env) -> None:
    from mlops_airflow.config import ConfigurationError, configure_mlflow

    clean_mlflow_env.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http"}))
    with pytest.raises(ConfigurationError, match="'mlflow_default' has neither a host"):
        configure_mlflow()


def test_threshold_variables(airflow_db, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_airflow.config import ConfigurationError, threshold_kwargs

    monkeypatch.delenv("AIRFLOW_VAR_MLOPS_DRIFT_SHARE", raising=False)
    assert threshold_kwargs("drift") == {}  # undefined: the package default applies
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_DEPLOY_MARGIN", "0.01")
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_MAX_NULL_SHARE", "0.2")
    assert threshold_kwargs("deploy") == {"deploy_margin": 0.01}
    assert threshold_kwargs("validate") == {"max_null_share": 0.2}
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_DRIFT_SHARE", "half")
    with pytest.raises(ConfigurationError, match="Variable 'mlops_drift_share' must be a number"):
        threshold_kwargs("drift")


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "-0.1", "1.5"])
def test_threshold_variables_refuse_nan_infinities_and_out_of_range(airflow_db, monkeypatch, raw: str) -> None:
    from mlops_airflow.config import ConfigurationError, threshold_kwargs

    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_MAX_NULL_SHARE", raw)
    with pytest.raises(ConfigurationError, match=f"threshold max_null_share: Airflow Variable "
                                                  f"mlops_max_null_share={float(raw)!r} is not a number in"):
        threshold_kwargs("validate")


def test_connection_redirected_away_from_the_stack_is_refused(airflow_db, clean_mlflow_env) -> None:
    """Issue 22 item 5: the workers' MLFLOW_TRACKING_URI is the stack's own server; a connection
    an Op pointed elsewhere fails the task before the login is put in the environment."""
    from airflow.sdk.exceptions import AirflowFailException

    from mlops_airflow.config import configure_mlflow

    mp = clean_mlflow_env
    mp.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(
        {"conn_type": "http", "host": "mlflow", "port": 5000, "login": "ml", "password": "pw-123",
         "extra": {"tracking_uri": "http://harvest.example:5000"}}))
    with pytest.raises(AirflowFailException, match="not at this stack's MLflow server"):
        configure_mlflow()
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # The same server spelled with its default port is the stack's own.
    mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(
        {"conn_type": "http", "host": "mlflow", "port": 5000, "login": "ml", "password": "pw-123"}))
    assert configure_mlflow() == "http://mlflow:5000"


def test_approval_switch_and_timeout_from_variable_then_environment(airflow_db, monkeypatch) -> None:
    """The gate is off by default; the Variable wins over the environment; a value that is not a
    boolean (or a timeout that is not a positive number of seconds) is an error, never "off"."""
    from datetime import timedelta

    from mlops_airflow.approval import approval_required, response_timeout
    from mlops_airflow.config import ConfigurationError

    for name in ("AIRFLOW_VAR_MLOPS_REQUIRE_APPROVAL", "MLOPS_REQUIRE_APPROVAL",
                 "AIRFLOW_VAR_MLOPS_APPROVAL_TIMEOUT", "MLOPS_APPROVAL_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    assert approval_required() is False
    assert response_timeout() == timedelta(days=1)
    monkeypatch.setenv("MLOPS_REQUIRE_APPROVAL", "true")
    monkeypatch.setenv("MLOPS_APPROVAL_TIMEOUT", "90")
    assert approval_required() is True and response_timeout() == timedelta(seconds=90)
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_REQUIRE_APPROVAL", "false")
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_APPROVAL_TIMEOUT", "5")
    assert approval_required() is False and response_timeout() == timedelta(seconds=5)
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_REQUIRE_APPROVAL", "maybe")
    with pytest.raises(ConfigurationError, match="'mlops_require_approval' must be true or false"):
        approval_required()
    for bad in ("nan", "-1", "0", "inf", "soon"):
        monkeypatch.setenv("AIRFLOW_VAR_MLOPS_APPROVAL_TIMEOUT", bad)
        with pytest.raises(ConfigurationError, match="'mlops_approval_timeout' must be a number"):
            response_timeout()


def test_a_task_body_runs_under_its_runs_data_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlops_airflow.dataset: the Param picks the data set for the block only; an unknown one fails
    the task at once; served monitoring keeps to the events of its run's data set."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from mlops import config
    from mlops_airflow.assets import ACCEPTED_BATCHES
    from mlops_airflow.dataset import dataset_param, run_dataset
    from mlops_airflow.monitoring import weeks_of_run

    monkeypatch.delenv("MLOPS_DATASET", raising=False)
    monkeypatch.delenv("MLOPS_MODEL_NAME", raising=False)
    assert dataset_param().value == "flights"
    with run_dataset({"params": {"dataset": "synthetic_drift"}}) as dataset:
        assert config.model_name() == dataset.model_name == "synthetic_drift_classifier"
    assert config.model_name() == "flight_delay_classifier"
    with pytest.raises(AirflowFailException, match="Param dataset: unknown data set 'nope'"):
        with run_dataset({"params": {"dataset": "nope"}}):
            pass
    monkeypatch.setenv("MLOPS_DATASET", "synthetic_drift")
    assert dataset_param().value == "synthetic_drift"
    monkeypatch.delenv("MLOPS_DATASET")

    def context(dataset: str, *extras: dict) -> dict:
        events = [SimpleNamespace(extra=e) for e in extras]
        return {"params": {"dataset": dataset, "week": None}, "triggering_asset_events": {ACCEPTED_BATCHES: events}}

    flights, synthetic = {"week": "2013-W05"}, {"week": "2013-W02", "dataset": "synthetic_drift"}
    assert weeks_of_run(context("flights", flights, synthetic)) == ["2013-W05"]
    assert weeks_of_run(context("synthetic_drift", flights, synthetic)) == ["2013-W02"]
    with pytest.raises(AirflowSkipException, match="another data set"):
        weeks_of_run(context("flights", synthetic))
    assert weeks_of_run(context("flights")) == []
