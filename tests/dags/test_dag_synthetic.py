"""model_retraining_dag (dag.test, real MLflow registry) on the synthetic_drift data set, chosen by
the run's Param ``dataset`` (no MLOPS_SCHEMA: the flights stay the process's default): the DAG
trains the data set's own recipes on its features in its own folder and registers its own model,
and deploys the candidate that is best on the validation week, here across the abrupt drift of
2013-W14 (weeks W13-W16: validation W15, holdout W16)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from testkit.dag_harness import REPO, mapped, ml_env, run_dag, task_states, xcom

FLIGHTS_MODEL = "synthetic_dag_flights_model"
SCHEMA = REPO / "configs" / "synthetic_drift.yaml"


@pytest.fixture(scope="module")
def synthetic_run(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory):
    import os

    from mlops.dataset import resolve, use_dataset

    root = tmp_path_factory.mktemp("synthetic")
    with ml_env(root, FLIGHTS_MODEL) as data, pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLOPS_SCHEMA", raising=False)
        mp.delenv("MLOPS_RECIPES", raising=False)
        mp.delenv("MLOPS_DATASET", raising=False)
        dataset = resolve("synthetic_drift")
        client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
        if client.get_experiment_by_name(dataset.experiment_name) is None:
            client.create_experiment(dataset.experiment_name, artifact_location=(root / "artifacts").as_uri())
        from mlops.data import replay
        from mlops.preprocess import build_training_table

        with use_dataset(dataset):
            replay(from_week="2013-W13", until_week="2013-W16")
            build_training_table(accepted=dataset.data_dir / "landing")
        dag_run = run_dag("model_retraining_dag", conf={"dataset": "synthetic_drift"})
        # What the run left in the flights' folder (before any check here touches it).
        yield dag_run, dataset, sorted(str(p.relative_to(data)) for p in data.rglob("*")
                                       if "datasets" not in p.relative_to(data).parts)


def test_retraining_dag_runs_on_the_synthetic_data_set(synthetic_run) -> None:
    from mlops import tracking
    from mlops.dataset import use_dataset
    from mlops.registry import get_champion

    dag_run, dataset, in_flights_folder = synthetic_run
    recipes = list(dataset.recipes)
    assert recipes == ["weekly", "recent_4", "recent_1", "recency_weighted"]
    assert dag_run.state == "success", task_states(dag_run)
    states = task_states(dag_run)
    assert states["deploy_new_model"] == "success" and states["rollback_model"] == "skipped"
    # The DAG maps over every data set's recipes: the flights' own are skipped here.
    fan = mapped(dag_run, "retrain_model")
    trained = [value for state, value in (fan[i] for i in sorted(fan)) if state == "success"]
    assert sorted(t["recipe"] for t in trained) == sorted(recipes)
    assert sum(state == "skipped" for state, _ in fan.values()) == len(fan) - len(recipes)
    client = tracking.setup()
    assert {client.get_run(t["run_id"]).data.tags["schema"] for t in trained} == {SCHEMA.name}
    assert all(t["holdout_week"] == "2013-W16" for t in trained)
    evaluation = xcom(dag_run, "evaluate_new_model")
    experiment = client.get_experiment(client.get_run(trained[0]["run_id"]).info.experiment_id)
    assert experiment.name == "synthetic_drift_classifier"
    scores = {c["recipe"]: c["validation"]["metrics"]["roc_auc"] for c in trained}
    assert scores[evaluation["recipe"]] == max(scores.values()), scores
    # Only a recipe that learnt from the drift week alone scores well on W15.
    assert max(scores.values()) >= 0.95 and min(scores.values()) < 0.9, scores
    assert evaluation["metrics"]["roc_auc"] >= 0.95
    with use_dataset("synthetic_drift"):
        assert get_champion()["version"] == evaluation["version"]
    # Nothing of it in the flights' folder or registered model.
    assert in_flights_folder == []
    assert client.search_model_versions(f"name='{FLIGHTS_MODEL}'") == []
