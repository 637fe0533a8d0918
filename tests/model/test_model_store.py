"""The one safe model loader (mlops.model_store): a registered version carries the sha256 of its
model file (tag model_sha256, recorded by the registering account); evaluate, the drift check and
the prediction service's holder load it only as skops with the project's trusted types, and refuse
a version whose MLmodel or model file was tampered with after registration, naming version and file.

The models are of their own name (MLOPS_MODEL_NAME) in the shared world's real MLflow store, and
the tampering is done on the store's files, as a holder of the pipeline login could."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

MODEL = "model_store_model"
WEEKS = {"train_weeks": ["2013-W01", "2013-W02"], "holdout_week": "2013-W03"}


@pytest.fixture(scope="module")
def versions(world, shared_world: Path) -> dict:
    """A champion (good) and a second version (to be tampered with) of MODEL."""
    with pytest.MonkeyPatch.context() as mp:
        world.use_data_dir(shared_world, mp)
        mp.setenv("MLOPS_MODEL_NAME", MODEL)
        from mlops.promotion import deploy
        from mlops.train import train_model

        good = train_model(**WEEKS, max_rows=2000)
        assert deploy(good["version"])["deployed"] is True
        other = train_model(**WEEKS, max_rows=2500)
        assert other["version"] != good["version"]
        return {"good": good["version"], "other": other["version"]}


@pytest.fixture()
def env(world, shared_world: Path, monkeypatch: pytest.MonkeyPatch, versions: dict) -> dict:
    world.use_data_dir(shared_world, monkeypatch)
    monkeypatch.setenv("MLOPS_MODEL_NAME", MODEL)
    return versions


def _model_dir(version: str) -> Path:
    from mlflow.tracking import MlflowClient

    from mlops import config, tracking

    tracking.setup()
    uri = MlflowClient().get_model_version_download_uri(config.model_name(), version)
    path = Path(urlparse(uri).path)
    assert (path / "MLmodel").is_file(), uri
    return path


def test_registration_records_the_digest_and_loading_verifies_it(env: dict) -> None:
    from sklearn.pipeline import Pipeline

    from mlops import model_store
    from mlops.registry import version_info

    for version in env.values():
        tag = version_info(version)["tags"]["model_sha256"]
        model_file = _model_dir(version) / "model.skops"
        assert tag == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert isinstance(model_store.load_version(env["good"]), Pipeline)


def _tamperings(model_dir: Path, good_dir: Path) -> list[tuple[str, callable, str]]:
    """(name, change the files, what the error must say)."""

    def mlmodel(change):
        def apply() -> None:
            doc = yaml.safe_load((model_dir / "MLmodel").read_text())
            change(doc["flavors"])
            (model_dir / "MLmodel").write_text(yaml.safe_dump(doc))
        return apply

    def to_pickle(flavors: dict) -> None:
        flavors["sklearn"]["serialization_format"] = "pickle"
        flavors["sklearn"]["pickled_model"] = "model.pkl"
        # A pickle that would run code when loaded.
        (model_dir / "model.pkl").write_bytes(b"cos\nsystem\n(S'touch /tmp/pwned-by-model'\ntR.")

    def trust_more(flavors: dict) -> None:
        flavors["sklearn"]["skops_trusted_types"] = [*flavors["sklearn"].get("skops_trusted_types", []),
                                                     "builtins.eval", "os.system"]

    def swap_file() -> None:  # a valid skops model, but not the registered one
        shutil.copy(good_dir / "model.skops", model_dir / "model.skops")

    def corrupt_file() -> None:
        (model_dir / "model.skops").write_bytes(b"PK\x03\x04 not a model")

    return [("pickle format", mlmodel(to_pickle), "serialization_format is 'pickle'"),
            ("extra trusted types", mlmodel(trust_more), "asks to trust types the project does not"),
            ("other model file", swap_file, "differs from the model_sha256 tag"),
            ("corrupt model file", corrupt_file, "differs from the model_sha256 tag")]


def test_tampered_versions_are_refused_by_evaluate_drift_and_the_service(env: dict, tmp_path: Path) -> None:
    from mlops import registry
    from mlops.drift import detect_drift
    from mlops.errors import ModelIntegrityError
    from mlops.evaluate import evaluate_model
    from mlops_serving import metrics
    from mlops_serving.holder import Holder
    from mlops.config import load_schema

    bad, good = env["other"], env["good"]
    model_dir, good_dir = _model_dir(bad), _model_dir(good)
    backup = tmp_path / "backup"
    shutil.copytree(model_dir, backup)
    holder = Holder(load_schema(), poll_s=1)
    holder.check_once()
    assert holder.current is not None and holder.current.version == good
    try:
        for name, tamper, message in _tamperings(model_dir, good_dir):
            shutil.rmtree(model_dir)
            shutil.copytree(backup, model_dir)
            tamper()
            # evaluate (the candidate's scores)
            with pytest.raises(ModelIntegrityError, match=message) as raised:
                evaluate_model(bad)
            assert f"model version {bad}" in str(raised.value) and ("MLmodel" in str(raised.value)
                                                                    or "model.skops" in str(raised.value)), name
            # check_drift (the champion's scores on the batch) with the tampered version as champion
            registry.set_champion(bad, "test: tampered", expected_champion=good)
            try:
                with pytest.raises(ModelIntegrityError, match=message):
                    detect_drift("2013-W03")
                # the service's holder: refuses, counts it, keeps serving the good version
                failures = metrics.LOAD_FAILURES._value.get()
                holder.refused.clear()
                exported_before, exported_while_loading = metrics.REGISTRY_CHAMPION._value.get(), []
                load = holder._load
                holder._load = lambda v: (exported_while_loading.append(metrics.REGISTRY_CHAMPION._value.get()),
                                          load(v))
                try:
                    holder.check_once()
                finally:
                    del holder._load
                assert holder.current.version == good, name
                assert message.split(" ")[0] in holder.refused[bad], (name, holder.refused)
                assert metrics.LOAD_FAILURES._value.get() == failures + 1
                # A load in progress is no stale model; a refused one is (ServingStaleModel).
                assert exported_while_loading == [exported_before], name
                assert (metrics.MODEL_VERSION._value.get(), metrics.REGISTRY_CHAMPION._value.get()) \
                    == (float(good), float(bad)), name
            finally:
                registry.set_champion(good, "test: restore", expected_champion=bad)
        assert not Path("/tmp/pwned-by-model").exists()
    finally:
        shutil.rmtree(model_dir)
        shutil.copytree(backup, model_dir)
    # Restored files load again (the refusals were not cached).
    from mlops import model_store

    assert model_store.load_version(bad) is not None


def test_a_version_without_digest_is_refused(env: dict) -> None:
    from mlflow.tracking import MlflowClient

    from mlops import config, model_store, tracking
    from mlops.errors import ModelIntegrityError

    tracking.setup()
    client = MlflowClient()
    version = env["other"]
    digest = client.get_model_version(config.model_name(), version).tags["model_sha256"]
    client.delete_model_version_tag(config.model_name(), version, "model_sha256")
    try:
        model_store._MODELS.clear()
        with pytest.raises(ModelIntegrityError, match="no model_sha256 tag"):
            model_store.load_version(version)
    finally:
        client.set_model_version_tag(config.model_name(), version, "model_sha256", digest)
