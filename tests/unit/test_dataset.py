"""mlops.dataset: a data set resolved from a name or a file; the flights keep the process
settings' locations; another data set gets a folder, experiment and model of its own; the active
data set is a context variable (per call, per thread), never a process-wide setting; bad names and
files are clear errors naming them."""

from __future__ import annotations

import contextvars
import os
import threading
from pathlib import Path

import pytest
import yaml

from mlops import config
from mlops.dataset import DatasetError, current, known_names, resolve, use_dataset

REPO = Path(__file__).resolve().parents[2]
ENV = ("MLOPS_SCHEMA", "MLOPS_MODEL_NAME", "MLOPS_EXPERIMENT", "MLOPS_RECIPES", "MLOPS_DATASET",
       "MLOPS_DRIFT_SHARE")


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_the_flights_keep_the_locations_of_the_process_settings(clean_env: Path) -> None:
    flights = resolve("flights")
    assert flights.schema_file == REPO / "configs" / "flights.yaml"
    assert flights.data_dir == clean_env.resolve()
    assert (flights.model_name, flights.experiment_name) == ("flight_delay_classifier", "flight_delay_classifier")
    assert flights.cadence == "weekly" and flights.is_default
    assert resolve(None) == flights == current()
    # Inside use_dataset the accessors give what they give without it.
    outside = (config.schema_path(), config.data_dir(), config.model_name(), config.experiment_name(),
               config.recipes_path(), config.threshold("drift_share"))
    with use_dataset("flights"):
        assert (config.schema_path(), config.data_dir(), config.model_name(), config.experiment_name(),
                config.recipes_path(), config.threshold("drift_share")) == outside


def test_the_old_environment_variables_still_set_the_flights(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    recipes = tmp_path / "recipes.yaml"
    recipes.write_text((REPO / "configs" / "recipes.yaml").read_text())
    monkeypatch.setenv("MLOPS_SCHEMA", str(REPO / "configs" / "synthetic_drift.yaml"))
    monkeypatch.setenv("MLOPS_MODEL_NAME", "m1")
    monkeypatch.setenv("MLOPS_EXPERIMENT", "e1")
    monkeypatch.setenv("MLOPS_RECIPES", str(recipes))
    with use_dataset(None) as flights:
        assert flights.name == "flights" and flights.schema_file.name == "synthetic_drift.yaml"
        assert (config.model_name(), config.experiment_name()) == ("m1", "e1")
        assert config.recipes_path() == recipes.resolve()
        assert config.data_dir() == clean_env.resolve()
    # Only the flights: another data set ignores them.
    other = resolve("synthetic_drift")
    assert (other.model_name, other.recipes_file) == ("synthetic_drift_classifier", None)


def test_another_data_set_has_its_own_folder_experiment_model_and_recipes(clean_env: Path) -> None:
    synthetic = resolve("synthetic_drift")
    assert synthetic.data_dir == clean_env.resolve() / "datasets" / "synthetic_drift"
    assert synthetic.model_name == synthetic.experiment_name == "synthetic_drift_classifier"
    assert not synthetic.is_default and synthetic.schema.name == "synthetic_drift"
    assert list(synthetic.recipes) == ["weekly", "recent_4", "recent_1", "recency_weighted"]
    with use_dataset("synthetic_drift"):
        assert config.schema_path() == REPO / "configs" / "synthetic_drift.yaml"
        assert config.data_dir() == synthetic.data_dir
        assert config.reports_dir() == synthetic.data_dir / "reports"
        assert config.model_name() == "synthetic_drift_classifier"
        assert config.recipes_path() == REPO / "configs" / "synthetic_drift.yaml"
        # One local MLflow store beside the flights' folder, never inside a data folder.
        assert config.local_store_dir() == clean_env.resolve().with_name("data-mlflow")
    assert config.model_name() == "flight_delay_classifier"  # reset on leaving the block
    assert known_names() == ["flights", "synthetic_drift"]


def test_a_configuration_file_by_path_with_its_own_threshold_defaults(tmp_path: Path, clean_env: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    raw = yaml.safe_load((REPO / "configs" / "synthetic_drift.yaml").read_text())
    raw.pop("model_name")
    raw["thresholds"] = {"drift_share": 0.5}
    path = tmp_path / "loans.yaml"
    path.write_text(yaml.safe_dump(raw))
    with use_dataset(str(path)) as loans:
        assert loans.name == "loans" and loans.model_name == "loans"
        assert config.data_dir() == clean_env.resolve() / "datasets" / "loans"
        assert config.threshold("drift_share") == 0.5
        assert config.threshold("auc_drop") == config.THRESHOLDS["auc_drop"].default
        monkeypatch.setenv("MLOPS_DRIFT_SHARE", "0.4")  # the environment wins over the file
        assert config.threshold("drift_share") == 0.4
    # The repository's own file by path is that data set.
    assert resolve(str(REPO / "configs" / "synthetic_drift.yaml")) == resolve("synthetic_drift")


def test_the_active_data_set_belongs_to_its_context_not_to_the_process() -> None:
    seen: dict[str, str] = {}

    def other_thread() -> None:
        seen["thread"] = config.model_name()

    with use_dataset("synthetic_drift"):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        seen["copied"] = contextvars.copy_context().run(config.model_name)
        assert "MLOPS_MODEL_NAME" not in os.environ
    assert seen == {"thread": "flight_delay_classifier", "copied": "synthetic_drift_classifier"}


def test_mlops_dataset_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_DATASET", "synthetic_drift")
    assert current().name == "synthetic_drift"
    assert resolve("flights").name == "flights"


@pytest.mark.parametrize(("spec", "message"), [
    ("nope", "unknown data set 'nope'.*configs/nope.yaml.*known: flights, synthetic_drift"),
    ("a b", "not a name"),
    ("/no/such/file.yaml", "data set '/no/such/file.yaml': no such file"),
    ("recipes", "is no data set configuration"),
])
def test_bad_names_and_files_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        resolve(spec)


def test_bad_configuration_files_name_the_file(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "configs" / "synthetic_drift.yaml").read_text())
    for change, message in (({"cadence": "daily"}, "cadence 'daily' unsupported"),
                            ({"thresholds": {"nope": 1}}, r"unknown thresholds \['nope'\]"),
                            ({"thresholds": {"drift_share": "x"}}, "drift_share.*not a number"),
                            ({"model_name": "a b"}, "model_name 'a b' is not a plain name")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**raw, **change}))
        with pytest.raises((DatasetError, config.ThresholdError), match=message) as err:
            resolve(str(path))
        assert str(path) in str(err.value)
    other = tmp_path / "flights.yaml"
    other.write_text(yaml.safe_dump(raw))
    with pytest.raises(DatasetError, match="the default data set's"):
        resolve(str(other))
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(DatasetError, match="not a mapping"):
        resolve(str(tmp_path / "list.yaml"))
