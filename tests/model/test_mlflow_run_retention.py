"""MLflow run retention (maintenance_dag.prune_mlflow_runs): runs older than the setting go (soft
delete), except the runs of registered model versions and runs that have not ended; younger runs
stay. On a real MLflow store (SQLite), with the registry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

DAY_MS = 86400 * 1000


@pytest.fixture()
def client(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _run(client, experiment: str, age_days: float, end: bool = True) -> str:
    started = int(time.time() * 1000 - age_days * DAY_MS)
    run = client.create_run(experiment, start_time=started)
    if end:
        client.set_terminated(run.info.run_id, end_time=started + 60_000)
    return run.info.run_id


def test_old_runs_go_registered_and_unfinished_ones_stay(client, tmp_path: Path) -> None:
    from mlops.retention import prune_mlflow_runs

    experiment = client.create_experiment("flights", artifact_location=str(tmp_path / "artifacts"))
    other = client.create_experiment("other", artifact_location=str(tmp_path / "other"))
    old = [_run(client, experiment, 200), _run(client, experiment, 181)]
    champion_run, previous_run = _run(client, experiment, 365), _run(client, experiment, 250)
    running = _run(client, experiment, 300, end=False)
    young = [_run(client, experiment, 179), _run(client, experiment, 0)]
    elsewhere = _run(client, other, 400)
    # MLflow 3 keeps a logged model's files apart from its run's: the pruned runs' models go too.
    models = {run_id: client.create_logged_model(experiment, name="model", source_run_id=run_id).model_id
              for run_id in (*old, champion_run, young[0])}
    client.create_registered_model("flight_delay_classifier")
    for run_id, alias in ((champion_run, "champion"), (previous_run, "previous")):
        version = client.create_model_version("flight_delay_classifier", f"runs:/{run_id}/model",
                                              run_id=run_id, model_id=models.get(run_id))
        client.set_registered_model_alias("flight_delay_classifier", alias, version.version)
    # A version of another registered model keeps its run too.
    kept_by_other_model = _run(client, experiment, 300)
    client.create_registered_model("shadow")
    client.create_model_version("shadow", f"runs:/{kept_by_other_model}/model", run_id=kept_by_other_model)

    result = prune_mlflow_runs(client, [experiment], 180)

    assert sorted(result.deleted) == sorted(old)
    assert sorted(result.deleted_models) == sorted(models[r] for r in old)
    active_models = {m.model_id for m in client.search_logged_models([experiment])}
    assert active_models == {models[champion_run], models[young[0]]}
    assert result.kept_registered == 3 and result.kept_unfinished == 1
    active = {r.info.run_id for r in client.search_runs([experiment])}
    assert active == {champion_run, previous_run, running, kept_by_other_model, *young}
    # Soft delete: the run is still there, marked deleted (`mlflow gc` frees it).
    assert {client.get_run(r).info.lifecycle_stage for r in old} == {"deleted"}
    assert client.get_run(elsewhere).info.lifecycle_stage == "active"
    # A second pass finds nothing more to delete.
    assert prune_mlflow_runs(client, [experiment], 180).deleted == []


def test_a_non_positive_retention_is_refused(client) -> None:
    from mlops.retention import prune_mlflow_runs

    with pytest.raises(ValueError, match="positive"):
        prune_mlflow_runs(client, ["0"], 0)
