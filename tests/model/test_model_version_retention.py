"""Registered-model-version retention (maintenance_dag.prune_mlflow_runs, step 1): versions older
than the setting go (MLflow `delete_model_version`), except every version holding an alias and the
newest N of each model; then the run retention (step 2) prunes their runs and logged models. On a
real MLflow store (SQLite), with the registry; an unreachable MLflow server fails the pass."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

DAY_MS = 86400 * 1000
MODEL = "flight_delay_classifier"


@pytest.fixture()
def client(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _version(client, experiment: str, model: str, age_days: float = 365) -> tuple[str, str, str]:
    """A version of `model` from its own ended run (started `age_days` ago) and logged model:
    (version, run id, logged model id)."""
    started = int(time.time() * 1000 - age_days * DAY_MS)
    run_id = client.create_run(experiment, start_time=started).info.run_id
    client.set_terminated(run_id, end_time=started + 60_000)
    model_id = client.create_logged_model(experiment, name="model", source_run_id=run_id).model_id
    version = client.create_model_version(model, f"runs:/{run_id}/model", run_id=run_id, model_id=model_id)
    return str(version.version), run_id, model_id


def test_old_unaliased_versions_beyond_the_newest_go_then_their_runs(client, tmp_path: Path) -> None:
    from mlops.retention import prune_mlflow_runs, prune_model_versions

    experiment = client.create_experiment("flights", artifact_location=str(tmp_path / "artifacts"))
    for name in (MODEL, "synthetic_drift_classifier", "shadow"):
        client.create_registered_model(name)
    old = {}
    for _ in range(8):
        version, run_id, model_id = _version(client, experiment, MODEL)
        old[version] = (run_id, model_id)
    time.sleep(0.05)
    cutoff_s = time.time()  # versions 1-8 were created before it, 9-14 after
    time.sleep(0.05)
    young = {}
    for _ in range(6):
        version, run_id, model_id = _version(client, experiment, MODEL)
        young[version] = (run_id, model_id)
    # Aliases on old versions, whatever their age: the champion, `previous` and any other alias.
    for alias, version in (("champion", "2"), ("previous", "5"), ("audit", "1")):
        client.set_registered_model_alias(MODEL, alias, version)
    synthetic = [_version(client, experiment, "synthetic_drift_classifier")[0] for _ in range(2)]
    shadow_version, shadow_run, _ = _version(client, experiment, "shadow")  # not a model of the list
    now = cutoff_s + 180 * 86400  # 180 days later: versions 1-8 are older than 180 days, 9-14 younger

    versions = prune_model_versions(client, [MODEL, "synthetic_drift_classifier", "never_registered"], 180,
                                    keep_newest=3, now=now)

    gone = ["3", "4", "6", "7", "8"]
    assert versions.deleted == [f"{MODEL}/{v}" for v in gone]
    assert (versions.kept_aliased, versions.kept_newest, versions.kept_young) == (3, 3 + 2, 3)
    left = {str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")}
    assert left == {"1", "2", "5", *young}
    aliases = client.get_registered_model(MODEL).aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "2", "previous": "5", "audit": "1"}
    assert {str(v.version) for v in client.search_model_versions("name = 'synthetic_drift_classifier'")} \
        == set(synthetic)
    assert [str(v.version) for v in client.search_model_versions("name = 'shadow'")] == [shadow_version]

    # Step 2, the run retention: the deleted versions' runs and logged models are no longer kept.
    runs = prune_mlflow_runs(client, [experiment], 180)
    assert sorted(runs.deleted) == sorted(old[v][0] for v in gone)
    assert sorted(runs.deleted_models) == sorted(old[v][1] for v in gone)
    for version in ("1", "2", "5"):
        assert client.get_run(old[version][0]).info.lifecycle_stage == "active"
    assert client.get_run(shadow_run).info.lifecycle_stage == "active"
    # A second pass finds nothing more.
    again = prune_model_versions(client, [MODEL], 180, keep_newest=3, now=now)
    assert again.deleted == [] and prune_mlflow_runs(client, [experiment], 180).deleted == []


def test_the_newest_versions_stay_however_old(client, tmp_path: Path) -> None:
    from mlops.retention import prune_model_versions

    experiment = client.create_experiment("flights", artifact_location=str(tmp_path / "artifacts"))
    client.create_registered_model(MODEL)
    made = [_version(client, experiment, MODEL)[0] for _ in range(4)]
    result = prune_model_versions(client, [MODEL], 1, keep_newest=10, now=time.time() + 30 * 86400)
    assert result.deleted == [] and result.kept_newest == 4
    assert {str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")} == set(made)
    result = prune_model_versions(client, [MODEL], 1, keep_newest=1, now=time.time() + 30 * 86400)
    assert result.deleted == [f"{MODEL}/{v}" for v in made[:-1]]


def test_bad_settings_are_refused() -> None:
    from mlops.retention import prune_model_versions

    with pytest.raises(ValueError, match="positive"):
        prune_model_versions(object(), [MODEL], 0, keep_newest=10)  # refused before any MLflow call
    with pytest.raises(ValueError, match="at least 1"):
        prune_model_versions(object(), [MODEL], 180, keep_newest=0)


def test_an_mlflow_outage_fails_the_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing answers on the port: the search raises (never read as "no version, no alias")."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from mlops.retention import prune_model_versions

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    down = MlflowClient(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9")
    with pytest.raises(MlflowException):
        prune_model_versions(down, [MODEL], 180, keep_newest=10)


def test_keep_setting_and_the_stack_resources(client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The maintenance task's count of kept versions (conf, else .env, else 10) and the data sets'
    experiments and models it works on (every data set of configs/; experiments not made yet left
    out)."""
    from mlops.dataset import known_names, resolve
    from mlops_airflow.maintenance import keep_model_versions, stack_mlflow_resources

    monkeypatch.delenv("MLFLOW_KEEP_MODEL_VERSIONS", raising=False)
    assert keep_model_versions({}) == 10
    monkeypatch.setenv("MLFLOW_KEEP_MODEL_VERSIONS", "4")
    assert keep_model_versions({}) == 4
    assert keep_model_versions({"mlflow_keep_model_versions": 2}) == 2
    for bad in ("0", "two", "1.5"):
        monkeypatch.setenv("MLFLOW_KEEP_MODEL_VERSIONS", bad)
        with pytest.raises(ValueError, match="MLFLOW_KEEP_MODEL_VERSIONS"):
            keep_model_versions({})

    for var in ("MLOPS_MODEL_NAME", "MLOPS_EXPERIMENT", "MLOPS_SCHEMA", "MLOPS_DATASET"):
        monkeypatch.delenv(var, raising=False)
    datasets = [resolve(name) for name in known_names()]
    assert len(datasets) >= 2, "configs/ holds the flights and at least one other data set"
    made = client.create_experiment(datasets[1].experiment_name, artifact_location=str(tmp_path / "a"))
    experiments, models = stack_mlflow_resources(client)
    assert experiments == [made]
    assert models == list(dict.fromkeys(d.model_name for d in datasets))
    assert models[0] == resolve("flights").model_name
